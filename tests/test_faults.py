"""Faults on real servers: a process killed, a server restarted, Stack Auth misbehaving, a full disk,
steps out of order. Each recovery ends with `supamove verify` passing every table.

Covered elsewhere and not repeated here: Stack Auth faults one by one through the library
(test_users.py::test_faults_end_with_every_user_exactly_once), a killed import compared row by row
(test_import.py::test_killed_import_resumes_without_doubles).
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import (
    BIG_FILE,
    BIG_ROWS,
    EDGE,
    app_table,
    assert_users_once,
    assert_verify_passes,
    entries,
    error_line,
    flat,
    import_state,
    kill_when,
    make_big_table,
    metadata,
    tmpfs,
    wait_for_copy_into,
    wait_until,
)

from supamove.sandbox.stackauth import StackAuthSandbox

# --- helpers ----------------------------------------------------------------------------------------


def finish_runbook(cli: Any, stack: StackAuthSandbox, *import_args: str, users: bool = True) -> None:
    """migrate-users (unless done), import, then verify: every table passes, every user exists once."""
    if users:
        result = cli("migrate-users")
        assert result.exit_code == 0, result.output
    result = cli("import", *import_args)
    assert result.exit_code == 0, result.output
    assert_verify_passes(cli)
    assert_users_once(stack, Path(os.environ["MIGRATION_DATA_DIR"]))


# --- killed processes ---------------------------------------------------------------------------------


def test_killed_export_resumes_and_keeps_finished_tables(cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox) -> None:
    make_big_table(dbs)
    process = cli.process("export", *EDGE)
    partial = data_dir / (BIG_FILE + ".partial")
    kill_when(process, lambda: wait_until(lambda: partial.exists() and partial.stat().st_size > 2_000_000,
                                          "the big table's file", process))
    before = entries(data_dir)
    assert metadata(data_dir)["finishedAt"] is None
    assert not before["public.fault_big"]["complete"] and not (data_dir / BIG_FILE).exists()
    finished = {name for name, e in before.items() if e["complete"]}
    result = cli("export", *EDGE)
    assert result.exit_code == 0, result.output
    assert flat(result.output).count("exported by a previous run") == len(finished)
    after = entries(data_dir)
    assert after["public.fault_big"]["rowCount"] == BIG_ROWS and all(e["complete"] for e in after.values())
    assert not list(data_dir.rglob("*.partial"))
    finish_runbook(cli, stack_auth)


@pytest.mark.parametrize("mode", [[], ["--disable-fk"]], ids=["enforced", "disable-fk"])
def test_killed_import_resumes_and_verify_passes(cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox,
                                                 mode: list[str]) -> None:
    make_big_table(dbs)
    assert cli("export", *EDGE).exit_code == 0
    assert cli("migrate-users").exit_code == 0
    process = cli.process("import", *mode)
    kill_when(process, lambda: wait_for_copy_into(dbs, "fault_big", process))
    with dbs.target() as conn:
        wait_until(lambda: not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%%fault_big%%'"
                                            " AND pid <> pg_backend_pid()").fetchone()[0], "the rollback")
        assert conn.execute("SELECT count(*) FROM public.fault_big").fetchone()[0] == 0
    loaded = import_state(dbs)
    assert ("public", "fault_big") not in {(s, t) for s, t, _ in loaded}
    result = cli("import", *mode)
    assert result.exit_code == 0, result.output
    assert flat(result.output).count("loaded by a previous run") >= len(loaded)
    assert len(import_state(dbs)) == len(metadata(data_dir)["tables"])
    assert_verify_passes(cli)


def test_killed_import_with_two_jobs_neither_doubles_nor_loses(cli, dbs, data_dir: Path,
                                                              stack_auth: StackAuthSandbox) -> None:
    make_big_table(dbs)
    app_table(dbs, "fault_big2", "CREATE TABLE public.fault_big2 (LIKE public.fault_big INCLUDING ALL)",
              "INSERT INTO public.fault_big2 SELECT * FROM public.fault_big", "CHECKPOINT")
    assert cli("export", *EDGE).exit_code == 0
    assert cli("migrate-users").exit_code == 0
    process = cli.process("import", "--jobs", "2", "--disable-fk")
    copies = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%%fault_big%%' AND state = 'active'"
    with dbs.target() as conn:
        kill_when(process, lambda: wait_until(lambda: conn.execute(copies).fetchone()[0] == 2,
                                              "both big tables loading at once", process))
    with dbs.target() as conn:
        wait_until(lambda: not conn.execute(copies.replace("state = 'active'", "pid <> pg_backend_pid()"))
                   .fetchone()[0], "the rollback")
        assert conn.execute("SELECT (SELECT count(*) FROM public.fault_big) + "
                            "(SELECT count(*) FROM public.fault_big2)").fetchone()[0] == 0
    loaded = {(s, t) for s, t, _ in import_state(dbs)}
    assert not loaded & {("public", "fault_big"), ("public", "fault_big2")}
    result = cli("import", "--jobs", "2", "--disable-fk")
    assert result.exit_code == 0, result.output
    assert flat(result.output).count("loaded by a previous run") == len(loaded)
    state = import_state(dbs)
    assert len(state) == len({(s, t) for s, t, _ in state}) == len(metadata(data_dir)["tables"])
    assert_verify_passes(cli)


def test_killed_migrate_users_resumes_each_user_once(cli, dbs, exported: Path, stack_auth: StackAuthSandbox) -> None:
    make_big_table(dbs, rows=10)
    assert cli("export", "--force", *EDGE).exit_code == 0  # over the finished export: the new table too
    total = len((exported / "auth" / "auth.users.jsonl").read_bytes().splitlines())
    # Slow creates: the kill lands while some are in flight (sent, maybe created, never recorded).
    stack_auth.delay_next(10_000, 0.15, match="POST /api/v1/users")
    process = cli.process("migrate-users", "--concurrency", "4")
    kill_when(process, lambda: wait_until(lambda: stack_auth.create_count() >= total // 3, "a third of the creates",
                                          process))
    time.sleep(0.3)  # the creates already sent still land
    stack_auth.clear_faults()
    assert 0 < len(stack_auth.users) < total
    finish_runbook(cli, stack_auth)
    again = cli("migrate-users")
    assert again.exit_code == 0 and "Created 0 users" in flat(again.output), again.output


def test_stack_auth_faults_through_the_cli(cli, dbs, stack_auth: StackAuthSandbox) -> None:
    make_big_table(dbs, rows=10)
    assert cli("export", *EDGE).exit_code == 0
    creates = "POST /api/v1/users"
    stack_auth.fail_next(2, 429, retry_after="0.1", match=creates)
    stack_auth.fail_next(2, 429, match=creates)
    stack_auth.fail_next(2, 500, match=creates)
    stack_auth.delay_next(3, 0.5, match=creates)
    stack_auth.drop_next_creates(3)
    finish_runbook(cli, stack_auth)


# --- a server restarted -------------------------------------------------------------------------------


def restart_when(condition: Callable[[], bool], server: Any) -> threading.Thread:
    def run() -> None:
        wait_until(condition, "the moment to restart")
        server.restart()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_source_restarted_during_export(cli, env, dbs, data_dir: Path, stack_auth: StackAuthSandbox) -> None:
    make_big_table(dbs)
    partial = data_dir / (BIG_FILE + ".partial")
    thread = restart_when(lambda: partial.exists() and partial.stat().st_size > 1_000_000, dbs.source_server)
    result = cli("export", *EDGE)
    thread.join(60)
    assert result.exit_code == 3, result.output
    line = error_line(result.output)
    assert line.startswith("Error: lost the source connection while exporting public.fault_big: "), line
    assert line.endswith("(fix: check the source is up, then run `supamove export` again: finished tables "
                         "are kept)"), line
    logged = Path(env["LOG_FILE_PATH"]).read_text()  # the server's own words, for whoever reads the log
    assert re.search(r"\n\S+ \S+ DEBUG supamove: caused by \w+: ", logged.split(line)[-1]), logged[-2000:]
    assert not (data_dir / BIG_FILE).exists() and not list(data_dir.rglob("*.partial"))
    result = cli("export", *EDGE)
    assert result.exit_code == 0, result.output
    finish_runbook(cli, stack_auth)


def test_target_restarted_during_import(cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox) -> None:
    make_big_table(dbs)
    assert cli("export", *EDGE).exit_code == 0
    assert cli("migrate-users").exit_code == 0

    def copying() -> bool:
        with dbs.target() as conn:
            return bool(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%%fault_big%%' "
                                     "AND state = 'active'").fetchone()[0])

    thread = restart_when(copying, dbs.target_server)
    result = cli("import")
    thread.join(60)
    assert result.exit_code == 4, result.output
    line = error_line(result.output)
    assert line.startswith("Error: lost the target database connection: "), line
    assert line.endswith("(fix: check the server is up, then run the same command again)"), line
    with dbs.target() as conn:
        assert conn.execute("SELECT count(*) FROM public.fault_big").fetchone()[0] == 0
    finish_runbook(cli, stack_auth, users=False)


# --- the data directory full --------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 2 MB file system (tmpfs), or None where mounting is not permitted."""
    with tmpfs(tmp_path / "small", "2m") as mount:
        yield mount


