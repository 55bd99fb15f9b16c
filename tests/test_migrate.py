"""`supamove migrate`: the runbook's steps as one overlapped run, on real servers and the local Stack Auth.

It must load what the separate commands load, leave the same files and state (so that it, or any separate
command, resumes), stop at a failing step with that step's error, and finish after a kill with nothing doubled.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psycopg
import pytest
from conftest import (
    APP_PASSWORD,
    BIG_FILE,
    BIG_ROWS,
    EDGE,
    STACK_PROJECT,
    STACK_SECRET,
    Cli,
    Databases,
    app_table,
    assert_users_once,
    create_database,
    error_line,
    flat,
    fresh_databases,
    import_state,
    kill_when,
    make_big_table,
    metadata,
    wait_for_copy_into,
    wait_until,
)
from psycopg import sql

from supamove.paths import DataDir
from supamove.pipeline.board import Board
from supamove.pipeline.model import STEPS
from supamove.sandbox import fixtures
from supamove.sandbox.stackauth import StackAuthSandbox

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def step_results(output: str) -> dict[str, str]:
    """The `Migration` summary table: step -> its result."""
    rows = re.findall(r"^│ ([a-z-]+) +│ +[0-9.]* +│ +[0-9.]* +│ (.*?) *│ *$", output, re.MULTILINE)
    return dict(rows)


def report_statuses(data_dir: Path) -> set[str]:
    report = orjson.loads((data_dir / "verification-report.json").read_bytes())
    assert report["tables"], report
    return {t["status"] for t in report["tables"]}


def mapping(data_dir: Path) -> dict[str, str]:
    """Stack Auth id -> Supabase id, from user-mapping.json."""
    rows = orjson.loads((data_dir / "user-mapping.json").read_bytes())["mappings"]
    return {m["stackAuthUserId"]: m["supabaseUserId"] for m in rows}


def target_rows(url: str, tables: list[tuple[str, str]], back: dict[str, str]) -> dict[tuple[str, str], list[str]]:
    """Every exported table's rows on the target, as sorted JSON text, Stack Auth ids turned back into Supabase ids."""
    found = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for key in tables:
            query = sql.SQL("SELECT row_to_json(_row.*)::text FROM {} AS _row").format(sql.Identifier(*key))
            found[key] = sorted(UUID.sub(lambda m: back.get(m.group(), m.group()), r[0]) for r in conn.execute(query))
    return found


