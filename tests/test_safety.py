"""A careless move never destroys data and never passes as success: the target that is the source,
settings unset or misspelled, a busy or unwritable data directory, a refused answer."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from conftest import (
    EDGE,
    app_table,
    error_line,
    flat,
    interrupt_and_wait,
    wait_until,
    write_mapping,
)
from psycopg import sql

from supamove.config import Settings
from supamove.db import Endpoint, connect
from supamove.files import lock_data_dir
from supamove.locks import WAITED_SECONDS
from supamove.log import get_logger
from supamove.sandbox.pgserver import free_port
from supamove.sandbox.stackauth import StackAuthSandbox
from supamove.usermap import UserMapping

SAME_FIX = "(fix: set DATABASE_URL to the new PostgreSQL database, not Supabase's (SUPABASE_DB_URL is only ever read))"


def row_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Rows of every table of the application and auth schemas."""
    names = [r[0] for r in conn.execute(
        "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables "
        "WHERE table_schema IN ('public', 'edge', 'billing', 'auth') AND table_type = 'BASE TABLE' ORDER BY 1")]
    return {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in names}  # noqa: S608


# --- the target is the source, or a Supabase project --------------------------------------------------


@pytest.mark.parametrize("as_user", ["app", "superuser"])
def test_target_that_is_the_source_is_refused_by_every_writing_command(cli, dbs, exported: Path, as_user: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with dbs.source() as conn:
        before = row_counts(conn)
    # Another user, another URL: the same database all the same.
    monkeypatch.setenv("DATABASE_URL", dbs.source_url if as_user == "app" else dbs.source_admin_url)
    write_mapping(dbs, exported)
    refused = (f"Error: refused: DATABASE_URL and SUPABASE_DB_URL name the same database ({dbs.source_db}): "
               f"writing to the target would change the source {SAME_FIX}")
    result = cli("test-connections")
    assert result.exit_code == 1, result.output
    assert (f"error: target (DATABASE_URL): refused: DATABASE_URL and SUPABASE_DB_URL name the same database "
            f"({dbs.source_db}): writing to the target would change the source") in result.output
    assert "│ target (DATABASE_URL)" in result.output and "FAILED" in result.output
    for command in (["import", "--truncate-first", "--yes"], ["import"], ["import", "--dry-run"],
                    ["schema", "--apply"], ["verify"]):
        result = cli(*command)
        assert result.exit_code == 4, (command, result.output)
        assert error_line(result.output) == refused, command
    with dbs.source() as conn:
        assert row_counts(conn) == before
        assert conn.execute("SELECT to_regnamespace('_supamove')").fetchone()[0] is None


def test_target_that_is_a_supabase_project_is_refused(cli, dbs, exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another database of the source's server, copied from it: not the source, but Supabase all the same."""
    copy = f"{dbs.source_db}_copy"
    with dbs.source() as conn:
        conn.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{dbs.source_db}"')
    try:
        url = dbs.source_server.url(copy)
        with psycopg.connect(url, autocommit=True) as conn:
            before = row_counts(conn)
        monkeypatch.setenv("DATABASE_URL", url)
        write_mapping(dbs, exported)
        reason = (f"refused: the target database ({copy}) holds Supabase's auth.users and the schemas _analytics, "
                  "_realtime, graphql, graphql_public, pgsodium, realtime, storage, supabase_functions, "
                  "supabase_migrations, vault: it is a Supabase project, not the new PostgreSQL")
        result = cli("test-connections")
        assert result.exit_code == 1 and f"error: target (DATABASE_URL): {reason}" in result.output, result.output
        result = cli("import", "--truncate-first", "--yes")
        assert result.exit_code == 4, result.output
        assert error_line(result.output) == f"Error: {reason} {SAME_FIX}"
        with psycopg.connect(url, autocommit=True) as conn:
            assert row_counts(conn) == before
    finally:
        with dbs.source() as conn:
            conn.execute(f'DROP DATABASE "{copy}" WITH (FORCE)')


def test_target_on_the_source_server_is_warned_about(cli, dbs, stack_auth, exported: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty database of the source's own server: usable, but in a cutover the data would never leave it."""
    beside = f"{dbs.source_db}_beside"
    with dbs.source() as conn:
        conn.execute(f'CREATE DATABASE "{beside}"')
    try:
        monkeypatch.setenv("DATABASE_URL", dbs.source_server.url(beside))
        warning = (f"the target database ({beside}) is on the source's own server, beside {dbs.source_db}: the "
                   "data would not leave it; set DATABASE_URL to the new PostgreSQL server unless this is a rehearsal")
        result = cli("test-connections")
        assert result.exit_code == 0, result.output  # a warning, not a refusal: a rehearsal may use one server
        assert f"warning: target (DATABASE_URL): {warning}" in flat(result.output)
        report = orjson.loads(cli("test-connections", "--json").stdout)
        assert warning in report["endpoints"][1]["warnings"]
        planned = cli("import", "--dry-run")  # every command writing to the target says it too
        assert warning in flat(planned.output)
    finally:
        with dbs.source() as conn:
            conn.execute(f'DROP DATABASE "{beside}" WITH (FORCE)')


def test_import_refuses_a_mapping_into_another_stack_auth_project(cli, dbs, exported: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A rehearsal's user-mapping.json, into a staging Stack Auth project, loaded the rows with user ids that the
    project in STACK_AUTH_PROJECT_ID does not have; verify maps them back through the same file and passed."""
    write_mapping(dbs, exported)
    mapping = UserMapping.load(exported / "user-mapping.json")
    mapping.project_id = "00000000-0000-4000-8000-00000000beef"  # the staging project
    mapping.save()
    monkeypatch.setenv("STACK_AUTH_PROJECT_ID", "00000000-0000-4000-8000-00000000cafe")
    refused = (f"{exported / 'user-mapping.json'} maps Supabase users to users of Stack Auth project "
               "00000000-0000-4000-8000-00000000beef, and STACK_AUTH_PROJECT_ID is "
               "00000000-0000-4000-8000-00000000cafe: the users it names are not in this project")
    for args in (("import",), ("import", "--dry-run")):
        result = cli(*args)
        assert result.exit_code == 6, (args, result.output)
        assert refused in flat(result.output), args
    with dbs.target() as conn:  # nothing loaded
        assert conn.execute("SELECT count(*) FROM public.organizations").fetchone() == (0,)
    monkeypatch.delenv("STACK_AUTH_PROJECT_ID")  # not set where import runs: nothing to compare with
    assert cli("import").exit_code == 0


# --- test-connections with settings missing -----------------------------------------------------------


def test_unset_endpoints_fail_and_the_missing_env_file_is_named(cli, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    result = cli("test-connections")
    assert result.exit_code == 1
    rows = [line for line in result.output.splitlines() if line.startswith("│")]
    assert [row.split("│")[2].strip() for row in rows] == ["FAILED", "FAILED", "FAILED"]
    lines = result.output.splitlines()
    assert (f"error: target (DATABASE_URL): DATABASE_URL is not set and .env was not found in {tmp_path} (fix: "
            f"copy .env.example to {tmp_path / '.env'} and fill it in, or set DATABASE_URL in the environment "
            "(target: the new PostgreSQL, postgresql://USER:***@HOST:5432/DBNAME))") in lines
    assert (f"error: Stack Auth (https://api.stack-auth.com): STACK_AUTH_PROJECT_ID and STACK_AUTH_SECRET_KEY are "
            f"not set and .env was not found in {tmp_path} (fix: copy .env.example to {tmp_path / '.env'} and "
            "fill it in, or set STACK_AUTH_PROJECT_ID and STACK_AUTH_SECRET_KEY in the environment "
            "(STACK_AUTH_PROJECT_ID: Stack Auth project id (dashboard, Project Settings); STACK_AUTH_SECRET_KEY: "
            "Stack Auth secret server key (dashboard, API Keys)))") in lines
    assert error_line(result.output) == "Error: not every endpoint is usable (fix: correct the settings named above)"


def test_databases_usable_but_stack_auth_unset_fails(cli, dbs, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# settings come from the environment\n")
    result = cli("test-connections")
    assert result.exit_code == 1, result.output
    assert ("error: Stack Auth (https://api.stack-auth.com): STACK_AUTH_PROJECT_ID and STACK_AUTH_SECRET_KEY are "
            "not set (fix: set STACK_AUTH_PROJECT_ID and STACK_AUTH_SECRET_KEY in .env or the environment") \
        in result.output
    assert "usable." not in result.output


def test_misspelled_env_key_is_named_with_the_setting_meant(cli, dbs, stack_auth, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MIGRATON_DATA_DIR=./elsewhere\nSTACK_AUTH_SECRET=x\nMY_APP_FLAG=1\n")
    result = cli("test-connections")
    assert result.exit_code == 0, result.output
    warnings = [line for line in flat(result.output).split("WARNING ")[1:]]
    assert any(w.startswith(".env: MIGRATON_DATA_DIR is not a supamove setting; did you mean MIGRATION_DATA_DIR? "
                            "(it is ignored)") for w in warnings), result.output
    assert "MY_APP_FLAG" not in result.output


def test_a_setting_under_a_name_supamove_does_not_read_is_named(cli, dbs, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # `SUPABASE_DB_URL is not set` alone, with the URL in .env under a misspelled or lower-case name: the
    # lower-case key got no warning, the typo too far from the name none, and the error did not say either.
    monkeypatch.delenv("SUPABASE_DB_URL")
    monkeypatch.delenv("DATABASE_URL")
    env = tmp_path / ".env"
    env.write_text(f"SOURCE_DATABSE_URL={dbs.source_url}\ndatabase_url={dbs.target_url}\nMY_APP_FLAG=1\n")
    env.chmod(0o600)
    result = cli("export", "--dry-run")
    assert result.exit_code == 2, result.output
    assert ("WARNING .env: database_url is not a supamove setting; did you mean DATABASE_URL? (it is ignored)"
            in flat(result.output))
    assert error_line(result.output) == (
        "Error: SUPABASE_DB_URL is not set; .env has SOURCE_DATABSE_URL, which supamove does not read (fix: in "
        ".env, rename SOURCE_DATABSE_URL to SUPABASE_DB_URL (source: Supabase's direct connection, "
        "postgresql://postgres:***@db.REF.supabase.co:5432/postgres))")
    checked = flat(cli("test-connections").output)
    assert ("error: target (DATABASE_URL): DATABASE_URL is not set; .env has SOURCE_DATABSE_URL, database_url, "
            "which supamove does not read (fix: in .env, rename SOURCE_DATABSE_URL to DATABASE_URL, database_url "
            "to DATABASE_URL") in checked
    assert "MY_APP_FLAG" not in result.output + checked


# --- the data directory: busy, unwritable -------------------------------------------------------------


def test_a_busy_data_directory_names_the_command_holding_it(cli, data_dir: Path) -> None:
    data_dir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from supamove.files import lock_data_dir; "
         f"lock_data_dir(Path({str(data_dir / 'supamove.lock')!r}), 'export'); print('locked', flush=True); "
         "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        result = cli("verify", "--skip-checksum")
        assert result.exit_code == 1
        assert error_line(result.output) == (f"Error: the data directory {data_dir} is in use by `supamove export` "
                                             f"(process {holder.pid}) (fix: wait for that command to finish (or stop "
                                             "it), then run this one again)")
        assert not (data_dir / "verification-report.json").exists()
    finally:
        holder.communicate("", timeout=10)
    result = cli("verify", "--skip-checksum")  # the holder gone, the lock is free again
    assert "in use by" not in result.output


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody can write to, root included (chattr +i)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    with immutable_paths(folder):
        yield folder


def test_unwritable_data_dir_and_log_are_found_before_any_work(cli, dbs, immutable: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for data_dir in (immutable, immutable / "migration-data"):  # existing, and to be made
        monkeypatch.setenv("MIGRATION_DATA_DIR", str(data_dir))
        result = cli("export", *EDGE)
        assert result.exit_code == 2, result.output
        assert error_line(result.output) == (
            f"Error: cannot write the data directory {data_dir}: operation not permitted (fix: make it writable by "
            "this user (chmod u+w), or set MIGRATION_DATA_DIR or --data-dir to a path you can write)")
        assert "unexpected" not in result.output
    monkeypatch.delenv("MIGRATION_DATA_DIR")
    monkeypatch.setenv("LOG_FILE_PATH", str(immutable / "migration.log"))
    result = cli("verify")
    assert result.exit_code == 2, result.output
    assert error_line(result.output) == (
        f"Error: cannot write the log file {immutable / 'migration.log'}: operation not permitted (fix: make it "
        "writable by this user (chmod u+w), or set LOG_FILE_PATH to a path you can write)")
    assert not Path("migration-data").exists()
    monkeypatch.delenv("LOG_FILE_PATH")
    monkeypatch.setenv("MIGRATION_DATA_DIR", "/proc/migration-data")  # no chmod mends this one
    result = cli("export", *EDGE)
    assert result.exit_code == 2, result.output
    assert error_line(result.output).endswith("(fix: set MIGRATION_DATA_DIR or --data-dir to a path on a writable disk)")


def test_a_dry_run_reads_a_data_directory_it_cannot_write(cli, dbs, exported: Path) -> None:
    # A dry run writes nothing, but `import --dry-run` on an export kept read-only stopped with "cannot write the
    # data directory" (exit 2), as did every other dry run: only the lock file was at stake.
    write_mapping(dbs, exported)
    lock = exported / "supamove.lock"
    lock.unlink()
    warned = (f"cannot write the data directory {exported}: operation not permitted; the dry run goes on (it writes "
              "nothing), the real run would stop (fix: make it writable")
    with immutable_paths(exported):
        for command in (("import", "--dry-run"), ("export", "--dry-run", *EDGE)):
            result = cli(*command)
            assert result.exit_code == 0, (command, result.output)
            assert warned in flat(result.output), command
        assert cli("import").exit_code == 2  # the real run still stops before any work
    assert sorted(p.name for p in exported.iterdir()) == ["auth", "metadata.json", "tables", "user-mapping.json"]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from supamove.files import lock_data_dir; "
         f"lock_data_dir(Path({str(lock)!r}), 'export'); print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    with immutable_paths(lock, exported):  # the lock file is held read-only: a command holding it is still found
        try:
            result = cli("import", "--dry-run")
            assert result.exit_code == 1 and "is in use by `supamove export`" in error_line(result.output)
        finally:
            holder.communicate("", timeout=10)
        result = cli("import", "--dry-run")
        assert result.exit_code == 0 and warned in flat(result.output), result.output


@contextlib.contextmanager
def immutable_paths(*paths: Path) -> Iterator[None]:
    """Files and folders nobody can write to, root included (chattr +i), while the block runs."""
    subprocess.run(["chattr", "+i", *map(str, paths)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


def test_lock_is_released_when_the_holder_ends(tmp_path: Path) -> None:
    fd = lock_data_dir(tmp_path / "supamove.lock", "import")
    os.close(fd)
    os.close(lock_data_dir(tmp_path / "supamove.lock", "verify"))
    assert (tmp_path / "supamove.lock").read_text() == f"`supamove verify` (process {os.getpid()})\n"
    assert oct((tmp_path / "supamove.lock").stat().st_mode & 0o777) == "0o600"


# --- bad values named by their cause ------------------------------------------------------------------


FULL_URL = "(fix: pass a full URL, e.g. --callback-url https://app.example.com/handler/password-reset)"


@pytest.mark.parametrize(("args", "message"), [
    (["export", "--jobs", "0"], "Error: Invalid value for '--jobs': 0 is not in the range 1<=x<=64."),
    (["verify", "--jobs", "-2"], "Error: Invalid value for '--jobs': -2 is not in the range 1<=x<=64."),
    (["import", "--jobs", "100"], "Error: Invalid value for '--jobs': 100 is not in the range 1<=x<=64."),
    (["verify", "--max-diffs", "-1"], "Error: Invalid value for '--max-diffs': -1 is not in the range x>=0."),
    (["send-password-resets", "--callback-url", "not-a-url"],
     "Error: --callback-url not-a-url: must be an http(s):// URL " + FULL_URL),
    (["send-password-resets", "--callback-url", "https:///handler"],
     "Error: --callback-url https:///handler: must name a host, like https://app.example.com/... " + FULL_URL),
    # Python's URL parser raised at a bracket: "unexpected ValueError: Invalid IPv6 URL", exit 1.
    (["send-password-resets", "--callback-url", "https://[app.example.com/reset"],
     "Error: --callback-url https://[app.example.com/reset: is not a valid URL: a [ or ] belongs only around an "
     "IPv6 address, like https://[2001:db8::1]/ " + FULL_URL),
    (["send-password-resets", "--callback-url", "https://admin:p[w@app.example.com/reset"],
     "Error: --callback-url carries a user name or password (fix: leave it out, e.g. --callback-url "
     "https://app.example.com/handler/password-reset)"),
], ids=["export jobs 0", "verify jobs negative", "import jobs 100", "max-diffs negative", "callback not a url",
        "callback without host", "callback with a bracket", "callback with a password holding a bracket"])
def test_bad_option_values_are_refused_with_their_cause(cli, args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == message


def test_settings_error_is_printed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "DATABASE_URL": "postgresql://app:pw@db.example.com:5432/app?sslmod=disable"}
    done = subprocess.run([sys.executable, "-m", "supamove", "import"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == ("Error: DATABASE_URL has an unknown parameter 'sslmod': did you mean 'sslmode'? "
                           "(fix: correct DATABASE_URL in .env or the environment)\n")


def test_declining_the_truncate_prompt_changes_nothing(cli, dbs, exported: Path, env: dict[str, str]) -> None:
    write_mapping(dbs, exported)
    assert cli("import").exit_code == 0
    with dbs.target() as conn:
        before = row_counts(conn)
    assert sum(before.values()) > 0
    done = answer_in_terminal(["import", "--truncate-first"], "n\n", env)
    assert done["code"] == 1, done["output"]
    assert "Empty every planned table in the target" in done["output"]
    typed = done["output"].replace("[y/N]: ", "[y/N]: n\n")  # a terminal echoes the answer; a pipe does not
    assert error_line(typed) == ("Error: nothing truncated, nothing loaded: the answer was no (fix: answer "
                                          "yes to empty the tables, or run `supamove import` without "
                                          "--truncate-first)")
    assert "Abort" not in done["output"]
    with dbs.target() as conn:
        assert row_counts(conn) == before


def answer_in_terminal(args: list[str], answer: str, env: dict[str, str]) -> dict[str, Any]:
    """Run supamove with a terminal as its input, type `answer`; its exit code and output."""
    import pty

    main, child = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "supamove", *args], env={**os.environ, **env}, stdin=child,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    os.close(child)
    os.write(main, answer.encode())
    output, _ = process.communicate(timeout=120)
    os.close(main)
    return {"code": process.returncode, "output": output}


# --- Stack Auth unreachable, slow or rate-limited -----------------------------------------------------


@pytest.mark.parametrize("where", ["refused", "unknown host"])
def test_unreachable_stack_auth_fails_within_seconds(cli, exported: Path, stack_auth: StackAuthSandbox,
                                                     monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    url = f"http://127.0.0.1:{free_port()}" if where == "refused" else "http://no-such-host.invalid"
    monkeypatch.setenv("STACK_AUTH_API_URL", url)
    import time

    started = time.monotonic()
    result = cli("migrate-users")
    assert time.monotonic() - started < 5
    assert result.exit_code == 6, result.output
    reason = "connection refused" if where == "refused" else "unknown host"
    assert error_line(result.output) == (f"Error: cannot connect to Stack Auth at {url}: {reason} (fix: check "
                                         "STACK_AUTH_API_URL and that Stack Auth is up and reachable from this "
                                         "machine)")
    assert "retrying" not in result.output


def test_retries_are_shown_at_the_default_verbosity(cli, exported: Path, stack_auth: StackAuthSandbox) -> None:
    stack_auth.fail_next(1, 429, retry_after="0.2", match="POST /api/v1/users")
    stack_auth.fail_next(1, 503, retry_after="0.3", match="GET /api/v1/users")
    result = cli("migrate-users")
    assert result.exit_code == 0, result.output
    assert "Stack Auth answered 429, retrying in 0.2s (attempt 2 of 8)" in flat(result.output)
    assert "Stack Auth answered 503, retrying in 0.3s (attempt 2 of 8)" in flat(result.output)


# --- the demo -----------------------------------------------------------------------------------------


def test_demo_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://real@prod/app\n")
    (tmp_path / "migration-data").mkdir()
    done = subprocess.run([sys.executable, "-m", "supamove", "demo", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert error_line(done.stdout + done.stderr) == (
        f"Error: --workdir {tmp_path} is not an empty directory: the demo would overwrite its .env, log and "
        "migration-data/ (fix: give a new or empty directory, or leave out --workdir)")
    assert (tmp_path / ".env").read_text() == "DATABASE_URL=postgresql://real@prod/app\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env", "migration-data"]
    assert not any((tmp_path / "migration-data").iterdir())


def test_demo_names_a_workdir_it_cannot_make(immutable: Path) -> None:
    # It said "cannot use ...: ... (fix: restore it, or run the step that writes it again)", exit 5.
    workdir = immutable / "demo"
    done = subprocess.run([sys.executable, "-m", "supamove", "demo", "--workdir", str(workdir)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert error_line(done.stdout + done.stderr) == (
        f"Error: cannot write the demo directory {workdir}: operation not permitted (fix: make it writable by this "
        "user (chmod u+w), or set --workdir to a path you can write)")
    assert "Starting" not in done.stdout + done.stderr  # before any server


# --- Ctrl-C -------------------------------------------------------------------------------------------


def test_ctrl_c_during_export_cancels_the_copy_and_the_rerun_resumes(cli, dbs, data_dir: Path) -> None:
    from conftest import BIG_FILE, make_big_table, wait_until

    rows = 800_000  # long enough that the small tables finish while it is exported (100 MB of COPY text)
    make_big_table(dbs, rows)
    process = cli.process("export", *EDGE)
    # Interrupt once the big table (read as block ranges: it is over 64 MB) is under way and at least one
    # other table is finished, so the rerun has both a table to keep and a table to export again.
    def ranges_written() -> int:
        total = 0
        for path in (data_dir / "tables").glob("public.fault_big.copy.[0-9]*.partial"):
            with contextlib.suppress(FileNotFoundError):  # joined meanwhile
                total += path.stat().st_size
        return total

    wait_until(lambda: ranges_written() > 0, "the big table's ranges", process)
    busy = cli("verify", "--skip-checksum")  # meanwhile, a second command on the same data directory
    assert busy.exit_code == 1
    assert error_line(busy.output).startswith(f"Error: the data directory {data_dir} is in use by `supamove export` "
                                              f"(process {process.pid}) (fix: ")
    # The small tables start once every range has: the last ranges are still being read when one finishes.
    wait_until(lambda: ranges_written() > 1_000_000
               and any(f.name != Path(BIG_FILE).name for f in (data_dir / "tables").glob("*.copy")),
               "the big table's ranges and one finished table", process)
    seconds, output = interrupt_and_wait(process)
    assert process.returncode == 130, output
    assert seconds < 5, (seconds, output)
    assert "Interrupted: stopping…" in output and "Run the same command again to resume." in output
    assert "Traceback" not in output and "unexpected" not in output
    with dbs.source() as conn:
        wait_until(lambda: not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                            "'supamove' AND state = 'active'").fetchone()[0], "no COPY left", timeout=5)
    assert not (data_dir / BIG_FILE).exists()
    from conftest import entries

    finished = {name for name, e in entries(data_dir).items() if e["complete"]}
    assert finished and "public.fault_big" not in finished
    result = cli("export", *EDGE)
    assert result.exit_code == 0, result.output

    assert entries(data_dir)["public.fault_big"]["rowCount"] == rows
    assert not list(data_dir.rglob("*.partial"))
    # The auth tables, of one snapshot, each with the fingerprint verify compares (the killed run recorded none:
    # those it had finished were kept without one, and verify then checked no user).
    auth = orjson.loads((data_dir / "metadata.json").read_bytes())["auth"]
    assert len({e["snapshot"] for e in auth}) == 1 and all(e["fingerprint"]["md5"] for e in auth)


def test_ctrl_c_during_import_rolls_the_table_back_and_the_rerun_resumes(cli, dbs, data_dir: Path) -> None:
    from conftest import (
        assert_verify_passes,
        import_state,
        make_big_table,
        metadata,
        wait_for_copy_into,
        wait_until,
    )

    make_big_table(dbs)
    assert cli("export", *EDGE).exit_code == 0
    write_mapping(dbs, data_dir)
    process = cli.process("import")
    wait_for_copy_into(dbs, "fault_big", process)
    seconds, output = interrupt_and_wait(process)
    assert process.returncode == 130, output
    assert seconds < 5, (seconds, output)
    assert "Interrupted: stopping…" in output
    with dbs.target() as conn:
        wait_until(lambda: not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%%fault_big%%'"
                                            " AND pid <> pg_backend_pid()").fetchone()[0], "the rollback", timeout=5)
        assert conn.execute("SELECT count(*) FROM public.fault_big").fetchone()[0] == 0
    result = cli("import")
    assert result.exit_code == 0, result.output
    assert len(import_state(dbs)) == len(metadata(data_dir)["tables"])
    assert_verify_passes(cli)


def test_a_stop_sent_to_the_process_group_during_the_import_ends_its_workers_without_a_traceback(
        cli, dbs, data_dir: Path) -> None:
    """`timeout`, a service manager or `kill -- -PGID` sends SIGTERM to every process of the group: the worker
    processes converting a big file ran the handler they inherited, each printed "Interrupted: stopping…" and,
    at times, a Python traceback ending in KeyboardInterrupt."""
    from conftest import make_big_table, wait_for_copy_into

    make_big_table(dbs)
    assert cli("export", *EDGE, "--table-format", "jsonl").exit_code == 0
    write_mapping(dbs, data_dir)
    process = cli.process("import", start_new_session=True)  # a group of its own, as under `timeout`
    wait_for_copy_into(dbs, "fault_big", process)  # the file is big: the workers are converting its JSON lines
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert len(children) == 2  # --jobs 2
    for child in children:  # each ends on SIGTERM as any process does: no handler of its own
        assert not _catches_sigterm(int(child)), child
    os.killpg(process.pid, signal.SIGTERM)  # the importing process and its workers at once
    try:
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, output
    assert output.count("Interrupted: stopping…") == 1, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output


def test_ctrl_c_during_migrate_users_against_a_hung_stack_auth(cli, dbs, exported: Path,
                                                               stack_auth: StackAuthSandbox) -> None:
    import time

    from conftest import assert_users_once, wait_until

    hang = 8.0
    stack_auth.delay_next(10_000, hang, match="POST /api/v1/users")
    process = cli.process("migrate-users", "--concurrency", "4")
    wait_until(lambda: bool(stack_auth._faults) and stack_auth._faults[0].times <= 10_000 - 4,
               "four creates hanging", process)
    sent = time.monotonic()
    seconds, output = interrupt_and_wait(process)
    assert process.returncode == 130, output
    assert seconds < 5, (seconds, output)
    assert "Interrupted: stopping…" in output and "Run the same command again to resume." in output
    stack_auth.clear_faults()
    time.sleep(max(0.0, hang + 0.5 - (time.monotonic() - sent)))  # the hung creates land now, as they would
    result = cli("migrate-users")
    assert result.exit_code == 0, result.output
    assert_users_once(stack_auth, exported)


# --- row-level security -------------------------------------------------------------------------------


def test_a_user_row_level_security_filters_is_refused_before_it_reads_fewer_rows(
        cli, dbs, exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    role = f"no_bypass_{os.getpid()}_{dbs.source_db}"[:60]
    with dbs.source() as conn:  # may read every table, but is subject to the policies (no BYPASSRLS)
        conn.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD \'pw-rls-77\' NOBYPASSRLS')
        for schema in ("public", "auth", "edge"):
            conn.execute(f'GRANT USAGE ON SCHEMA {schema} TO "{role}"')
            conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO "{role}"')
            conn.execute(f'GRANT SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO "{role}"')
    write_mapping(dbs, exported)
    assert cli("import").exit_code == 0
    monkeypatch.setenv("SUPABASE_DB_URL", dbs.source_server.url(dbs.source_db, role, "pw-rls-77"))
    fix = ("(fix: use the postgres user (Supabase's has BYPASSRLS) in SUPABASE_DB_URL, or ALTER ROLE ... "
           "BYPASSRLS)")
    for command in (("export", *EDGE, "--force"), ("export", *EDGE, "--dry-run"), ("export", "--auth-only"),
                    ("verify",)):
        result = cli(*command)
        assert result.exit_code == 3, (command, result.output)
        line = error_line(result.output)
        assert line.startswith("Error: row-level security hides rows of "), (command, line)
        assert line.endswith(f"from the user in SUPABASE_DB_URL (it has no BYPASSRLS): reading them would miss "
                             f"rows without an error {fix}"), (command, line)
        assert "public.organizations" in line or "auth.identities" in line, line
        assert "pw-rls-77" not in result.output
    assert cli("verify", "--skip-checksum").exit_code == 3
    # Past the plans' check, the sessions' row_security = off makes a filtered read fail, not shrink.
    with connect(Endpoint(os.environ["SUPABASE_DB_URL"], "source"), autocommit=True) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        conn.execute("SELECT count(*) FROM public.organizations")
    with dbs.source() as conn:  # the same user with BYPASSRLS reads every row: the checks pass
        conn.execute(f'ALTER ROLE "{role}" BYPASSRLS')
    result = cli("verify")
    assert result.exit_code == 0, result.output


def test_a_target_table_forcing_row_level_security_on_its_owner_names_the_fixes_that_help(
        cli, dbs, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FORCE ROW LEVEL SECURITY holds the table's owner to the policies too: the fix said to use the owner,
    which the user in DATABASE_URL already was."""
    ddl = "CREATE TABLE public.secret_notes (id integer PRIMARY KEY, body text)"
    app_table(dbs, "secret_notes", ddl, "INSERT INTO public.secret_notes VALUES (1, 'a'), (2, 'b')")
    assert cli("export", "--tables", "public.secret_notes").exit_code == 0
    role = f"forced_{os.getpid()}_{dbs.target_db}"[:60]
    with dbs.target() as conn:  # the table's owner, no superuser, no BYPASSRLS; no policy lets a row through
        conn.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD \'pw-force-5\' NOBYPASSRLS')
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(dbs.target_db),
                                                                         sql.Identifier(role)))
        conn.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{role}"')  # CREATE: the load rebuilds its key
        conn.execute(f'ALTER TABLE public.secret_notes OWNER TO "{role}"')
        conn.execute("ALTER TABLE public.secret_notes ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY")
    monkeypatch.setenv("DATABASE_URL", dbs.target_server.url(dbs.target_db, role, "pw-force-5"))
    for command in ("import", "verify"):
        result = cli(command)
        assert result.exit_code == 4, (command, result.output)
        assert error_line(result.output) == (
            "Error: row-level security hides rows of public.secret_notes from the user in DATABASE_URL (it has no "
            "BYPASSRLS): reading them would miss rows without an error (fix: FORCE ROW LEVEL SECURITY on "
            f'public.secret_notes holds the table\'s owner to the policies too: ALTER ROLE "{role}" BYPASSRLS, or '
            "ALTER TABLE public.secret_notes NO FORCE ROW LEVEL SECURITY for the migration (FORCE it again after))"), \
            command
    with dbs.target() as conn:  # the second fix named
        conn.execute("ALTER TABLE public.secret_notes NO FORCE ROW LEVEL SECURITY")
    result = cli("import")
    assert result.exit_code == 0, result.output
    with dbs.target() as conn:
        assert conn.execute("SELECT count(*) FROM public.secret_notes").fetchone() == (2,)
    cli("verify")  # the other tables of public, left out of this export, fail it
    report = orjson.loads((data_dir / "verification-report.json").read_bytes())
    assert [t["status"] for t in report["tables"] if t["table"] == "secret_notes"] == ["pass"], report["tables"]


def test_a_partition_another_role_owns_is_named_before_the_load(cli, dbs, data_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The load disables a partition's triggers too: one owned by another role stopped it with "unexpected
    InsufficientPrivilege" once the dry run had passed."""
    app_table(dbs, "shards", "CREATE TABLE public.shards (id int PRIMARY KEY) PARTITION BY RANGE (id); CREATE TABLE "
              "public.shards_1 PARTITION OF public.shards FOR VALUES FROM (0) TO (100)",
              "INSERT INTO public.shards SELECT generate_series(1, 9)")
    assert cli("export", "--tables", "public.shards").exit_code == 0
    write_mapping(dbs, data_dir)
    loader, other = (f"{kind}_{os.getpid()}_{dbs.target_db}"[:60] for kind in ("loader", "other"))
    with dbs.target() as conn:
        conn.execute(f'CREATE ROLE "{loader}" LOGIN BYPASSRLS PASSWORD \'pw-ld-3\'; CREATE ROLE "{other}"')
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(dbs.target_db),
                                                                         sql.Identifier(loader)))
        conn.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{loader}"')
        conn.execute(f'ALTER TABLE public.shards OWNER TO "{loader}"; ALTER TABLE public.shards_1 OWNER TO "{other}"')
    monkeypatch.setenv("DATABASE_URL", dbs.target_server.url(dbs.target_db, loader, "pw-ld-3"))
    for args in (("import", "--dry-run"), ("import",)):
        result = cli(*args)
        assert result.exit_code == 4 and "does not own public.shards_1:" in flat(result.output), result.output


