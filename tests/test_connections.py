"""test-connections: reachability, versions, TLS, latency and what would break later steps."""

from __future__ import annotations

import http.server
import os
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from conftest import APP_PASSWORD, STACK_PROJECT, STACK_SECRET, error_line, self_signed_certificate

from supamove.cli import main
from supamove.config import Settings
from supamove.sandbox import fixtures
from supamove.sandbox.fixtures import APP_ROLE
from supamove.sandbox.pgserver import free_port
from supamove.sandbox.stackauth import StackAuthSandbox
from supamove.usermap import UserMapping


def test_all_usable(cli, dbs, stack_auth) -> None:
    result = cli("test-connections")
    assert result.exit_code == 0, result.output
    assert "All configured endpoints are usable." in result.output
    with dbs.source() as conn:  # whichever PostgreSQL the tests run on
        assert str(conn.execute("SHOW server_version").fetchone()[0]) in result.output
    assert "ms" in result.output  # latency
    assert "the source connection is not encrypted" in result.output


def test_each_endpoint_names_what_it_checked_never_its_password(cli, dbs, stack_auth,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the version and latency were shown: a .env naming the staging database or Stack Auth project
    # passed unnoticed. Host, port, database and user, the API URL and project id, in the table and the JSON.
    source = f"{fixtures.APP_ROLE}@127.0.0.1:{dbs.source_server.port}/{dbs.source_db}"
    target = f"postgres@127.0.0.1:{dbs.target_server.port}/{dbs.target_db}"
    result = cli("test-connections")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line.split("│")[6].strip() for line in result.stdout.splitlines()
            if line.startswith("│")}
    assert rows == {"source (SUPABASE_DB_URL)": source, "target (DATABASE_URL)": target,
                    f"Stack Auth ({stack_auth.url})": f"project {STACK_PROJECT}"}
    report = orjson.loads(cli("test-connections", "--json").stdout)
    assert [{k: e.get(k) for k in ("host", "port", "database", "user", "apiUrl", "projectId")}
            for e in report["endpoints"]] == [
        {"host": "127.0.0.1", "port": dbs.source_server.port, "database": dbs.source_db, "user": fixtures.APP_ROLE,
         "apiUrl": None, "projectId": None},
        {"host": "127.0.0.1", "port": dbs.target_server.port, "database": dbs.target_db, "user": "postgres",
         "apiUrl": None, "projectId": None},
        {"host": None, "port": None, "database": None, "user": None, "apiUrl": stack_auth.url,
         "projectId": STACK_PROJECT}]
    port = free_port()
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{APP_PASSWORD}@127.0.0.1:{port}/staging?sslmode=disable")
    unreachable = cli("test-connections")  # what the URL names, when nothing answered
    assert unreachable.exit_code == 1
    assert f"│ app@127.0.0.1:{port}/staging " in unreachable.stdout
    assert APP_PASSWORD not in unreachable.output and STACK_SECRET not in unreachable.output


def test_stack_auth_out_of_reach_is_named_with_the_reason(cli, dbs, stack_auth, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # It said only "ConnectError", and a CA file that could not be read ended in "unexpected FileNotFoundError".
    monkeypatch.setenv("STACK_AUTH_API_URL", "http://127.0.0.1:1")
    result = cli("test-connections")
    assert result.exit_code != 0
    assert ("cannot reach Stack Auth: [Errno 111] Connection refused: check STACK_AUTH_API_URL (for https, the "
            "server's certificate and SSL_CERT_FILE)") in " ".join(result.output.split())
    monkeypatch.setenv("STACK_AUTH_API_URL", f"{stack_auth.url}/api/v1")  # the API's path copied along
    result = cli("test-connections")
    assert result.exit_code == 1
    assert (f"error: Stack Auth ({stack_auth.url}/api/v1): Stack Auth has no GET /api/v1/api/v1/users (404): check "
            "STACK_AUTH_API_URL points at Stack Auth's API (without /api/v1)") in " ".join(result.output.split())
    monkeypatch.setenv("STACK_AUTH_API_URL", stack_auth.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))
    result = cli("test-connections")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "cannot reach Stack Auth: [Errno 2] No such file or directory" in " ".join(result.output.split())