def test_migrate_loads_what_the_separate_commands_load(cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox,
                                                       pg_source, pg_target, source_template, target_template,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli("migrate", *EDGE)
    assert result.exit_code == 0, result.output
    assert report_statuses(data_dir) == {"pass"}
    out = flat(result.output)
    for step in ("test-connections", "export", "migrate-users", "import", "verify"):
        assert f"│ {step} " in result.output or f" {step} " in out, out
    assert "Migrated in" in out and "every table verified" in out
    app_tables = [(e["schema"], e["name"]) for e in metadata(data_dir)["tables"]]
    # Each table was checksummed as it was loaded, and the verification took those checksums.
    log = (data_dir.parent / "migration.log").read_text()
    assert log.count(": checksums computed when it was loaded") == len(app_tables)
    assert log.count(": the source's checksum runs while it loads") == len(app_tables)
    ours = target_rows(dbs.target_url, app_tables, mapping(data_dir))
    assert_users_once(stack_auth, data_dir)
    assert len(import_state(dbs)) == len(app_tables)
    # The separate commands find the work done, as after their own runs.
    again = cli("import")
    assert again.exit_code == 0 and flat(again.output).count("loaded by a previous run") == 2 * len(app_tables)
    dry = cli("migrate", "--dry-run", *EDGE)  # it said nothing of the finished export a real run keeps
    assert dry.exit_code == 0 and "holds a finished export: a real run keeps it" in flat(dry.output)
    assert orjson.loads(cli("migrate", "--dry-run", "--json", *EDGE).stdout)["export"]["kept"] is True

    # The same source through the separate commands, into another target and another Stack Auth project.
    with fresh_databases(pg_source, pg_target, source_template, target_template) as other, \
            StackAuthSandbox(STACK_PROJECT, STACK_SECRET) as sandbox:
        other_dir = tmp_path / "separate"
        for name, value in {"SUPABASE_DB_URL": other.source_url, "DATABASE_URL": other.target_url,
                            "MIGRATION_DATA_DIR": str(other_dir), "STACK_AUTH_API_URL": sandbox.url}.items():
            monkeypatch.setenv(name, value)
        for args in (["test-connections"], ["export", *EDGE], ["migrate-users"], ["import"], ["verify"]):
            assert cli(*args).exit_code == 0, args
        theirs = target_rows(other.target_url, app_tables, mapping(other_dir))
        assert set(mapping(other_dir).values()) == set(mapping(data_dir).values())
    assert ours == theirs


def test_a_failing_connection_stops_migrate_with_the_error_of_test_connections(cli, data_dir: Path,
                                                                              stack_auth: StackAuthSandbox,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://postgres:pw@127.0.0.1:1/postgres?sslmode=disable")
    alone = cli("test-connections")
    result = cli("migrate")
    assert result.exit_code == alone.exit_code == 1
    assert error_line(result.output) == error_line(alone.output) == \
        "Error: not every endpoint is usable (fix: correct the settings named above)"
    assert "source (SUPABASE_DB_URL)" in result.output  # the table naming the endpoint at fault
    assert not (data_dir / "metadata.json").exists()


def test_a_table_holding_user_ids_only_inside_json_waits_for_the_users(cli, dbs, data_dir: Path) -> None:
    """The pipeline loads a table as soon as it is exported, unless the import needs the final user mapping:
    user-id columns, or JSON the export's value check found user ids in (the import rewrites them)."""
    app_table(dbs, "activity", "CREATE TABLE public.activity (id int PRIMARY KEY, doc jsonb)",
              "INSERT INTO public.activity SELECT 1, jsonb_build_object('by', id) FROM auth.users ORDER BY id LIMIT 1")
    assert cli("export").exit_code == 0
    board = Board(DataDir(data_dir), disable_fk=True)
    board.values_checked()  # metadata.json read, as the export's value check calls it
    assert board.meta is not None
    board.exported = {e.key for e in board.meta.tables}
    assert board.meta.entry("public", "activity").table.user_id_columns == ()
    waiting = {e.key for e in board.meta.tables} - {e.key for e in board.ready()}
    assert ("public", "activity") in waiting and ("public", "organizations") not in waiting
    assert waiting == {e.key for e in board.meta.tables
                       if e.table.user_id_columns or e.key in board.meta.json_user_id_columns()}
    board.users_done()
    assert {e.key for e in board.ready()} == {e.key for e in board.meta.tables}


def test_a_failing_verification_ends_migrate_with_the_error_of_verify(cli, dbs, data_dir: Path,
                                                                     stack_auth: StackAuthSandbox) -> None:
    # A user id in a composite's field: neither found by the export nor rewritten by the import; verify counts
    # the user ids left in any column and fails the table.
    for conn in (dbs.source(), dbs.target()):
        with conn:
            conn.execute("CREATE TYPE public.signature AS (name text, by_user uuid)")
    app_table(dbs, "signed", "CREATE TABLE public.signed (id int PRIMARY KEY, sig public.signature)",
              "INSERT INTO public.signed SELECT 1, ROW('approved', id)::public.signature FROM auth.users "
              "ORDER BY id LIMIT 1")
    result = cli("migrate", "--json", *EDGE, "--table-format", "jsonl")  # JSON Lines, through the pipeline too
    assert result.exit_code == 7, result.output
    assert {e["format"] for e in metadata(data_dir)["tables"]} == {"jsonl"}
    alone = cli("verify")
    assert alone.exit_code == 7
    assert error_line(result.output) == error_line(alone.output)
    assert "fail" in report_statuses(data_dir)
    summary = orjson.loads(result.stdout)  # --json: the result alone on stdout, the error line on stderr
    assert not summary["ok"] and summary["error"]["exitCode"] == 7 and summary["verify"]["fail"] == 1
    assert summary["error"]["step"] == "verify"
    assert list(summary["steps"]) == ["test-connections", "export", "migrate-users", "import", "verify"]
    assert summary["import"]["tables"] == len(metadata(data_dir)["tables"]) and summary["export"]["rows"] > 2000


@pytest.mark.parametrize(("stage", "mode"), [("export", []), ("import", ["--disable-fk"])],
                         ids=["export-enforced", "import-disable-fk"])
def test_killed_migrate_reruns_to_the_end_with_nothing_doubled(cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox,
                                                              stage: str, mode: list[str]) -> None:
    make_big_table(dbs)
    process = cli.process("migrate", *EDGE, *mode)
    def ready() -> None:
        if stage == "export":
            partial = data_dir / (BIG_FILE + ".partial")
            wait_until(lambda: partial.exists() and partial.stat().st_size > 2_000_000, "the big table's file", process)
        else:
            wait_for_copy_into(dbs, "fault_big", process)

    kill_when(process, ready)
    result = cli("migrate", *EDGE, *mode)
    assert result.exit_code == 0, result.output
    assert report_statuses(data_dir) == {"pass"}
    if mode:
        assert re.search(r"\d+ foreign keys checked", flat(result.output)), result.output
    state = import_state(dbs)
    assert len(state) == len({(s, t) for s, t, _ in state}) == len(metadata(data_dir)["tables"])
    assert ("public", "fault_big", BIG_ROWS) in state
    with dbs.target() as conn:
        assert conn.execute("SELECT count(*) FROM public.fault_big").fetchone()[0] == BIG_ROWS
    assert_users_once(stack_auth, data_dir)


def test_tables_with_user_ids_wait_for_the_mapping_and_the_others_do_not(cli, dbs, data_dir: Path,
                                                                        stack_auth: StackAuthSandbox) -> None:
    stack_auth.delay_next(1000, 0.15, match="POST /api/v1/users")  # the users take seconds: the loads go on
    result = cli("migrate", "--concurrency", "2")
    assert result.exit_code == 0, result.output
    mapped_at = (data_dir / "user-mapping.json").stat().st_mtime
    with dbs.target() as conn:
        loaded = {(s, t): at.timestamp() for s, t, at in conn.execute(
            "SELECT schema_name, table_name, loaded_at FROM _supamove.import_state")}
        held = {r[0] for r in conn.execute("SELECT user_id::text FROM public.org_members")}
    with_ids = {(e["schema"], e["name"]) for e in metadata(data_dir)["tables"] if e["userIdColumns"]}
    assert ("public", "org_members") in with_ids and set(loaded) > with_ids
    assert all(loaded[key] >= mapped_at for key in with_ids), (loaded, mapped_at)
    assert any(at < mapped_at for key, at in loaded.items() if key not in with_ids), (loaded, mapped_at)
    stack_ids = mapping(data_dir)
    assert held and held <= set(stack_ids) and not held & set(stack_ids.values())


@pytest.mark.parametrize("jobs", ["2", "1"])
def test_tables_with_user_ids_load_while_a_table_without_them_is_still_loading(cli, dbs, data_dir: Path,
                                                                              stack_auth: StackAuthSandbox,
                                                                              jobs: str) -> None:
    """The mapping ready, the tables holding user ids load at once, beside a load still under way; with
    --jobs 1 (one connection at a time) they wait for it."""
    stack_auth.delay_next(1000, 0.1, match="POST /api/v1/users")  # readings' load starts before the users end
    with dbs.target() as blocker:
        blocker.autocommit = False
        blocker.execute("LOCK TABLE public.readings IN SHARE MODE")  # its load waits; reading it does not
        process = cli.process("migrate", "--disable-fk", "--concurrency", "2", "--jobs", jobs)
        try:
            if jobs == "1":
                wait_until(lambda: (data_dir / "user-migration-report.json").exists(), "the users' end", process)
                time.sleep(2)  # what two loads at once would have loaded by now
                assert not loaded_tables(dbs) & {("public", "org_members"), ("public", "readings")}
            else:
                wait_until(lambda: ("public", "org_members") in loaded_tables(dbs),
                           "org_members loaded while readings' load waits", process, timeout=30)
                assert ("public", "readings") not in loaded_tables(dbs)
        finally:
            blocker.rollback()
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert report_statuses(data_dir) == {"pass"}


def test_foreign_keys_violated_after_a_disable_fk_load_stop_migrate_with_the_import_s_error(
        cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox) -> None:
    """The check of the whole after the loads (beside the last checksums) fails the import step; no verify."""
    app_table(dbs, "crews", "CREATE TABLE public.crews (id int PRIMARY KEY)", "INSERT INTO public.crews VALUES (1)")
    app_table(dbs, "shifts", "CREATE TABLE public.shifts (id int PRIMARY KEY, crew int REFERENCES public.crews)",
              "ALTER TABLE public.shifts DISABLE TRIGGER ALL", "INSERT INTO public.shifts VALUES (1, 1), (2, 42)")
    result = cli("migrate", "--disable-fk", "--tables", "public.crews", "--tables", "public.shifts")
    assert result.exit_code == 4, result.output
    assert "on public.shifts: 1 row without a match in public.crews" in error_line(result.output), result.output
    assert step_results(result.output)["import"].startswith("failed: ")
    assert not (data_dir / "verification-report.json").exists()


def test_supabase_ids_left_are_counted_as_the_tables_load_and_match_a_separate_verify(
        cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox) -> None:
    """A table without user-id columns loads (and is checksummed) before the users are in Stack Auth: the
    Supabase ids it keeps on purpose are counted once user-mapping.json is final, as verify counts them."""
    stack_auth.delay_next(1000, 0.05, match="POST /api/v1/users")
    app_table(dbs, "audit_notes", "CREATE TABLE public.audit_notes (id int PRIMARY KEY, author uuid)",
              "INSERT INTO public.audit_notes SELECT g, (SELECT id FROM auth.users ORDER BY id OFFSET g LIMIT 1) "
              "FROM generate_series(1, 5) g")
    result = cli("migrate", "--concurrency", "2", "--not-user-id-column", "public.audit_notes.author")
    assert result.exit_code == 0, result.output
    counted = {(t["schema"], t["table"]): t["supabaseUserIds"]
               for t in orjson.loads((data_dir / "verification-report.json").read_bytes())["tables"]}
    assert [(c["column"], c["rows"], c["kept"]) for c in counted[("public", "audit_notes")]] == [("author", 5, True)]
    again = cli("verify", "--keep-supabase-ids", "public.audit_notes.author")
    assert again.exit_code == 0, again.output
    assert {(t["schema"], t["table"]): t["supabaseUserIds"] for t in orjson.loads(
        (data_dir / "verification-report.json").read_bytes())["tables"]} == counted


def loaded_tables(dbs: Databases) -> set[tuple[str, str]]:
    """The tables the target's import progress records as loaded (none before the import began)."""
    try:
        return {(schema, table) for schema, table, _ in import_state(dbs)}
    except psycopg.errors.UndefinedTable:
        return set()


def test_migrate_dry_run_checks_the_connections_and_shows_the_export_plan(cli, data_dir: Path,
                                                                        stack_auth: StackAuthSandbox) -> None:
    result = cli("migrate", "--dry-run", "--json", *EDGE)
    assert result.exit_code == 0, result.output
    plan = orjson.loads(result.stdout)
    assert plan["dryRun"] and plan["ok"] and plan["connections"]["ok"] and plan["error"] is None
    assert {t["table"] for t in plan["exportPlan"]["tables"]} >= {"readings", "org_members", "posts"}
    assert list(plan["steps"]) == ["test-connections"]
    assert not (data_dir / "metadata.json").exists()


def test_ctrl_c_stops_migrate_within_seconds_and_the_rerun_finishes(cli, dbs, data_dir: Path,
                                                                   stack_auth: StackAuthSandbox) -> None:
    from conftest import interrupt_and_wait

    make_big_table(dbs)
    process = cli.process("migrate", *EDGE)
    wait_for_copy_into(dbs, "fault_big", process)
    seconds, output = interrupt_and_wait(process)
    assert process.returncode == 130, output
    assert seconds < 5, (seconds, output)
    assert "Traceback" not in output and "unexpected" not in output and "Run the same command again" in output
    result = cli("migrate", *EDGE)
    assert result.exit_code == 0, result.output
    assert report_statuses(data_dir) == {"pass"}
    assert_users_once(stack_auth, data_dir)


def test_ctrl_c_while_stack_auth_hangs_says_how_to_resume_once(cli, data_dir: Path,
                                                               stack_auth: StackAuthSandbox) -> None:
    """The creates in flight hold the process up to the grace's end, which said "Run the same command again
    to resume." a second time."""
    from conftest import interrupt_and_wait

    stack_auth.delay_next(10_000, 8.0, match="POST /api/v1/users")
    process = cli.process("migrate", *EDGE)
    wait_until(lambda: bool(stack_auth._faults) and stack_auth._faults[0].times < 10_000, "a create hanging",
               process)
    seconds, output = interrupt_and_wait(process)
    assert process.returncode == 130, output
    assert seconds < 5, (seconds, output)
    assert output.count("Run the same command again to resume.") == 1, output


def test_a_failing_import_stops_migrate_with_its_error_and_the_rerun_finishes(cli, dbs, data_dir: Path,
                                                                             stack_auth: StackAuthSandbox) -> None:
    with dbs.target() as conn:
        conn.execute("ALTER TABLE edge.no_pk RENAME TO no_pk_elsewhere")
    result = cli("migrate", *EDGE)
    assert result.exit_code == 4, result.output
    assert error_line(result.output) == ("Error: table edge.no_pk does not exist in the target (fix: create the "
                                         "application schema on the target first: `supamove schema --apply` (or your own migrations))")
    assert not (data_dir / "verification-report.json").exists()
    assert "Migrated in" not in result.output
    assert step_results(result.output)["import"].startswith("failed: ")  # with the tables it loaded before
    assert step_results(result.output)["export"].endswith(" rows")  # the steps before it: what they did
    with dbs.target() as conn:
        conn.execute("ALTER TABLE edge.no_pk_elsewhere RENAME TO no_pk")
    loaded = import_state(dbs)
    result = cli("migrate", *EDGE)
    assert result.exit_code == 0, result.output
    assert flat(result.output).count("loaded by a previous run") >= len(loaded)
    assert report_statuses(data_dir) == {"pass"}


LEFTOVER = ("Error: target tables already hold rows: edge.no_pk (fix: if those rows are not to be kept, empty the "
            "tables (`TRUNCATE edge.no_pk` in the target database), then run the same command again)")


def _fix_followed(cli, dbs, data_dir: Path) -> None:
    with dbs.target() as conn:
        conn.execute("TRUNCATE edge.no_pk")
    again = cli("migrate", *EDGE)
    assert again.exit_code == 0, again.output
    assert report_statuses(data_dir) == {"pass"}


def test_a_target_table_holding_rows_stops_migrate_before_anything_moves(
        cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox) -> None:
    """The rows were found only when the table was to load, after the whole export and every user created in
    Stack Auth, with a fix naming `import --truncate-first`; the dry run passed."""
    with dbs.target() as conn:
        conn.execute("INSERT INTO edge.no_pk (a, b, c) VALUES (1, 'left over', NULL)")
    dry = cli("migrate", "--dry-run", *EDGE)
    assert dry.exit_code == 4, dry.output
    assert error_line(dry.output) == LEFTOVER
    result = cli("migrate", *EDGE)
    assert result.exit_code == 4, result.output
    assert error_line(result.output) == LEFTOVER
    assert step_results(result.output)["import"] == "failed"
    assert stack_auth.create_count() == 0 and not (data_dir / "metadata.json").exists()  # nothing moved before it
    _fix_followed(cli, dbs, data_dir)


def test_a_target_table_holding_rows_stops_migrate_that_keeps_a_finished_export_before_any_user(
        cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox) -> None:
    """The same when `migrate` keeps an export that `supamove export` finished."""
    assert cli("export", *EDGE).exit_code == 0
    with dbs.target() as conn:
        conn.execute("INSERT INTO edge.no_pk (a, b, c) VALUES (1, 'left over', NULL)")
    result = cli("migrate", *EDGE)
    assert result.exit_code == 4, result.output
    assert error_line(result.output) == LEFTOVER
    assert stack_auth.create_count() == 0
    _fix_followed(cli, dbs, data_dir)


def test_failed_users_stop_migrate_with_the_error_of_migrate_users_before_any_user_id_is_loaded(
        cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox) -> None:
    stack_auth.fail_next(1, 400, match="POST /api/v1/users")  # one user refused: migrate-users fails (6)
    result = cli("migrate", *EDGE)
    assert result.exit_code == 6, result.output
    report = data_dir / "user-migration-report.json"
    assert error_line(result.output) == (f"Error: 1 user failed (see {report}) (fix: correct the cause shown for "
                                         "them, then run the same command again)")
    with_ids = {(e["schema"], e["name"]) for e in metadata(data_dir)["tables"] if e["userIdColumns"]}
    assert with_ids and not with_ids & {(s, t) for s, t, _ in import_state(dbs)}  # they wait for every user
    assert not (data_dir / "verification-report.json").exists()
    assert step_results(result.output)["migrate-users"].startswith("failed: ")
    result = cli("migrate", *EDGE)
    assert result.exit_code == 0, result.output
    assert report_statuses(data_dir) == {"pass"}
    assert_users_once(stack_auth, data_dir)


def test_disable_fk_without_the_privilege_stops_migrate_before_anything_moves(
        cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """A target user that may not SET session_replication_role: `migrate --disable-fk` said so only when the
    first table was to load, after the whole export and every user created in Stack Auth; its dry run
    passed."""
    with dbs.target() as conn:
        conn.execute("DROP ROLE IF EXISTS migrate_plain")
        conn.execute("CREATE ROLE migrate_plain LOGIN BYPASSRLS PASSWORD 'plain-pw-456'")
        conn.execute(sql.SQL("GRANT ALL ON DATABASE {} TO migrate_plain").format(sql.Identifier(dbs.target_db)))
        conn.execute("GRANT USAGE, CREATE ON SCHEMA public, edge TO migrate_plain")  # usable, but for --disable-fk:
        for schema, name in conn.execute("SELECT schemaname, tablename FROM pg_tables "  # the tables' owner
                                         "WHERE schemaname IN ('public', 'edge')").fetchall():
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO migrate_plain").format(sql.Identifier(schema, name)))
    monkeypatch.setenv("DATABASE_URL", dbs.target_server.url(dbs.target_db, "migrate_plain", "plain-pw-456"))
    for args in (["--dry-run"], []):
        result = cli("migrate", *EDGE, "--disable-fk", *args)
        assert result.exit_code == 4, result.output
        assert error_line(result.output) == (
            "Error: --disable-fk needs to SET session_replication_role, which this user may not do (fix: run "
            "without --disable-fk (constraints are then checked before each table commits), or use a superuser in "
            "DATABASE_URL)")
        assert step_results(result.output)["import"] == "failed"
    assert not (data_dir / "metadata.json").exists() and not stack_auth.users


def test_a_target_user_not_owning_the_tables_or_a_sequence_stops_migrate_before_anything_moves(
        cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user that may write the tables but does not own them passed test-connections and migrate --dry-run; the
    load refused it only after the whole export and every user created in Stack Auth."""
    with dbs.target() as conn:
        conn.execute("DROP ROLE IF EXISTS migrate_writer")
        conn.execute("CREATE ROLE migrate_writer LOGIN BYPASSRLS PASSWORD 'writer-pw-789'")
        conn.execute(sql.SQL("GRANT ALL ON DATABASE {} TO migrate_writer").format(sql.Identifier(dbs.target_db)))
        conn.execute("GRANT USAGE, CREATE ON SCHEMA public, edge TO migrate_writer")
        conn.execute("GRANT INSERT, SELECT, TRUNCATE ON ALL TABLES IN SCHEMA public, edge TO migrate_writer")
    monkeypatch.setenv("DATABASE_URL", dbs.target_server.url(dbs.target_db, "migrate_writer", "writer-pw-789"))
    checked = cli("test-connections")  # it said ok: INSERT, SELECT and TRUNCATE were all it asked for
    assert checked.exit_code == 1, checked.output
    assert "this user does not own public.alert_subscriptions, " in flat(checked.output)
    give_tables(dbs, "public", "migrate_writer")  # every export reads public; edge's tables stay others'
    checked = cli("test-connections")  # edge is exported only when asked for (--schema): a warning
    assert checked.exit_code == 0, checked.output
    assert "this user does not own edge.Odd Table, edge.cycle_a, " in flat(checked.output)
    assert "an export of their schema (--schema) would not load" in flat(checked.output)
    for line in refused_twice(cli, *EDGE):
        assert line.startswith("Error: the user in DATABASE_URL does not own edge."), line
        assert line.endswith('ALTER TABLE ... OWNER TO "migrate_writer")'), line
    assert not (data_dir / "metadata.json").exists() and not stack_auth.users
    # Every table its own, the sequence no column owns is still another user's: the load set it only after
    # every table was loaded, the export done and the users created.
    give_tables(dbs, "edge", "migrate_writer")
    for line in refused_twice(cli, *EDGE):
        assert line.startswith("Error: the user in DATABASE_URL may not set sequence edge.post_number_seq"), line
        assert line.endswith('TO "migrate_writer")') and "GRANT SELECT, UPDATE ON SEQUENCE " in line, line
    assert not (data_dir / "metadata.json").exists() and not stack_auth.users


def give_tables(dbs: Databases, schema: str, role: str) -> None:
    """The target's tables of `schema` handed to `role` (their owned sequences go with them)."""
    with dbs.target() as conn:
        for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall():
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(schema, name), sql.Identifier(role)))


def refused_twice(cli: Cli, *options: str) -> list[str]:
    """The error lines of `migrate --dry-run` and `migrate`, each refused as the import's (exit 4; the real run's
    import step failed)."""
    lines = []
    for args in (["--dry-run"], []):
        result = cli("migrate", *options, *args)
        assert result.exit_code == 4, result.output
        lines.append(error_line(result.output))
    assert step_results(result.output)["import"] == "failed", result.output
    return lines


def test_a_finished_export_of_another_source_is_not_kept(cli, dbs, data_dir: Path, stack_auth: StackAuthSandbox,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`migrate` keeps a finished export: SUPABASE_DB_URL pointed elsewhere since, it loaded the first database's
    tables with the second's users."""
    assert cli("export", *EDGE).exit_code == 0
    other = f"{dbs.source_db}_b"
    create_database(dbs.source_server, other, "source_template")
    try:
        monkeypatch.setenv("SUPABASE_DB_URL", dbs.source_server.url(other, fixtures.APP_ROLE, APP_PASSWORD))
        result = cli("migrate", *EDGE)
        assert result.exit_code == 2, result.output
        line = error_line(result.output)
        assert line.startswith(f"Error: the export in {data_dir} was read from another database: "), line
        assert line.endswith("(fix: run `supamove export --force` to export everything again from this source, or "
                             "set --data-dir to another directory)"), line
        assert not (data_dir / "user-mapping.json").exists()  # it stopped before any user or table moved
        with dbs.target() as conn:
            assert conn.execute("SELECT to_regclass('_supamove.import_state')").fetchone() == (None,)
    finally:
        with dbs.source() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(other)))


def test_a_finished_export_lacking_what_migrate_selects_is_not_kept(cli, dbs, data_dir: Path,
                                                                   stack_auth: StackAuthSandbox) -> None:
    """An export made with --exclude-tables, then `migrate` without it: the export was kept as it was, the table
    never loaded, and the run ended with exit 0 and "every table verified"."""
    assert cli("export", *EDGE, "--exclude-tables", "public.readings").exit_code == 0
    for args in (["--dry-run"], []):
        result = cli("migrate", *args, *EDGE)
        assert result.exit_code == 2, result.output
        assert error_line(result.output) == (
            f"Error: the finished export in {data_dir} was made with other options than this run's: it lacks 1 of "
            "the tables this run selects: public.readings (fix: give `supamove migrate` the options the export was "
            "made with, or run `supamove export --force` with this run's options to export again)")
    assert not (data_dir / "user-mapping.json").exists()  # it stopped before any user or table moved
    with dbs.target() as conn:
        assert conn.execute("SELECT to_regclass('_supamove.import_state')").fetchone() == (None,)
    remapped = cli("migrate", *EDGE, "--exclude-tables", "public.readings",
                   "--not-user-id-column", "public.alert_subscriptions.notify_user_ids")
    assert remapped.exit_code == 2, remapped.output
    assert "it remaps public.alert_subscriptions.notify_user_ids (--not-user-id-column)" in flat(remapped.output)
    assert cli("migrate", *EDGE, "--exclude-tables", "public.readings").exit_code == 0  # the export's own options


def test_the_summary_names_the_step_that_failed(cli, data_dir: Path, stack_auth: StackAuthSandbox) -> None:
    # An export that stops at its plan: the summary said "finished by a previous run: kept" for it.
    result = cli("migrate", "--tables", "no_such_table")
    assert result.exit_code == 2, result.output
    assert error_line(result.output).startswith("Error: --tables no_such_table matches no table")
    # The steps it never began were missing from the table; they say so now.
    assert step_results(result.output) == {"test-connections": "every endpoint usable", "export": "failed",
                                           "migrate-users": "not started", "import": "not started",
                                           "verify": "not started"}
    summary = orjson.loads(cli("migrate", "--json", "--tables", "no_such_table").stdout)
    assert summary["error"]["step"] == "export" and list(summary["steps"]) == ["test-connections", "export"]
    assert summary["notStarted"] == ["migrate-users", "import", "verify"]


def test_every_setting_at_fault_is_named_at_once_by_its_first_step(cli, dbs, data_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset SUPABASE_DB_URL stopped `migrate` alone, called the export's failure and listed before the
    test-connections it never began; a rerun then found DATABASE_URL's problem, then Stack Auth's. The source
    through the transaction pooler was the export's failure too, with the other endpoints unchecked."""
    monkeypatch.delenv("SUPABASE_DB_URL")  # and no Stack Auth settings: the env fixture sets none
    monkeypatch.delenv("DATABASE_URL")
    result = cli("migrate")
    assert result.exit_code == 1, result.output  # test-connections' own failure and exit code
    out = flat(result.output)
    for fault in ("error: source (SUPABASE_DB_URL): SUPABASE_DB_URL is not set",
                  "error: target (DATABASE_URL): DATABASE_URL is not set",
                  "STACK_AUTH_PROJECT_ID and STACK_AUTH_SECRET_KEY are not set"):
        assert fault in out, out
    assert error_line(result.output) == "Error: not every endpoint is usable (fix: correct the settings named above)"
    assert list(step_results(result.output).items()) == [("test-connections", "failed"), *(
        (step, "not started") for step in STEPS[1:])]
    assert sorted(p.name for p in data_dir.iterdir()) == ["supamove.lock"]  # nothing read, nothing written

    monkeypatch.setenv("SUPABASE_DB_URL", dbs.source_url.replace(f":{dbs.source_server.port}/", ":6543/"))
    monkeypatch.setenv("DATABASE_URL", dbs.target_url)
    summary = orjson.loads(cli("migrate", "--json").stdout)
    assert summary["error"]["step"] == "test-connections" and summary["error"]["exitCode"] == 1
    source, target, _ = summary["connections"]["endpoints"]
    assert "port 6543, Supabase's transaction pooler" in " ".join(source["errors"])
    assert target["reachable"] and not target["errors"]  # checked all the same, as test-connections does
    assert summary["notStarted"] == list(STEPS[1:])
    # A malformed option is the export's, found before any connection: listed in its place all the same.
    result = cli("migrate", "--user-id-column", "bad")
    assert result.exit_code == 2, result.output
    assert list(step_results(result.output).items()) == [("test-connections", "not started"), ("export", "failed"), *(
        (step, "not started") for step in STEPS[2:])]


def test_an_export_failing_midway_shows_the_tables_it_finished(cli, dbs, data_dir: Path,
                                                               stack_auth: StackAuthSandbox) -> None:
    """The summary said only "failed" for an export stopped by a full disk, with the tables it had finished
    (kept for the rerun) unsaid, and --json gave null for them; the steps it stopped before they began were
    missing."""
    make_big_table(dbs)  # about 20 MB: the file size limit stops its file at 2 MB, after the small tables

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))

    for args in ((), ("--json",)):
        done = subprocess.run([sys.executable, "-m", "supamove", "migrate", *EDGE, *args], env={**os.environ, **cli.env},
                              capture_output=True, text=True, preexec_fn=limit, timeout=300)
        output = done.stdout
        assert done.returncode == 1 and "file size limit stopped writing" in done.stderr, done.stderr
        finished = [e for e in metadata(data_dir)["tables"] + metadata(data_dir)["auth"] if e["complete"]]
        assert finished and len(finished) < len(metadata(data_dir)["tables"]) + 3
        rows = sum(e["rowCount"] for e in finished)
        if args:
            summary = orjson.loads(output)
            assert summary["export"] == {"kept": False, "tables": len(finished), "rows": rows}
            assert summary["error"]["step"] == "export"
            assert not set(summary["steps"]) & set(summary["notStarted"])
            assert set(summary["steps"]) | set(summary["notStarted"]) == set(STEPS)
            continue
        shown = step_results(output)
        assert shown["export"] == (f"failed: {len(finished)} table{'s' * (len(finished) > 1)}, {rows:,} rows (kept "
                                   "for a rerun)"), output
        assert list(shown) == list(STEPS), output  # every step, "not started" for those it never began
    result = cli("migrate", *EDGE)  # the rerun keeps them and finishes
    assert result.exit_code == 0, result.output
    assert report_statuses(data_dir) == {"pass"}