def test_a_target_user_that_may_not_create_the_progress_schema_is_told_what_to_grant(
        cli, dbs, exported: Path, stack_auth: StackAuthSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    role = f"no_create_{os.getpid()}_{dbs.target_db}"[:60]
    with dbs.target() as conn:  # may write every table, but not create a schema in the database
        conn.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD \'pw-nc-88\'')
        conn.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbs.target_db)))
        for schema in ("public", "edge"):
            conn.execute(f'GRANT USAGE ON SCHEMA {schema} TO "{role}"')
            conn.execute(f'GRANT INSERT, SELECT, TRUNCATE ON ALL TABLES IN SCHEMA {schema} TO "{role}"')
    write_mapping(dbs, exported)
    monkeypatch.setenv("DATABASE_URL", dbs.target_server.url(dbs.target_db, role, "pw-nc-88"))
    checked = cli("test-connections")
    assert checked.exit_code == 1, checked.output
    assert "this user may not create the _supamove schema that records import progress" in flat(checked.output)
    assert "does not exist" not in checked.output  # the schema not being there yet is no error of its own
    result = cli("import")  # the policies of the target's tables would hide their rows from it
    assert result.exit_code == 4, result.output
    assert error_line(result.output).startswith("Error: row-level security hides rows of public.alert_subscriptions, "
                                                "public.alerts, "), result.output
    assert error_line(result.output).endswith(
        "from the user in DATABASE_URL (it has no BYPASSRLS): reading them would miss rows without an error (fix: "
        "use the tables' owner in DATABASE_URL, or ALTER ROLE ... BYPASSRLS)")
    with dbs.target() as conn:
        conn.execute(f'ALTER ROLE "{role}" BYPASSRLS')
    result = cli("import")  # INSERT, SELECT and TRUNCATE are not enough: the load sets indexes and keys aside
    assert result.exit_code == 4, result.output
    assert error_line(result.output).startswith(
        "Error: the user in DATABASE_URL does not own edge.Odd Table, edge.cycle_a, edge.cycle_b, "), result.output
    assert error_line(result.output).endswith(
        "more: the load sets their indexes, keys and triggers aside and makes them again, which only a table's owner "
        f'may do (fix: use the user that applied the schema (`supamove schema --apply`), or ALTER TABLE ... OWNER TO "{role}")')
    with dbs.target() as conn:
        for schema, name in conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN "
                                         "('public', 'edge')").fetchall():
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(schema, name), sql.Identifier(role)))
    result = cli("import")
    assert result.exit_code == 4, result.output
    assert error_line(result.output) == (
        "Error: the user in DATABASE_URL may not create in schema edge, public: the load makes the tables' keys and "
        f'indexes again there (fix: GRANT CREATE ON SCHEMA "edge" TO "{role}"; GRANT CREATE ON SCHEMA "public" TO '
        f'"{role}")')
    with dbs.target() as conn:
        conn.execute(f'GRANT CREATE ON SCHEMA public, edge TO "{role}"')
    result = cli("import")  # the sequences no table owns stay another user's
    assert result.exit_code == 4, result.output
    assert error_line(result.output) == (
        "Error: the user in DATABASE_URL may not set sequence edge.post_number_seq, edge.ticket_seq: the import "
        'continues each one from the source\'s value (fix: GRANT SELECT, UPDATE ON SEQUENCE "edge"."post_number_seq", '
        f'"edge"."ticket_seq" TO "{role}")')
    with dbs.target() as conn:
        conn.execute(f'GRANT SELECT, UPDATE ON SEQUENCE edge.post_number_seq, edge.ticket_seq TO "{role}"')
    result = cli("import")
    assert result.exit_code == 4, result.output
    assert error_line(result.output) == (
        "Error: cannot create the _supamove schema that records the import's progress: permission denied for "
        f"database {dbs.target_db} (fix: GRANT CREATE ON DATABASE (the target's database) to the user in "
        "DATABASE_URL, or use the database's owner)")


