"""Secrets: never printed, logged or written to a report; private files; quoted SQL; TLS honoured."""

from __future__ import annotations

import ast
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import psycopg
import pytest
from conftest import APP_PASSWORD, EDGE, STACK_SECRET, assert_verify_passes, error_line
from psycopg import sql

from supamove.db import Endpoint, connect
from supamove.errors import SupamoveError
from supamove.log import add_secret, get_logger, setup_logging
from supamove.sandbox import fixtures
from supamove.sandbox.pgserver import PostgresServer
from supamove.sandbox.stackauth import StackAuthSandbox
from supamove.schema.dump import libpq_environment

TARGET_PASSWORD = "tgt-Pa55word-#7q"
WRONG_PASSWORD = "wrong-Pa55-leak-3"
WRONG_SECRET = "ssk_wrong_secret_must_not_show_77"
SRC = Path(__file__).parent.parent / "src" / "supamove"


def with_password(url: str, user: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest.split('@', 1)[1]}"


@pytest.fixture
def secret_target(dbs: Any, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """DATABASE_URL as a role that needs its password (the default test target trusts postgres)."""
    with dbs.target() as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'secret_owner'").fetchone():
            conn.execute("CREATE ROLE secret_owner LOGIN SUPERUSER")
        conn.execute(sql.SQL("ALTER ROLE secret_owner PASSWORD {}").format(TARGET_PASSWORD))
    url = dbs.target_server.url(dbs.target_db, "secret_owner", quote(TARGET_PASSWORD, safe=""))
    monkeypatch.setenv("DATABASE_URL", url)
    env["DATABASE_URL"] = url
    return url


def password_hashes(dbs: Any) -> list[str]:
    with dbs.source() as conn:
        return [r[0] for r in conn.execute("SELECT DISTINCT encrypted_password FROM auth.users "
                                           "WHERE encrypted_password LIKE '$%'")]


def test_no_secret_in_output_log_reports_or_errors(cli, dbs, env, data_dir: Path, secret_target: str,
                                                   stack_auth: StackAuthSandbox,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    hashes = password_hashes(dbs)
    assert hashes
    secrets = [os.environ["SUPABASE_DB_URL"].split(":")[2].split("@")[0], TARGET_PASSWORD, STACK_SECRET,
               WRONG_PASSWORD, WRONG_SECRET, *hashes]
    assert secrets[0] == "s3cret-app-pw-!x"
    runs = [["-v", "test-connections"], ["-v", "export", "--dry-run", *EDGE], ["-v", "export", *EDGE],
            ["-v", "migrate-users", "--dry-run"], ["-v", "migrate-users"], ["-v", "map-users", "--dry-run"],
            ["-v", "import", "--dry-run"], ["-v", "import"], ["-v", "verify"],
            ["-v", "send-password-resets", "--dry-run"], ["-v", "purge-mapping"]]
    outputs = [cli(*args).output for args in runs]
    assert_verify_passes(cli)
    process = cli.process("-v", "export", "--dry-run", *EDGE)  # a real terminal's bytes, not click's runner
    outputs.append(process.communicate(timeout=60)[0])
    failing = {
        "SUPABASE_DB_URL": [with_password(dbs.source_url, "supabase_app", WRONG_PASSWORD),
                            f"mysql://root:{WRONG_PASSWORD}@db.example.com/app",
                            f"postgresql://u:{WRONG_PASSWORD}@no-such-host.invalid/db"],
        "DATABASE_URL": [with_password(secret_target, "secret_owner", WRONG_PASSWORD)],
        "STACK_AUTH_SECRET_KEY": [WRONG_SECRET],
    }
    for name, values in failing.items():
        for value in values:
            monkeypatch.setenv(name, value)
            for args in (["-v", "test-connections"], ["-v", "export"], ["-v", "import"], ["-v", "migrate-users"]):
                result = cli(*args)
                outputs.append(result.output)
        monkeypatch.setenv(name, env.get(name) or STACK_SECRET)
    with pytest.raises(SupamoveError) as caught:
        connect(Endpoint(with_password(dbs.source_url, "supabase_app", WRONG_PASSWORD), "source"))
    outputs.append(str(caught.value))
    texts = {f"output {i}": text for i, text in enumerate(outputs)}
    texts["log file"] = Path(env["LOG_FILE_PATH"]).read_text()
    for path in data_dir.glob("*.json*"):
        texts[path.name] = path.read_text()
    assert {"verification-report.json", "user-migration-report.json", "user-mapping.json"} <= set(texts)
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({secret[:6]}…) in {where}"


def test_private_files_and_directories(cli, dbs, env, data_dir: Path, stack_auth: StackAuthSandbox) -> None:
    os.umask(0o022)
    assert cli("export", *EDGE).exit_code == 0
    assert cli("migrate-users").exit_code == 0
    assert cli("import").exit_code == 0
    assert_verify_passes(cli)
    folders = [data_dir, *(p for p in data_dir.rglob("*") if p.is_dir())]
    files = [Path(env["LOG_FILE_PATH"]), *(p for p in data_dir.rglob("*") if p.is_file())]
    names = {p.name for p in files}
    assert {"user-mapping.json", "user-migration-report.json", "password-reset-required.json",
            "auth.users.jsonl", "auth.identities.jsonl", "verification-report.json", "metadata.json"} <= names
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_existing_data_dir_is_made_private(cli, data_dir: Path) -> None:
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    assert cli("export", *EDGE).exit_code == 0
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


# --- SQL from catalog names -------------------------------------------------------------------------


SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|ALTER|CREATE|DROP|TRUNCATE|COPY|GRANT|REVOKE|SET|WITH|"
                       r"COMMENT|ANALYZE|LOCK)\b")


def _literal_text(node: ast.AST) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return ""


def test_sql_is_never_built_by_string_formatting() -> None:
    """Every statement built from names goes through psycopg.sql (sql.Identifier), in the whole package."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            how = None
            if isinstance(node, ast.JoinedStr) and SQL_START.match(_literal_text(node)):
                how = "f-string"
            elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)) \
                    and SQL_START.match(_literal_text(node.left)):
                how = "% or +"
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" \
                    and not (isinstance(node.func.value, ast.Call) and ast.unparse(node.func.value.func).endswith("SQL")) \
                    and SQL_START.match(_literal_text(node.func.value)):
                how = "str.format"
            if how:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {how}: {ast.unparse(node)[:80]}")
    assert not found, "\n".join(found)


# --- TLS --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, Path]]:
    """A PostgreSQL that speaks TLS with a self-signed certificate for 127.0.0.1; the CA file."""
    assert shutil.which("openssl"), "openssl is needed to make the test certificate (.ci/run installs it)"
    certs = tmp_path_factory.mktemp("tls")
    server = PostgresServer("tls")
    assert server.root is not None
    key, cert = server.root / "server.key", server.root / "server.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    if os.geteuid() == 0:
        owner = server.root.stat()
        for path in (key, cert):
            os.chown(path, owner.st_uid, owner.st_gid)
    shutil.copy(cert, certs / "ca.crt")
    server.settings.update({"ssl": "on", "ssl_cert_file": str(cert), "ssl_key_file": str(key)})
    server.start()
    yield server, certs / "ca.crt"
    server.destroy()


def _tls_url(server: PostgresServer, query: str) -> str:
    return server.url().replace("?sslmode=disable", query)


def _row(output: str, name: str) -> list[str]:
    """The cells of the first line of the test-connections row whose endpoint starts with `name`."""
    rows = ([cell.strip() for cell in line.split("│")] for line in output.splitlines() if line.startswith("│"))
    return next(cells for cells in rows if cells[1].startswith(name))


def test_tls_is_reported_and_verify_full_works(cli, env, tls_server: tuple[PostgresServer, Path], stack_auth,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    server, ca = tls_server
    with psycopg.connect(server.url(), autocommit=True) as conn:  # the target: another database of the server
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'tls_target'").fetchone():
            conn.execute("CREATE DATABASE tls_target")
    monkeypatch.setenv("SUPABASE_DB_URL", _tls_url(server, f"?sslmode=verify-full&sslrootcert={ca}"))
    monkeypatch.setenv("DATABASE_URL", server.url("tls_target").replace("?sslmode=disable", ""))  # require added
    result = cli("test-connections")
    assert result.exit_code == 0, result.output
    assert "yes" in _row(result.output, "source"), result.output
    assert "yes" in _row(result.output, "target"), result.output
    assert "not encrypted" not in result.output


def test_verify_full_with_the_wrong_ca_is_refused(cli, env, tls_server: tuple[PostgresServer, Path],
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = tls_server
    other = tmp_path / "other-ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other",
                    "-keyout", str(tmp_path / "other.key"), "-out", str(other)], check=True, capture_output=True)
    monkeypatch.setenv("SUPABASE_DB_URL", _tls_url(server, f"?sslmode=verify-full&sslrootcert={other}"))
    result = cli("export")
    assert result.exit_code == 3, result.output
    line = error_line(result.output)
    assert "certificate verify failed" in line, line
    fix = "(fix: check sslrootcert (the server's CA certificate file) and the host name in SUPABASE_DB_URL)"
    assert line.endswith(fix), line  # never "add ?sslmode=disable": the fix is the CA file, not less TLS
    monkeypatch.setenv("SUPABASE_DB_URL", _tls_url(server, f"?sslmode=verify-full&sslrootcert={tmp_path / 'none.crt'}"))
    missing = error_line(cli("export").output)
    assert "root certificate file" in missing and "does not exist" in missing and missing.endswith(fix), missing


def test_unencrypted_source_is_flagged(cli, dbs, stack_auth) -> None:
    result = cli("test-connections")
    assert result.exit_code == 0, result.output
    assert "NO" in _row(result.output, "source"), result.output
    assert ("warning: source (SUPABASE_DB_URL): the source connection is not encrypted: add ?sslmode=require"
            in " ".join(result.output.split()))


def test_url_without_sslmode_requires_tls(cli, dbs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_DB_URL", dbs.source_url.replace("?sslmode=disable", ""))
    result = cli("export")
    assert result.exit_code == 3, result.output
    line = error_line(result.output)
    assert line.startswith("Error: the source database (postgresql://supabase_app:***@"), line
    assert "server does not support SSL" in line, line
    assert line.endswith("(fix: check sslmode in SUPABASE_DB_URL (add ?sslmode=disable for a server without "
                         "TLS))"), line


def test_log_file_that_cannot_be_written_is_one_warning(cli, monkeypatch) -> None:
    """A full disk under LOG_FILE_PATH: the command goes on, says so once, shows no traceback."""
    monkeypatch.setenv("LOG_FILE_PATH", "/dev/full")  # every write fails with ENOSPC
    result = cli("export", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.count("warning: cannot write the log file /dev/full: logging to the terminal only") == 1
    assert "Traceback" not in result.output and "Logging error" not in result.output


def test_a_password_given_as_a_url_parameter_is_never_stored_shown_or_put_on_a_command_line(
        cli, dbs: Any, env: dict[str, str], data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = (f"postgresql://127.0.0.1:{dbs.source_server.port}/{dbs.source_db}"
           f"?user={fixtures.APP_ROLE}&password={quote(APP_PASSWORD, safe='')}&sslmode=disable")
    monkeypatch.setenv("SUPABASE_DB_URL", url)
    exported = cli("export", *EDGE)
    assert exported.exit_code == 0, exported.output
    schema = cli("schema", *EDGE)  # pg_dump: the password goes by PGPASSWORD, never on its command line
    assert schema.exit_code == 0, schema.output
    command_line, environment = libpq_environment(Endpoint(url, "source"), data_dir)  # what pg_dump is given
    assert environment["PGPASSWORD"] == APP_PASSWORD and f"user={fixtures.APP_ROLE}" in command_line
    assert "password" not in command_line
    log = Path(env["LOG_FILE_PATH"]).read_text()
    seen = exported.output + schema.output + log + "".join(
        p.read_text(errors="replace") for p in data_dir.rglob("*.json"))
    assert APP_PASSWORD not in seen and quote(APP_PASSWORD, safe="") not in seen
    source = orjson.loads((data_dir / "metadata.json").read_bytes())["source"]["url"]
    assert source.endswith(f"?user={fixtures.APP_ROLE}&password=***&sslmode=disable"), source


def test_the_client_keys_password_is_never_stored_shown_or_put_on_a_command_line(
        cli, dbs: Any, env: dict[str, str], data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sslpassword=` (the password of an encrypted client key) was written to metadata.json with the URL and
    given to pg_dump on its command line, where every user of the machine reads it (ps)."""
    key_password = "Key-Pa55-never-shown"
    url = dbs.source_server.url(dbs.source_db, fixtures.APP_ROLE, APP_PASSWORD) + f"&sslpassword={key_password}"
    monkeypatch.setenv("SUPABASE_DB_URL", url)
    exported = cli("export", *EDGE)
    assert exported.exit_code == 0, exported.output
    schema = cli("schema", *EDGE)  # pg_dump reads it from a service file of its own
    assert schema.exit_code == 0, schema.output
    log = Path(env["LOG_FILE_PATH"]).read_text()
    seen = exported.output + schema.output + log + "".join(
        p.read_text(errors="replace") for p in data_dir.rglob("*.json"))
    assert key_password not in seen
    source = orjson.loads((data_dir / "metadata.json").read_bytes())["source"]["url"]
    assert source.endswith("&sslpassword=***"), source
    folder = tmp_path / "dump"
    folder.mkdir()
    command_line, environment = libpq_environment(Endpoint(url, "source"), folder)  # what pg_dump is given
    assert key_password not in command_line and command_line.endswith("&service=supamove"), command_line
    service = Path(environment["PGSERVICEFILE"])
    assert service.read_text() == f"[supamove]\nsslpassword={key_password}\n"
    assert stat.S_IMODE(service.stat().st_mode) == 0o600
    with pytest.raises(SupamoveError, match="names a service and an sslpassword"):  # it would replace theirs
        libpq_environment(Endpoint(url + "&service=prod", "source"), folder)


def test_a_log_file_that_is_a_device_keeps_its_mode(tmp_path: Path) -> None:
    # LOG_FILE_PATH=/dev/null (no log wanted): as root it was made 0600, and every other program of the
    # machine then failed to write to /dev/null. A node of the same device, here, stands for it.
    device = tmp_path / "null"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    device.chmod(0o666)
    setup_logging(device)
    get_logger("users").info("written to the device, as to /dev/null")
    assert stat.S_IMODE(device.stat().st_mode) == 0o666


def test_a_traceback_in_the_log_is_scrubbed_too(tmp_path: Path) -> None:
    add_secret("tb-secret-5531")
    (tmp_path / "migration.log").write_text("")
    (tmp_path / "migration.log").chmod(0o644)  # left readable by an earlier tool: made private
    setup_logging(tmp_path / "migration.log")
    assert stat.S_IMODE((tmp_path / "migration.log").stat().st_mode) == 0o600
    try:
        raise ValueError("Illegal header value b'tb-secret-5531\\n' for postgresql://u:hunter2-pw@h/db")
    except ValueError:
        get_logger("users").debug("unexpected failure", exc_info=True)
    text = (tmp_path / "migration.log").read_text()
    assert "ValueError: Illegal header value b'***\\n' for postgresql://u:***@h/db" in text, text
    assert "tb-secret-5531" not in text and "hunter2-pw" not in text