def test_a_split_table_loads_as_ranges_once_its_block_ranges_are_joined(cli, dbs, data_dir: Path,
                                                             stack_auth: StackAuthSandbox) -> None:
    make_big_table(dbs)  # about 20 MB: read as 8 block ranges at once, loaded as 2 ranges of its file
    result = cli("migrate", "--split-tables-larger-than", "1")
    assert result.exit_code == 0, result.output
    assert report_statuses(data_dir) == {"pass"}
    assert ("public", "fault_big", BIG_ROWS) in import_state(dbs)
    log = (data_dir.parent / "migration.log").read_text()
    assert log.count("loaded public.fault_big as 2 ranges: ") == 1 and "public.fault_big: checksums computed when" in log


def test_a_sign_up_during_the_freeze_fails_verify_until_the_users_are_carried(cli, dbs, data_dir: Path,
                                                                               stack_auth: StackAuthSandbox) -> None:
    result = cli("migrate", *EDGE)
    assert result.exit_code == 0, result.output
    assert "Supabase Auth's users unchanged since the export" in flat(result.output)
    with dbs.source() as conn:  # sign-ins move only what supamove does not read
        conn.execute("UPDATE auth.users SET last_sign_in_at = now(), updated_at = now()")
        conn.execute("UPDATE auth.identities SET last_sign_in_at = now(), updated_at = now()")
    assert cli("verify").exit_code == 0
    with dbs.source() as conn:  # a sign-up, after the export: not in Stack Auth
        conn.execute("INSERT INTO auth.users (id, aud, role, email, created_at, updated_at) VALUES "
                     "(gen_random_uuid(), 'authenticated', 'authenticated', 'late@example.com', now(), now())")
    result = cli("verify")
    assert result.exit_code == 7, result.output
    assert error_line(result.output) == (
        "Error: Supabase Auth's users are not all in Stack Auth (auth.users): changed on the source since the "
        "export: a sign-up or a change made since is not there (fix: run `supamove export --auth-only`, then "
        "`supamove migrate-users` (it carries only what changed), then `supamove verify` again)")
    report = orjson.loads((data_dir / "verification-report.json").read_bytes())
    users = next(a for a in report["auth"] if a["name"] == "users")
    assert (users["status"], users["sourceRows"] - users["exportedRows"]) == ("fail", 1)
    assert {t["status"] for t in report["tables"]} == {"pass"}  # the application's tables did not move
    assert cli("export", "--auth-only").exit_code == 0  # the fix it gives; the export alone carries nothing
    halfway = cli("verify")
    assert halfway.exit_code == 7, halfway.output
    assert error_line(halfway.output) == (
        "Error: Supabase Auth's users are not all in Stack Auth (auth.users): `supamove migrate-users` has not run "
        "since this auth export: what it holds is not all in Stack Auth (fix: run `supamove migrate-users` (it "
        "carries only what changed), then `supamove verify` again)")
    assert cli("migrate-users").exit_code == 0
    result = cli("verify")
    assert result.exit_code == 0, result.output
    assert "late@example.com" in {u.get("primary_email") for u in stack_auth.users.values()}