def test_a_progress_schema_another_user_made_is_named_with_the_grants_before_the_load(
        cli, dbs, exported: Path, stack_auth: StackAuthSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """`schema --apply` run by a superuser makes _supamove; the tables then given to the application's role (the fix
    the import names) left that role unable to use it: test-connections said ok, then the import and its dry run
    stopped with "unexpected InsufficientPrivilege: permission denied for schema _supamove"."""
    role = f"handed_{os.getpid()}_{dbs.target_db}"[:60]
    with dbs.target() as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS _supamove")  # as `schema --apply` records itself, as postgres
        conn.execute("CREATE TABLE IF NOT EXISTS _supamove.schema_applied (sha256 text PRIMARY KEY)")
        conn.execute(f'CREATE ROLE "{role}" LOGIN BYPASSRLS PASSWORD \'pw-hd-41\'')
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(dbs.target_db),
                                                                         sql.Identifier(role)))
        conn.execute(f'GRANT USAGE, CREATE ON SCHEMA public, edge TO "{role}"')
        conn.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public, edge TO "{role}"')  # those no table owns too
        for schema, name in conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN "
                                         "('public', 'edge')").fetchall():
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(schema, name), sql.Identifier(role)))
    write_mapping(dbs, exported)
    monkeypatch.setenv("DATABASE_URL", dbs.target_server.url(dbs.target_db, role, "pw-hd-41"))
    grants = (f'GRANT USAGE, CREATE ON SCHEMA _supamove TO "{role}"; '
              f'GRANT SELECT, INSERT, DELETE ON ALL TABLES IN SCHEMA _supamove TO "{role}"')
    checked = cli("test-connections")
    assert checked.exit_code == 1, checked.output
    assert ("this user may not use the _supamove schema that records the import's progress, which another user made: "
            f"as its owner or a superuser: {grants}") in flat(checked.output)
    for args in (("import", "--dry-run"), ("import",)):
        result = cli(*args)
        assert result.exit_code == 4, result.output
        assert error_line(result.output) == (
            "Error: the user in DATABASE_URL may not use the _supamove schema that records the import's progress, "
            f"which another user made (fix: as its owner or a superuser: {grants})"), args
    with dbs.target() as conn:  # the grants named
        conn.execute(grants)
    result = cli("import")
    assert result.exit_code == 0, result.output