def fill_table(dbs: Any) -> None:
    """About 5 MB of rows: more than the small disk holds."""
    with dbs.source() as conn:
        conn.execute("CREATE TABLE public.fault_fill AS SELECT i AS id, repeat(md5(i::text), 8) AS payload "
                     "FROM generate_series(1, 20000) i")
        conn.execute("ALTER TABLE public.fault_fill OWNER TO supabase_app")


def assert_nothing_looks_complete(data_dir: Path) -> None:
    assert not list(data_dir.rglob("*.partial"))
    assert not (data_dir / "tables" / "public.fault_fill.copy").exists()
    if (data_dir / "metadata.json").exists():
        meta = metadata(data_dir)
        assert meta["finishedAt"] is None
        for entry in meta["tables"] + meta["auth"]:
            path = data_dir / entry["file"]
            assert not entry["complete"] or (path.exists() and path.stat().st_size == entry["bytes"])


def test_data_dir_full(cli, dbs, env, small_disk: Path | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if small_disk is None:  # no tmpfs here: the file-size limit is the full disk
        return test_file_size_limit_is_a_disk_error(cli, dbs, env, Path(env["MIGRATION_DATA_DIR"]))
    fill_table(dbs)
    data_dir = small_disk / "migration-data"
    monkeypatch.setenv("MIGRATION_DATA_DIR", str(data_dir))
    result = cli("export", *EDGE)
    assert result.exit_code != 0
    line = error_line(result.output)
    assert "no space left on the device writing " in line and str(data_dir) in line, line
    assert line.endswith("(fix: free disk space or point --data-dir at a larger disk, then run the same "
                         "command again)"), line
    assert_nothing_looks_complete(data_dir)


def test_file_size_limit_is_a_disk_error(cli, dbs, env, data_dir: Path) -> None:
    """Where no tmpfs can be mounted: RLIMIT_FSIZE makes write() fail with EFBIG instead of ENOSPC."""
    fill_table(dbs)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))

    done = subprocess.run([sys.executable, "-m", "supamove", "export", *EDGE], env={**os.environ, **env},
                          capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert done.returncode != 0
    line = error_line(done.stdout + done.stderr)
    assert "no space left on the device writing " in line or "file size limit" in line, line
    assert_nothing_looks_complete(data_dir)


# --- steps out of order -------------------------------------------------------------------------------


def test_steps_out_of_order_name_the_step_to_run_first(cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox) -> None:
    result = cli("import")
    assert result.exit_code == 5
    assert error_line(result.output) == (f"Error: {data_dir / 'metadata.json'} not found (fix: run `supamove "
                                         "export` first, or, if it ran, set --data-dir (or MIGRATION_DATA_DIR) to "
                                         "the directory it wrote)")
    result = cli("migrate-users")
    assert result.exit_code == 5
    assert ("(fix: run `supamove export` first, or, if it ran, set --data-dir (or MIGRATION_DATA_DIR) to the "
            "directory it wrote)") in error_line(result.output)
    assert cli("export", *EDGE).exit_code == 0
    result = cli("import")
    assert result.exit_code == 5
    assert error_line(result.output) == (
        f"Error: {data_dir / 'user-mapping.json'} not found: the exported tables hold user ids to remap "
        "(fix: run `supamove migrate-users` first)")
    assert cli("migrate-users").exit_code == 0
    result = cli("verify")
    assert result.exit_code == 7
    report = orjson.loads((data_dir / "verification-report.json").read_bytes())
    assert {t["reason"] for t in report["tables"] if t["status"] == "fail"} == {
        "target table is empty: run `supamove import`"}
    assert error_line(result.output).endswith("target tables are empty (fix: run `supamove import` first, "
                                              "then `supamove verify`)")
    with dbs.target() as conn:
        assert conn.execute("SELECT to_regclass('_supamove.import_state')").fetchone()[0] is None