def test_a_wrong_option_is_named_before_any_connection(cli, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://postgres:pw@127.0.0.1:1/postgres?sslmode=disable")
    result = cli("migrate", "--dry-run", "--schema", "storage")  # found after test-connections ran and failed
    assert result.exit_code == 2, result.output
    assert error_line(result.output).startswith("Error: schema storage is a Supabase platform schema")
    assert "source (SUPABASE_DB_URL)" not in result.output  # no connection table: none was tried


def test_user_ids_in_text_arrays_and_text_like_columns_are_found_and_remapped(cli, dbs, data_dir: Path,
                                                                           stack_auth: StackAuthSandbox) -> None:
    # Only uuid, uuid[], text, varchar and json columns were read for user ids: in a text[], a varchar(40)[],
    # a char(36) or a citext column (no foreign key, no telling name) they stayed Supabase's, and verify passed.
    for connect in (dbs.source, dbs.target):
        with connect() as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS extensions; CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA extensions")
    ids = "SELECT id FROM public.profiles ORDER BY id OFFSET g"
    app_table(dbs, "teams", "CREATE TABLE public.teams (id integer PRIMARY KEY, members text[], admins varchar(40)[], "
                            "owner char(36), contact extensions.citext, "
                            "owner_key text GENERATED ALWAYS AS ('u:' || owner) STORED)",
              f"INSERT INTO public.teams (id, members, admins, owner, contact) "
              f"SELECT g, ARRAY({ids} LIMIT 3)::text[], ARRAY({ids} LIMIT 2)::varchar(40)[], "
              f"({ids} LIMIT 1), upper(({ids} + 1 LIMIT 1)::text) FROM generate_series(1, 12) g")
    result = cli("migrate", *EDGE)
    assert result.exit_code == 0, result.output
    tables = {t["table"]: t for t in orjson.loads((data_dir / "verification-report.json").read_bytes())["tables"]}
    assert {t["status"] for name, t in tables.items() if name != "teams"} == {"pass"}
    assert tables["teams"]["status"] == "warn"  # owner_key, computed from Stack Auth ids there, is not compared
    assert tables["teams"]["reason"] == ("column owner_key is generated from user ids: not compared (the target "
                                         "computes it from the Stack Auth ids)")
    found = {c["column"] for c in metadata(data_dir)["userIdValueCheck"]["columns"] if c["table"] == "teams"}
    assert found == {"members", "admins", "owner", "contact"}
    stack_ids = set(mapping(data_dir))
    with dbs.target() as conn:
        rows = conn.execute("SELECT members, admins, owner, contact::text FROM public.teams").fetchall()
    values = [v for members, admins, owner, contact in rows for v in [*members, *admins, owner, contact]]
    assert len(values) == 12 * 7 and {v.lower() for v in values} <= stack_ids