def test_a_mapping_whose_users_are_not_in_this_stack_auth_fails_it(cli, dbs, stack_auth, data_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Another Stack Auth holding the same project (a staging copy) passed: migrate-users stopped only once it
    had listed every user, and `migrate` once its export had begun."""
    data_dir.mkdir()
    mapping = UserMapping.fresh(data_dir / "user-mapping.json", STACK_PROJECT)
    users = [stack_auth.create_user({"primary_email": f"u{n}@example.com"})["id"] for n in range(12)]
    for n, stack_id in enumerate(users):
        mapping.add(str(uuid.uuid4()), stack_id, f"u{n}@example.com")
    mapping.save()
    for stack_id in users[:11]:  # all but the last deleted there: it is among those looked up
        stack_auth.delete_user(stack_id)
    passed = cli("test-connections")
    assert passed.exit_code == 0, passed.output
    with StackAuthSandbox(STACK_PROJECT, STACK_SECRET) as staging:
        monkeypatch.setenv("STACK_AUTH_API_URL", staging.url)
        for command in (["test-connections"], ["migrate", "--disable-fk"]):
            result = cli(*command)
            assert result.exit_code != 0, result.output
            assert (f"error: Stack Auth ({staging.url}): none of 10 of the 12 Stack Auth users {mapping.path} names "
                    "is in this Stack Auth: it is not the Stack Auth they were created in, or they were deleted there: "
                    "point STACK_AUTH_API_URL at the Stack Auth the users were created in (if they were deleted "
                    "there, `supamove map-users --forget-missing` drops them from the mapping)") in " ".join(result.output.split())
        assert staging.users == {} and not (data_dir / "metadata.json").exists()  # nothing exported, no one created
    with StackAuthSandbox("another-project", STACK_SECRET) as other:
        monkeypatch.setenv("STACK_AUTH_API_URL", other.url)
        monkeypatch.setenv("STACK_AUTH_PROJECT_ID", "another-project")
        result = cli("test-connections")
    assert result.exit_code == 1
    assert (f"maps Supabase users to users of Stack Auth project {STACK_PROJECT}, and STACK_AUTH_PROJECT_ID is "
            "another-project") in " ".join(result.output.split())


class _NoUsers(http.server.BaseHTTPRequestHandler):
    """Stack Auth's user list, empty: enough for test-connections to call it usable."""

    body = b'{"items": [], "is_paginated": true, "pagination": {"next_cursor": null}}'
    content_type = "application/json"

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self.send_response(200)
        self.send_header("content-type", self.content_type)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


class _Dashboard(_NoUsers):
    """A web application answering every path with its page, as Stack Auth's dashboard does."""

    body = b"<!DOCTYPE html><html><body>Stack Auth</body></html>"
    content_type = "text/html; charset=utf-8"


def test_a_stack_auth_url_that_is_the_dashboard_is_named_so(cli, dbs, stack_auth,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's address (app.stack-auth.com) in place of the API's answers every path with its page:
    test-connections called it usable, and migrate-users failed on its first answer."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("STACK_AUTH_API_URL", url)
    try:
        result = cli("test-connections")
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1, result.output
    assert (f"error: Stack Auth ({url}): GET /api/v1/users answered 200 with no user list (text/html): check "
            "STACK_AUTH_API_URL points at Stack Auth's API (https://api.stack-auth.com for the hosted one), not its "
            "dashboard") in " ".join(result.output.split())


@pytest.fixture
def self_signed_stack_auth(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An https server with a certificate no public CA signed (a self-hosted Stack Auth's); its CA file."""
    cert, key = self_signed_certificate(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoUsers)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def test_a_stack_auth_certificate_the_machine_does_not_trust_is_named_and_its_ca_file_accepted(
        cli, dbs, stack_auth, self_signed_stack_auth: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, ca = self_signed_stack_auth
    monkeypatch.setenv("STACK_AUTH_API_URL", url)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    result = cli("test-connections")
    said = " ".join(result.output.split())
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert "cannot reach Stack Auth: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed" in said, said
    assert "check STACK_AUTH_API_URL (for https, the server's certificate and SSL_CERT_FILE)" in said, said
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the fix the message names
    trusted = cli("test-connections")
    assert trusted.exit_code == 0, trusted.output
    assert "cannot reach Stack Auth" not in trusted.output


def test_query_values_reach_libpq_and_pg_dump_as_written(cli, dbs, data_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A space was written back as `+`, which libpq reads as a `+` (options=-c%20... failed every command with
    'unrecognized configuration parameter "+search_path"'), and pg_dump got a `+` of the password as a space."""
    role = f"plus_{os.getpid()}_{dbs.source_db}"[:60]
    with dbs.source() as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN BYPASSRLS PASSWORD \'pa+ss w0rd\' IN ROLE {fixtures.APP_ROLE}')
    server = dbs.source_server
    monkeypatch.setenv("SUPABASE_DB_URL", f"postgresql://{role}@127.0.0.1:{server.port}/{dbs.source_db}?sslmode="
                                          "disable&password=pa+ss%20w0rd&options=-c%20search_path%3Dpublic")
    schema = cli("schema", "--dry-run")  # psycopg's connection, then pg_dump's
    assert schema.exit_code == 0 and "Schema: what is not kept as it is" in schema.output, schema.output
    export = cli("export", "--dry-run", "--tables", "public.organizations")
    assert export.exit_code == 0, export.output
    assert "pa+ss" not in schema.output + export.output  # the password is still never shown


def test_wrong_password_names_the_setting(cli, dbs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_DB_URL", dbs.source_url.replace("s3cret-app-pw-!x", "wrong-pw"))
    result = cli("test-connections")
    assert result.exit_code != 0
    assert "refused the password (fix: check the user and password in SUPABASE_DB_URL)" in result.output
    assert "wrong-pw" not in result.output


def test_a_source_through_the_transaction_pooler_is_refused_by_every_command_that_reads_it(
        cli, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Port 6543 keeps neither the export's snapshot nor its session settings: an export through it could
    mix moments. Refused before anything is read or written; a target on that port is only warned about."""
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://postgres:pw@db.abc.supabase.co:6543/postgres")
    for command in (("test-connections",), ("migrate",)):  # migrate's first step is test-connections
        result = cli(*command)
        assert result.exit_code == 1, (command, result.output)
        assert "source (SUPABASE_DB_URL): SUPABASE_DB_URL uses port 6543, Supabase's transaction pooler" in result.output
        assert "fix: set SUPABASE_DB_URL to the direct connection string" in result.output
    for command in (("export",), ("export", "--dry-run"), ("verify",), ("schema",)):
        result = cli(*command)
        assert result.exit_code == 2, (command, result.output)
        assert "SUPABASE_DB_URL uses port 6543" in result.output and "port 5432" in result.output, command
        assert "Traceback" not in result.output
    assert {p.name for p in data_dir.iterdir()} <= {"supamove.lock"}  # nothing exported, nothing planned
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://postgres:pw@127.0.0.1:5432/postgres?sslmode=disable")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@127.0.0.1:6543/app?sslmode=disable")
    result = cli("test-connections")
    assert "warning: target (DATABASE_URL): port 6543 is Supabase's transaction pooler" in result.output


def test_a_host_with_no_network_route_names_the_ipv6_only_direct_host_as_the_likely_cause(
        cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Supabase's direct host may have an IPv6 address only: from a machine without IPv6 the connection fails
    with "Network is unreachable", shown as libpq's text with "check SUPABASE_DB_URL" alone."""
    # The broadcast address: the kernel has no TCP route to it, as a machine without IPv6 has none to an IPv6 host.
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://postgres:pw@255.255.255.255:5432/postgres?sslmode=disable")
    result = cli("export", "--dry-run")
    assert result.exit_code == 3, result.output
    assert error_line(result.output) == (
        "Error: no network route from this machine to 255.255.255.255:5432 (SUPABASE_DB_URL) (fix: check this "
        "machine's network route to 255.255.255.255; Supabase's direct host (db.<project-ref>.supabase.co) may have "
        "an IPv6 address only: from a machine without IPv6, use the session pooler's connection string (port 5432 on "
        "the pooler host): Supabase dashboard > Connect)")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@255.255.255.255:5432/app?sslmode=disable")
    result = cli("import", "--dry-run")  # the self-hosted target: the route alone
    assert result.exit_code == 4, result.output
    assert error_line(result.output) == ("Error: no network route from this machine to 255.255.255.255:5432 "
                                         "(DATABASE_URL) (fix: check this machine's network route to 255.255.255.255)")


@contextmanager
def _listening(serve: Callable[[socket.socket], None] | None = None) -> Iterator[int]:
    """A port on 127.0.0.1 that takes connections: each answered by `serve` on a thread, or never answered."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        if serve is not None:
            threading.Thread(target=serve, args=(listener,), daemon=True).start()
        yield listener.getsockname()[1]


def _first_error(cli, monkeypatch: pytest.MonkeyPatch, setting: str, url: str, *command: str) -> tuple[int, str]:
    """The exit code and error line of `command` run with `setting` set to `url`."""
    monkeypatch.setenv(setting, url)
    result = cli(*command)
    return result.exit_code, error_line(result.output)


def test_a_server_that_never_answers_is_named_with_the_firewall_as_the_likely_cause(
        cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A firewall dropping the packets, or Supabase's network restrictions, leave the connection unanswered until
    connect_timeout: shown as libpq's "timeout expired" with "check SUPABASE_DB_URL" alone."""
    with _listening() as port:
        failed = _first_error(cli, monkeypatch, "SUPABASE_DB_URL", f"postgresql://postgres:pw@127.0.0.1:{port}/postgres"
                              "?sslmode=disable&connect_timeout=2", "export", "--dry-run")
    assert failed == (3, f"Error: no answer from 127.0.0.1:{port} (SUPABASE_DB_URL) within its connect_timeout (fix: "
                         f"check that a firewall lets this machine reach 127.0.0.1:{port} and that the project's network "
                         "restrictions admit its address (Supabase dashboard > Database))")


def _refusing(message: bytes, sqlstate: bytes = b"28000") -> Callable[[socket.socket], None]:
    """A PostgreSQL server as far as its first answer: each startup packet refused with `message`."""
    def serve(listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # the test closed it
                return
            with conn:
                size = int.from_bytes(conn.recv(4), "big")
                conn.recv(size - 4)
                fields = b"SFATAL\0VFATAL\0C" + sqlstate + b"\0M" + message + b"\0\0"
                conn.sendall(b"E" + (len(fields) + 4).to_bytes(4, "big") + fields)
    return serve


def test_a_server_whose_pg_hba_conf_admits_no_such_connection_names_the_line_to_add(
        cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A self-hosted target's pg_hba.conf without a line for this machine: libpq's text with "check DATABASE_URL"."""
    refusal = b'no pg_hba.conf entry for host "127.0.0.1", user "app", database "app", no encryption'
    with _listening(_refusing(refusal)) as port:
        url = f"postgresql://app:pw@127.0.0.1:{port}/app?sslmode=disable&gssencmode=disable"
        failed = _first_error(cli, monkeypatch, "DATABASE_URL", url, "import", "--dry-run")
    assert failed == (4, f"Error: the target database (postgresql://app:***@127.0.0.1:{port}/app?sslmode=disable&"
                         f"gssencmode=disable) admits no connection from this machine as this user: connection failed: "
                         f'connection to server at "127.0.0.1", port {port} failed: FATAL:  {refusal.decode()} (fix: add '
                         "a line for this machine's address, the user and the database to the server's pg_hba.conf (and "
                         "reload it), or connect as it allows (a hostssl line needs TLS: sslmode=require in "
                         "DATABASE_URL))")


def test_a_server_out_of_connections_names_the_sessions_and_the_jobs_to_cut(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """max_connections reached (the application's sessions during the freeze, or --jobs more than it has left):
    libpq's text with "check SUPABASE_DB_URL", which was not at fault."""
    with _listening(_refusing(b"sorry, too many clients already", b"53300")) as port:
        failed = _first_error(cli, monkeypatch, "SUPABASE_DB_URL", f"postgresql://postgres:pw@127.0.0.1:{port}/postgres"
                              "?sslmode=disable&gssencmode=disable", "export", "--dry-run")
    assert failed == (3, f"Error: the source database (postgresql://postgres:***@127.0.0.1:{port}/postgres?sslmode="
                         f"disable&gssencmode=disable) has no connection left for supamove: connection failed: "
                         f'connection to server at "127.0.0.1", port {port} failed: FATAL:  sorry, too many clients '
                         "already (fix: end other sessions on it (the application's, once it is frozen) or run with "
                         "fewer --jobs (each job holds a connection), then run the command again)")


def _in_query(server, db: str, user: str, password: str | None = None) -> str:
    """The database's URL with an empty host part, as libpq reads it: host, port and user in the query."""
    secret = f"&password={password}" if password else ""
    return f"postgresql:///{db}?host=127.0.0.1&port={server.port}&user={user}{secret}&sslmode=disable"


def test_a_url_with_an_empty_host_part_connects_as_libpq_reads_it(cli, dbs, stack_auth,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`postgresql:///db?host=...` (or a Unix socket's `postgresql:///db`) is a valid libpq URL: rebuilt
    without its `//`, libpq took it for key=value settings and every command ended in 'unexpected
    ProgrammingError'."""
    monkeypatch.setenv("SUPABASE_DB_URL", _in_query(dbs.source_server, dbs.source_db, APP_ROLE, "s3cret-app-pw-!x"))
    monkeypatch.setenv("DATABASE_URL", _in_query(dbs.target_server, dbs.target_db, "postgres"))
    for command in (("test-connections",), ("export", "--dry-run"), ("schema", "--dry-run")):
        result = cli(*command)
        assert result.exit_code == 0, (command, result.output)
        assert "s3cret-app-pw" not in result.output
    monkeypatch.setenv("SUPABASE_DB_URL", _in_query(dbs.source_server, dbs.source_db, APP_ROLE, "wrong-pw-3"))
    result = cli("export", "--dry-run")
    assert result.exit_code == 3, result.output
    assert error_line(result.output).startswith(
        f"Error: the source database (postgresql:///{dbs.source_db}?host=127.0.0.1&port={dbs.source_server.port}"
        f"&user={APP_ROLE}&password=***&sslmode=disable) refused the password"), result.output


def test_a_url_naming_several_hosts_connects_to_the_first_that_answers(cli, dbs, stack_auth,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq takes `h1:5432,h2:5433` in the host part and tries each in turn; supamove refused it as "a port that
    is not a number ('5432,h2:5433')", or took it for a password that ended the host part early."""
    server = dbs.source_server
    monkeypatch.setenv("SUPABASE_DB_URL", f"postgresql://{APP_ROLE}:s3cret-app-pw-!x@127.0.0.1:{free_port()},"
                                          f"127.0.0.1:{server.port}/{dbs.source_db}?sslmode=disable")
    for command in (("test-connections",), ("export", "--dry-run"), ("schema", "--dry-run")):
        result = cli(*command)
        assert result.exit_code == 0, (command, result.output)
    monkeypatch.setenv("SUPABASE_DB_URL", f"postgresql://{APP_ROLE}:pw@127.0.0.1:5432,127.0.0.1:6543/postgres")
    refused = cli("export", "--dry-run")  # the transaction pooler among the hosts is still refused
    assert refused.exit_code == 2 and "uses port 6543" in refused.output, refused.output


def test_the_port_and_host_of_the_query_are_the_ones_checked_and_named(cli, data_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq lets ?port= and ?host= win over the host part: the transaction pooler given that way was let
    through, and a refused connection named the host part's port, not the one libpq had used."""
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://postgres:pw@db.abc.supabase.co:5432/postgres?port=6543")
    for command in (("export", "--dry-run"), ("schema", "--dry-run")):
        result = cli(*command)
        assert result.exit_code == 2, (command, result.output)
        assert error_line(result.output).startswith("Error: SUPABASE_DB_URL uses port 6543, Supabase's transaction "
                                                    "pooler"), result.output
    unused, used = free_port(), free_port()
    monkeypatch.setenv("SUPABASE_DB_URL", f"postgresql://postgres:pw@db.abc.supabase.co:{unused}/postgres"
                                          f"?host=127.0.0.1&port={used}&sslmode=disable")
    result = cli("export", "--dry-run")
    assert result.exit_code == 3, result.output
    assert error_line(result.output) == (
        f"Error: connection refused by 127.0.0.1:{used} (SUPABASE_DB_URL) (fix: check the server is running and the "
        "port (Supabase's direct connection is 5432))"), result.output
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:pw@127.0.0.1:{used}/app?sslmode=disable")
    result = cli("import", "--dry-run")  # the target is self-hosted: Supabase's port is no hint there
    assert result.exit_code == 4, result.output
    assert error_line(result.output) == (
        f"Error: connection refused by 127.0.0.1:{used} (DATABASE_URL) (fix: check the server is running and the "
        "port (PostgreSQL's default is 5432))"), result.output


def test_large_objects_in_the_source_are_named_before_the_freeze_with_the_command_that_moves_them(
        cli, dbs, stack_auth) -> None:
    with dbs.source() as conn:
        conn.execute("SELECT lo_from_bytea(0, 'a scanned delivery note')")
    result = cli("test-connections")
    assert result.exit_code == 0, result.output  # the data is there to move: a warning, not a stop
    assert ("the source holds 1 large object (pg_largeobject), which supamove does not move: after the import, run "
            "pg_dump -Fc -b --data-only --exclude-schema='*' \"$SUPABASE_DB_URL\" | pg_restore --data-only --no-owner "
            "--no-privileges -d \"$DATABASE_URL\" (`supamove verify` fails until the target holds them)"
            ) in " ".join(result.output.split())


def test_role_hidden_by_rls_is_reported(cli, dbs, monkeypatch: pytest.MonkeyPatch) -> None:
    with dbs.source() as conn:
        conn.execute("CREATE ROLE weak LOGIN PASSWORD 'weak-pw-1' NOBYPASSRLS")
        conn.execute("GRANT USAGE ON SCHEMA auth TO weak")
        conn.execute("GRANT SELECT ON auth.users, auth.identities TO weak")
    try:
        monkeypatch.setenv("SUPABASE_DB_URL", dbs.source_server.url(dbs.source_db, "weak", "weak-pw-1"))
        result = cli("test-connections")
        assert result.exit_code != 0
        assert "row-level security hides auth.users from this user" in result.output
    finally:
        with dbs.source() as conn:
            conn.execute("DROP OWNED BY weak")
            conn.execute("DROP ROLE weak")


def test_verbose_shows_debug_lines_of_its_own_command_line_only(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    verbose = runner.invoke(main, ["--verbose", "test-connections"])
    quiet = runner.invoke(main, ["test-connections"])
    assert verbose.exit_code == quiet.exit_code == 1
    assert "STEP test-connections: started" in verbose.output
    assert "STEP test-connections: started" not in quiet.output
    assert "Error: not every endpoint is usable (fix: correct the settings named above)" in quiet.output