def test_a_sequence_no_table_owns_another_user_owns_is_named_before_the_load(
        cli, dbs, exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tables handed to the loading role (the fix the import names) leave behind the sequences no column owns:
    the load stopped with "unexpected InsufficientPrivilege: permission denied for sequence post_number_seq",
    once its tables were loaded, where its dry run had passed."""
    role = f"seqless_{os.getpid()}_{dbs.target_db}"[:60]
    with dbs.target() as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN BYPASSRLS PASSWORD \'pw-sq-52\'')
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(dbs.target_db),
                                                                         sql.Identifier(role)))
        conn.execute(f'GRANT USAGE, CREATE ON SCHEMA public, edge TO "{role}"')
        for schema, name in conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN "
                                         "('public', 'edge')").fetchall():
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(schema, name), sql.Identifier(role)))
    write_mapping(dbs, exported)
    monkeypatch.setenv("DATABASE_URL", dbs.target_server.url(dbs.target_db, role, "pw-sq-52"))
    for args in (("import", "--dry-run"), ("import",)):
        result = cli(*args)
        assert result.exit_code == 4, result.output
        named = re.search(r"the user in DATABASE_URL may not set sequence (.+?): the import continues each one from "
                          r"the source's value \(fix: (GRANT SELECT, UPDATE ON SEQUENCE .+? TO \S+)\)", flat(result.output))
        assert named and "edge.post_number_seq" in named.group(1), result.output
        assert named.group(2).endswith(f' TO "{role}"'), named.group(2)
    with dbs.target() as conn:  # nothing was loaded
        assert conn.execute("SELECT count(*) FROM public.organizations").fetchone() == (0,)
        conn.execute(named.group(2))  # the grant named
    result = cli("import")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", ["import", "export"])
def test_a_session_keeping_a_step_waiting_is_named_and_the_step_goes_on_once_it_ends(
        dbs, env: dict[str, str], data_dir: Path, request: pytest.FixtureRequest, command: str) -> None:
    if command == "import":  # a read left idle in its transaction, by the target's user: every detail shown
        write_mapping(dbs, request.getfixturevalue("exported"))
        holder = psycopg.connect(dbs.target_url, application_name="left-open")
        holder.execute("SELECT count(*) FROM public.alerts")
        details = "(user postgres, left-open, idle in transaction for "
    else:  # a migration's ALTER TABLE, by another role: its state is hidden from the export's user
        holder = psycopg.connect(dbs.source_admin_url, application_name="left-open")
        holder.execute("LOCK TABLE public.alerts IN ACCESS EXCLUSIVE MODE")
        details = f"(user {holder.info.user}, left-open, unknown state);"
    pid = holder.info.backend_pid
    proc = subprocess.Popen([sys.executable, "-m", "supamove", command], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr or []], daemon=True).start()
    try:
        seen = ""
        while f"public.alerts: the {command} has waited" not in seen:  # said while it waits
            seen += lines.get(timeout=60)  # queue.Empty, not a hang, if it never comes
        time.sleep(2 * WAITED_SECONDS + 0.5)  # the watch looks twice more
        assert proc.poll() is None  # still waiting for the lock
        holder.rollback()  # the session ends its transaction: the step goes on
        proc.wait(timeout=120)
        while not lines.empty():
            seen += lines.get()
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, seen
    side = "target" if command == "import" else "source"
    assert f"for a lock that process {pid} holds on the {side} {details}" in flat(seen), seen
    assert (f"it goes on once that session ends its transaction: end it with SELECT pg_terminate_backend({pid}) "
            "if it is not needed") in flat(seen), seen
    assert flat(seen).count(f"process {pid} holds") == 1, seen  # named once, however long the wait


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM: supamove's entry point sets it with SIGINT's."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


@pytest.mark.parametrize(("signum", "delay"), [(signal.SIGINT, 0.0), (signal.SIGINT, 0.1), (signal.SIGINT, 0.2),
                                               (signal.SIGINT, 0.35), (signal.SIGTERM, 0.1), (signal.SIGTERM, 0.35)])
def test_ctrl_c_while_python_loads_supamove_stops_it_with_nothing_done(env: dict[str, str], data_dir: Path,
                                                                       signum: int, delay: float) -> None:
    # A KeyboardInterrupt inside an import was a traceback, or swallowed by the import machinery: the
    # command then went on, and once waited with its data directory locked until a second Ctrl-C.
    # `delay` counts from the moment supamove's entry point runs: before it, during the interpreter's own
    # start (about 0.05 s, longer on a loaded machine), the signal is Python's or the system's to handle.
    process = subprocess.Popen([sys.executable, "-m", "supamove", "export", "--dry-run"], env={**os.environ, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 10
    while not _catches_sigterm(process.pid):
        assert time.monotonic() < deadline, "supamove's entry point never ran"
        time.sleep(0.002)
    time.sleep(delay)
    seconds, output = interrupt_and_wait(process, signum)
    assert "Traceback" not in output and "Exception ignored" not in output, output
    if process.returncode == 130:  # stopped before doing anything (it writes nothing in any case)
        assert "Run the same command again to resume." in output and not data_dir.exists()
        if "Export plan" in output:  # on a quick machine the plan was shown in time: whole, the stop after it
            assert output.index("Interrupted") > output.rindex("└") > output.index("public.readings"), output
    else:  # the plan was done (a dry run takes half a second): shown whole, as without the Ctrl-C
        assert process.returncode == 0 and "Export plan" in output and "Interrupted" not in output, output


def test_a_ctrl_c_inside_code_python_built_from_a_string_still_exits_130(tmp_path: Path) -> None:
    # CPython notes a KeyboardInterrupt that ended code run from a string (dataclasses build their methods
    # so), even one caught, and under `python -m` then ended the process by SIGINT: 2 migrate runs in 20
    # interrupted during their imports ended so (-2), not with 130. Here the command is stood in for by one
    # so interrupted, whose Ctrl-C is handled as supamove's are.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys, threading, time, types\n"
        "def main():\n"
        "    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()  # a worker still there\n"
        "    try:\n"
        "        exec('raise KeyboardInterrupt')\n"
        "    except KeyboardInterrupt:\n"
        "        sys.exit(130)\n"
        "sys.modules['supamove.cli'] = types.SimpleNamespace(main=main)\n")
    paths = os.pathsep.join([str(tmp_path), *sys.path])
    done = subprocess.run([sys.executable, "-m", "supamove"], env={**os.environ, "PYTHONPATH": paths},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 130, (done.returncode, done.stderr)


def test_a_session_queued_ahead_is_named_with_the_one_it_waits_for_whatever_the_application_name(dbs) -> None:
    # An ALTER TABLE queued behind a session idle in its transaction blocks every later reader: the watch
    # said the ALTER TABLE "holds" the lock and never named the idle session. And with application_name set
    # in the URL, supamove's own sessions carry that name: the watch looked for 'supamove' and said nothing.
    from supamove.locks import LockWatch

    said: list[str] = []  # on supamove's logger itself: a command run before may have stopped its propagation
    heard = logging.Handler(logging.WARNING)
    heard.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    get_logger().addHandler(heard)
    endpoint = Endpoint(dbs.target_url + "&application_name=nightly-cutover", "target")
    idle = psycopg.connect(dbs.target_url, application_name="left-open")
    idle.execute("SELECT count(*) FROM public.alerts")
    queued = psycopg.connect(dbs.target_url, autocommit=True, application_name="migration")
    reader = connect(endpoint, autocommit=True)  # as verify reads: behind the ALTER TABLE
    waiting = [threading.Thread(target=conn.execute, args=(statement,), daemon=True) for conn, statement in (
        (queued, "ALTER TABLE public.alerts ADD COLUMN note text"), (reader, "SELECT count(*) FROM public.alerts"))]
    try:
        for thread in waiting:
            thread.start()
            time.sleep(0.5)
        with LockWatch(endpoint, "verify"):
            deadline = time.monotonic() + 20
            while not any("which itself waits" in line for line in said) and time.monotonic() < deadline:
                time.sleep(0.2)
        text = " ".join(said)
        assert ("public.alerts: the verify has waited" in text
                and f"behind process {queued.info.backend_pid} on the target (user postgres, migration), which "
                    f"itself waits for process {idle.info.backend_pid}" in text), said
    finally:
        get_logger().removeHandler(heard)
        idle.close()  # its transaction ends: the ALTER TABLE, then the read, go on
        for thread in waiting:
            thread.join(10)
        reader.close()
        queued.close()


def test_a_step_shorter_than_the_wait_opens_no_connection_for_the_lock_watch(dbs) -> None:
    # The watch connects only once a step has run WAITED_SECONDS: a short command costs no session.
    from supamove.locks import LockWatch

    endpoint = Endpoint(dbs.target_url + "&application_name=watch-probe", "target")
    count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'watch-probe'"
    with dbs.target() as conn:
        with LockWatch(endpoint, "verify"):
            time.sleep(WAITED_SECONDS / 2)
            assert conn.execute(count).fetchone() == (0,)
        with LockWatch(endpoint, "verify"):  # past it, with nothing waiting: one connection, then none
            time.sleep(WAITED_SECONDS + 0.5)
            assert conn.execute(count).fetchone() == (1,)
        wait_until(lambda: conn.execute(count).fetchone() == (0,), "the watch's connection closed", timeout=5)
