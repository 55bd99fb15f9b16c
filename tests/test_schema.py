"""`supamove schema`: a Supabase application schema made into one a plain PostgreSQL accepts.

The source is the Supabase-shaped fixture plus the `app` schema of tests/sql/supabase_app_schema.sql
(handle_new_user, auth.uid() policies, extensions.citext, grants to Supabase's roles, a publication);
the target is an EMPTY database, so everything it holds comes from supamove.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from conftest import Cli, Databases, create_database, fresh_databases, run_sql_file

from supamove.db import Endpoint
from supamove.errors import ConfigError, SupamoveError, TargetError
from supamove.paths import DataDir
from supamove.sandbox import fixtures
from supamove.sandbox.pgserver import PostgresServer
from supamove.schema import Extension, SchemaOptions, apply_schema, run_schema

APP = ("--schema", "app")
AUTH_USERS_FK = "references auth.users, part of Supabase's platform, not on the target"
API_GRANTS = "Supabase's API roles (--keep-roles keeps them)"
# Every object of the app schema, and the Supabase-only objects around it, with its decision and reason.
APP_REPORT = {
    ("SCHEMA", None, "app"): ("changed", "created with CREATE SCHEMA IF NOT EXISTS (the target may have it already)"),
    ("ACL", None, "SCHEMA app"): ("left-out", f"grants to anon, authenticated, service_role, {API_GRANTS}"),
    ("TYPE", "app", "note_kind"): ("kept", ""),
    ("DOMAIN", "app", "score"): ("kept", ""),
    ("FUNCTION", "app", "handle_new_user()"): (
        "left-out", "only serves on_auth_user_created on auth.users, which is left out"),
    ("FUNCTION", "app", "note_count(uuid)"): ("kept", ""),
    ("TABLE", "app", "events"): ("kept", ""),
    ("SEQUENCE", "app", "events_id_seq"): ("kept", ""),
    ("SEQUENCE OWNED BY", "app", "events_id_seq"): ("kept", ""),
    ("TABLE", "app", "events_2024"): ("kept", ""),
    ("TABLE", "app", "events_2025"): ("kept", ""),
    ("SEQUENCE", "app", "invoice_number_seq"): ("kept", ""),
    ("TABLE", "app", "invoices"): ("kept", ""),
    ("ACL", "app", "TABLE invoices"): ("left-out", f"grants to service_role, {API_GRANTS}"),
    ("TABLE", "app", "notes"): ("kept", ""),
    ("ACL", "app", "TABLE notes"): ("left-out", f"grants to anon, authenticated, {API_GRANTS}"),
    ("MATERIALIZED VIEW", "app", "note_totals"): (
        "kept", "created empty: `supamove import` refreshes it once every table is loaded"),
    ("SEQUENCE", "app", "notes_id_seq"): ("kept", ""),
    ("TABLE", "app", "profiles"): ("kept", "uses extension citext"),
    ("COMMENT", "app", "TABLE profiles"): ("kept", ""),
    ("ACL", "app", "TABLE profiles"): ("left-out", f"grants to anon, authenticated, {API_GRANTS}"),
    ("VIEW", "app", "profile_notes"): ("kept", "uses extension citext"),
    ("VIEW", "app", "user_emails"): ("left-out", "uses auth.users, part of Supabase's platform, not on the target"),
    ("TABLE ATTACH", "app", "events_2024"): ("kept", ""),
    ("TABLE ATTACH", "app", "events_2025"): ("kept", ""),
    ("DEFAULT", "app", "events id"): ("kept", ""),
    ("CONSTRAINT", "app", "events events_pkey"): ("kept", ""),
    ("CONSTRAINT", "app", "events_2024 events_2024_pkey"): ("kept", ""),
    ("CONSTRAINT", "app", "events_2025 events_2025_pkey"): ("kept", ""),
    ("CONSTRAINT", "app", "invoices invoices_pkey"): ("kept", ""),
    ("CONSTRAINT", "app", "notes notes_pkey"): ("kept", ""),
    ("CONSTRAINT", "app", "profiles profiles_email_key"): ("kept", "uses extension citext"),  # its index's opclass
    ("CONSTRAINT", "app", "profiles profiles_pkey"): ("kept", ""),
    ("INDEX", "app", "notes_owner_idx"): ("kept", ""),
    ("INDEX ATTACH", "app", "events_2024_pkey"): ("kept", ""),
    ("INDEX ATTACH", "app", "events_2025_pkey"): ("kept", ""),
    ("FK CONSTRAINT", "app", "invoices invoices_owner_id_fkey"): ("left-out", AUTH_USERS_FK),
    ("FK CONSTRAINT", "app", "notes notes_owner_id_fkey"): ("kept", ""),
    ("FK CONSTRAINT", "app", "profiles profiles_id_fkey"): ("left-out", AUTH_USERS_FK),
    ("POLICY", "app", "notes Authenticated users write their notes"): (
        "left-out", "applies to authenticated, Supabase's API role (--keep-roles creates it)"),
    ("POLICY", "app", "notes Owners read their notes"): (
        "changed", "calls auth.uid(): provided by the target's auth compatibility schema"),
    ("ROW SECURITY", "app", "notes"): ("kept", ""),
    ("TRIGGER", "auth", "users on_auth_user_created"): (
        "left-out", "runs app.handle_new_user() on Supabase's auth.users, which the target does not have "
                    "(sign-ups go through Stack Auth)"),
    ("PUBLICATION", None, "supabase_realtime"): (
        "left-out", "logical replication for Realtime (app.notes, public.alerts): not moved"),
    ("EVENT TRIGGER", None, "pgrst_ddl_watch"): (
        "left-out", "runs extensions.pgrst_ddl_watch() on ddl_command_end (a Supabase service hook): not moved"),
    ("EVENT TRIGGER", None, "pgrst_drop_watch"): (
        "left-out", "runs extensions.pgrst_drop_watch() on sql_drop (a Supabase service hook): not moved"),
    ("CRON JOB", "cron", "freshtrack-offline-sensor-sweep"): (
        "left-out", "pg_cron job (*/5 * * * *: SELECT 1): schedule it on the target by hand"),
}
APP_TABLES = ["app.events", "app.events_2024", "app.events_2025", "app.invoices", "app.notes", "app.profiles"]


@pytest.fixture(scope="session")
def app_source_template(pg_source: PostgresServer, source_template: str) -> str:
    """The shared Supabase-shaped source plus the `app` schema and its rows."""
    url = create_database(pg_source, "app_source_template", source_template)
    run_sql_file(url, "supabase_app_schema.sql")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return "app_source_template"


@pytest.fixture
def dbs(pg_source: PostgresServer, pg_target: PostgresServer, app_source_template: str) -> Iterator[Databases]:
    """This module's databases: the app source, and a target database with nothing in it."""
    with fresh_databases(pg_source, pg_target, app_source_template, None) as databases:
        yield databases


def report_entries(report: dict[str, Any]) -> dict[tuple[str, str | None, str], tuple[str, str]]:
    return {(o["type"], o["schema"], o["name"]): (o["decision"], o["reason"]) for o in report["objects"]}


def target_tables(dbs: Databases, schema: str = "app") -> list[str]:
    with dbs.target() as conn:
        rows = conn.execute("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE nspname = %s AND relkind IN ('r', 'p') ORDER BY 1", (schema,)).fetchall()
    return [f"{schema}.{r[0]}" for r in rows]


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_report_lists_every_object_with_its_decision(cli: Cli, dbs: Databases, data_dir: Path) -> None:
    dry = cli("schema", *APP, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "Dry run: 31 objects kept, 2 changed, 14 left out. Nothing was written." in dry.output
    assert "Extensions: citext (schema extensions)." in dry.output
    assert not data_dir.exists() or not list(data_dir.iterdir())

    result = cli("schema", *APP)
    assert result.exit_code == 0, result.output
    report = orjson.loads((data_dir / "schema-report.json").read_bytes())
    assert report_entries(report) == APP_REPORT
    assert report["formatVersion"] == 1
    assert report["summary"] == {"kept": 31, "changed": 2, "leftOut": 14}
    assert report["tables"] == APP_TABLES
    assert report["extensions"] == [{"name": "citext", "schema": "extensions", "version": "1.6"}]
    for name in ("schema.sql", "schema-report.json"):
        assert (data_dir / name).stat().st_mode & 0o777 == 0o600
    text = (data_dir / "schema.sql").read_text()
    assert 'CREATE EXTENSION IF NOT EXISTS "citext" WITH SCHEMA "extensions" CASCADE;' in text
    assert "CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid" in text
    for left_out in ("FUNCTION app.handle_new_user", "REFERENCES auth.users", "FROM auth.users", "\\restrict",
                     "TO anon", "TO authenticated", "TO service_role", "PUBLICATION"):
        assert left_out not in text
    assert target_tables(dbs) == []  # without --apply the target is untouched


def test_whole_runbook_from_an_empty_target_passes_verify(cli: Cli, dbs: Databases, data_dir: Path,
                                                          stack_auth: Any) -> None:
    both = ("--schema", "public", "--schema", "app")
    applied = cli("schema", *both, "--apply")
    assert applied.exit_code == 0, applied.output
    assert "Applied to the target" in applied.output and "in one transaction: 15 tables" in applied.output
    again = cli("schema", *both, "--apply")  # run again (a Ctrl-C came once it had committed): its work is done
    assert again.exit_code == 0, again.output
    assert "This schema.sql was applied to the target" in again.output and "nothing to do" in again.output
    other = cli("schema", "--schema", "app", "--apply")  # another schema.sql over it: refused, the earlier one named
    assert other.exit_code == TargetError.exit_code, other.output
    assert "; they come from another schema.sql, applied at " in error_line(other.output)
    assert cli("schema", *both).exit_code == 0  # the files back as the target has them, for the steps below
    for step in (("export", *both), ("migrate-users",), ("import",), ("verify",)):
        result = cli(*step)
        assert result.exit_code == 0, f"supamove {' '.join(step)}:\n{result.output}"
    verification = orjson.loads((data_dir / "verification-report.json").read_bytes())
    statuses = {f"{t['schema']}.{t['table']}": t["status"] for t in verification["tables"]}
    assert {t for t in statuses if t.startswith("app.")} == {"app.events", "app.invoices", "app.notes", "app.profiles"}
    assert set(statuses.values()) == {"pass"}, statuses
    mapping = orjson.loads((data_dir / "user-mapping.json").read_bytes())
    policy_filters_by_jwt_sub(dbs, mapping)


def test_materialized_views_are_refreshed_by_the_import_and_checked_by_verify(cli: Cli, dbs: Databases,
                                                                              data_dir: Path, stack_auth: Any) -> None:
    """Each materialized view is refreshed after those it reads; verify fails one left empty until the
    import runs again."""
    with dbs.source() as conn:  # reads app.note_totals: refreshed before it (in name order), it would fail
        # Created by the superuser, as Supabase's own objects are: the source's postgres user cannot read it.
        conn.execute("CREATE MATERIALIZED VIEW app.note_kinds AS SELECT count(*) AS kinds FROM app.note_totals")
        # Left empty on the source: not refreshed on the target either (here, a refresh would fail).
        conn.execute("CREATE MATERIALIZED VIEW app.unused AS SELECT 1 / 0 AS boom WITH NO DATA")
        # Reads app.note_totals in a function's body, which pg_depend does not record: planned first (in name
        # order), its refresh finds app.note_totals not populated yet and is tried again after it.
        conn.execute("CREATE FUNCTION app.note_total_count() RETURNS bigint LANGUAGE sql STABLE "
                     "AS 'SELECT sum(notes) FROM app.note_totals'")
        conn.execute("CREATE MATERIALIZED VIEW app.a_counted AS SELECT app.note_total_count() AS notes")
    both = ("--schema", "public", "--schema", "app")
    for step in (("schema", *both, "--apply"), ("export", *both), ("migrate-users",)):
        result = cli(*step)
        assert result.exit_code == 0, f"supamove {' '.join(step)}:\n{result.output}"
    recorded = orjson.loads((data_dir / "metadata.json").read_bytes())["materializedViews"]
    assert recorded == [{"schema": "app", "name": n, "populated": p}
                        for n, p in (("a_counted", True), ("note_kinds", True), ("note_totals", True),
                                     ("unused", False))]
    planned = cli("import", "--dry-run")
    assert planned.exit_code == 0, planned.output
    assert ("Materialized views refreshed once every table is loaded: app.a_counted, app.note_totals, "
            "app.note_kinds." in " ".join(planned.output.split()))
    imported = cli("import")
    assert imported.exit_code == 0, imported.output
    assert ("Refreshed 3 materialized views from the loaded tables: app.note_totals, app.note_kinds, "
            "app.a_counted." in " ".join(imported.output.split()))
    query = "SELECT kind::text, notes FROM app.note_totals ORDER BY 1"
    with dbs.source() as source, dbs.target() as target:
        assert target.execute(query).fetchall() == source.execute(query).fetchall() != []
        assert target.execute("SELECT kinds FROM app.note_kinds").fetchone() == (3,)
        assert target.execute("SELECT notes FROM app.a_counted").fetchone() == \
            source.execute("SELECT notes FROM app.a_counted").fetchone()
    verified = cli("verify")
    assert verified.exit_code == 0, verified.output
    assert ("materialized view app.note_kinds: rows not compared (source: permission denied for materialized "
            "view note_kinds)") in " ".join(verified.output.split())

    with dbs.target() as target:
        target.execute("REFRESH MATERIALIZED VIEW app.note_kinds WITH NO DATA")
    failed = cli("verify")
    assert failed.exit_code == 7, failed.output
    assert ("Error: 1 materialized view is not ready on the target: materialized view app.note_kinds is not "
            "populated in the target: reading it fails") in failed.output
    report = orjson.loads((data_dir / "verification-report.json").read_bytes())
    assert [(v["name"], v["sourceRows"], v["targetRows"], v["status"]) for v in report["materializedViews"]] == [
        ("a_counted", None, 1, "warn"), ("note_kinds", None, None, "fail"), ("note_totals", 3, 3, "pass"),
        ("unused", None, None, "pass")]
    assert report["summary"]["materializedViewsFailed"] == 1

    again = cli("import")  # every table loaded already: only the whole-load work runs again
    assert again.exit_code == 0 and "Refreshed 3 materialized views" in again.output, again.output
    assert cli("verify").exit_code == 0

    with dbs.source() as conn:  # one the target never got
        conn.execute("CREATE MATERIALIZED VIEW app.late AS SELECT 1 AS one")
    missing = cli("verify")
    assert missing.exit_code == 7
    assert "materialized view app.late does not exist in the target" in " ".join(missing.output.split())


def policy_filters_by_jwt_sub(dbs: Databases, mapping: dict[str, Any]) -> None:
    """The kept policy `owner_id = auth.uid()` shows a non-owner role only the token's user's notes."""
    with dbs.source() as conn:
        owner, notes = conn.execute("SELECT owner_id::text, count(*) FROM app.notes GROUP BY 1 ORDER BY 1 "
                                    "LIMIT 1").fetchone()  # type: ignore[misc]
    stack_id = next(u["stackAuthUserId"] for u in mapping["mappings"] if u["supabaseUserId"] == owner)
    with dbs.target() as conn:
        conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'schema_test_reader') "
                     "THEN CREATE ROLE schema_test_reader NOLOGIN; END IF; END $$")
        conn.execute("GRANT USAGE ON SCHEMA app TO schema_test_reader")
        conn.execute("GRANT SELECT ON app.notes TO schema_test_reader")
        with conn.transaction():
            conn.execute("SET LOCAL ROLE schema_test_reader")
            assert conn.execute("SELECT count(*) FROM app.notes").fetchone() == (0,)  # no token, no rows
            claims = orjson.dumps({"sub": stack_id, "role": "authenticated"}).decode()
            conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims,))
            seen = conn.execute("SELECT DISTINCT owner_id::text, count(*) OVER () FROM app.notes").fetchall()
    assert seen == [(stack_id, notes)]
    assert notes > 0


def test_a_target_holding_a_table_is_refused_and_left_as_it_was(cli: Cli, dbs: Databases) -> None:
    with dbs.target() as conn:
        conn.execute("CREATE SCHEMA app; CREATE TABLE app.notes (id integer); CREATE TABLE app.invoices (n integer)")
    result = cli("schema", *APP, "--apply")
    assert result.exit_code == TargetError.exit_code, result.output
    assert error_line(result.output) == (
        "Error: the target already has 2 of the tables: app.invoices, app.notes "
        "(fix: apply the schema to an empty database, or drop those tables first)")
    assert target_tables(dbs) == ["app.invoices", "app.notes"]


def test_without_the_shim_with_roles(cli: Cli, dbs: Databases, data_dir: Path) -> None:
    result = cli("schema", *APP, "--no-auth-shim", "--keep-roles", "--apply")
    assert result.exit_code == 0, result.output
    entries = report_entries(orjson.loads((data_dir / "schema-report.json").read_bytes()))
    assert entries[("POLICY", "app", "notes Owners read their notes")] == (
        "left-out", "calls auth.uid() (--no-auth-shim)")
    assert entries[("POLICY", "app", "notes Authenticated users write their notes")] == (
        "left-out", "calls auth.uid() (--no-auth-shim)")
    assert entries[("ACL", "app", "TABLE notes")] == (
        "kept", "grants to anon, authenticated (created NOLOGIN by --keep-roles)")
    assert "auth.uid()" not in (data_dir / "schema.sql").read_text()
    with dbs.target() as conn:
        assert conn.execute("SELECT to_regnamespace('auth')").fetchone() == (None,)
        assert conn.execute("SELECT has_table_privilege('authenticated', 'app.notes', 'SELECT'), "
                            "has_table_privilege('service_role', 'app.invoices', 'INSERT'), "
                            "(SELECT rolcanlogin FROM pg_roles WHERE rolname = 'anon')").fetchone() == (True, True, False)
    assert target_tables(dbs) == APP_TABLES


def test_excluded_tables_take_their_constraints_and_grants_along(dbs: Databases, tmp_path: Path) -> None:
    source = Endpoint(dbs.source_url, "source")
    options = SchemaOptions(["app"], exclude_tables=["invoices"])
    result = run_schema(source, None, DataDir(tmp_path / "data"), options, dry_run=True)
    decided = {(e.type, e.name): (e.decision, e.reason) for e in result.report.objects}
    assert decided[("TABLE", "invoices")] == ("left-out", "not selected (--tables, --exclude-tables)")
    assert decided[("CONSTRAINT", "invoices invoices_pkey")] == (
        "left-out", "depends on TABLE app.invoices, left out")
    assert decided[("SEQUENCE", "invoice_number_seq")] == ("kept", "")
    assert "app.invoices" not in result.report.tables
    assert not (tmp_path / "data").exists()


def test_a_table_pattern_that_selects_nothing_is_refused_as_by_the_export(cli: Cli, dbs: Databases,
                                                                         data_dir: Path) -> None:
    """A mistyped --tables wrote (and --apply created) a schema of types and functions without one table,
    and exited 0: the export then stopped at the same pattern, with the target already built."""
    listed = "the tables of app are: app.events, app.invoices, app.notes, app.profiles"
    for args in (("--tables", "invoice"), ("--tables", "public.invoices")):
        result = cli("schema", *APP, *args, "--apply")
        assert result.exit_code == 2, result.output
        assert error_line(result.output) == (
            f"Error: --tables {args[1]} matches no table; {listed} (fix: check the pattern (name or schema.name, "
            "shell patterns such as 'readings*'))")
    excluded = cli("schema", *APP, "--exclude-tables", "*", "--dry-run")
    assert excluded.exit_code == 2, excluded.output
    assert error_line(excluded.output) == (
        f"Error: --exclude-tables * leaves no table to create; {listed} (fix: exclude fewer tables)")
    assert not (data_dir / "schema.sql").exists() and target_tables(dbs) == []
    assert cli("schema", *APP, "--tables", "invoices", "--tables", "auth.users", "--dry-run").exit_code == 0


def test_a_table_the_source_user_may_not_read_is_named_and_leaving_it_out_is_enough(cli: Cli, dbs: Databases,
                                                                                   data_dir: Path) -> None:
    """pg_dump locks every table it dumps: one the user may not read stopped `schema` with pg_dump's error,
    even when --exclude-tables left it out as the export's message advises."""
    with dbs.source() as conn:
        conn.execute("CREATE TABLE app.audit_trail (id int PRIMARY KEY, note text)")
        conn.execute("CREATE TABLE app.audit_2025 (id int PRIMARY KEY)")  # a second, to show the list
        conn.execute("CREATE TABLE app.trail_refs (id int PRIMARY KEY, audit_id int REFERENCES app.audit_trail)")
        conn.execute("CREATE VIEW app.trail_notes AS SELECT note FROM app.audit_trail")
        conn.execute(f"GRANT SELECT ON app.trail_refs, app.trail_notes TO {fixtures.APP_ROLE}")
        conn.execute(f"REVOKE ALL ON app.audit_trail, app.audit_2025 FROM PUBLIC, {fixtures.APP_ROLE}")
    refused = cli("schema", *APP, "--dry-run")
    assert refused.exit_code == 3, refused.output
    assert error_line(refused.output) == (
        "Error: the user in SUPABASE_DB_URL may not read app.audit_2025, app.audit_trail (fix: on the source, GRANT "
        "SELECT ON \"app\".\"audit_2025\", \"app\".\"audit_trail\" TO that user (and USAGE on its schema); or use the postgres user; "
        "or leave them out with --exclude-tables)")
    applied = cli("schema", *APP, "--exclude-tables", "app.audit*", "--apply")
    assert applied.exit_code == 0, applied.output  # its foreign key and its view left out with it
    assert target_tables(dbs) == sorted([*APP_TABLES, "app.trail_refs"])
    assert "app.audit_" not in (data_dir / "schema.sql").read_text()
    decided = {(o["type"], o["name"]): (o["decision"], o["reason"])
               for o in orjson.loads((data_dir / "schema-report.json").read_bytes())["objects"]}
    unread = "TABLE app.audit_trail, left out (not selected; the source's user may not read it)"
    assert decided[("FK CONSTRAINT", "trail_refs trail_refs_audit_id_fkey")] == ("left-out", "references " + unread)
    assert decided[("VIEW", "trail_notes")] == ("left-out", "uses " + unread)


def test_an_extension_the_target_lacks_is_refused_before_anything_is_applied(dbs: Databases,
                                                                           tmp_path: Path) -> None:
    datadir = DataDir(tmp_path / "data").ensure()
    datadir.schema_sql.write_text("CREATE TABLE public.should_not_exist (id integer);")
    missing = Extension("supamove_no_such_extension", "extensions", "1.0")
    with pytest.raises(TargetError) as failure:
        apply_schema(Endpoint(dbs.target_url, "target"), datadir, ["public.should_not_exist"], [missing])
    assert str(failure.value) == (
        "the target cannot create extension supamove_no_such_extension: not installed on its server (fix: install "
        "it on the target's server (citext, pg_trgm, uuid-ossp and the like are in the postgresql-contrib package), "
        "then run `supamove schema --apply` again)")
    assert target_tables(dbs, "public") == []


def test_a_statement_the_target_refuses_applies_nothing(dbs: Databases, tmp_path: Path) -> None:
    datadir = DataDir(tmp_path / "data").ensure()
    datadir.schema_sql.write_text("CREATE TABLE public.first (id integer);\nCREATE TABLE public.first (id integer);\n")
    with pytest.raises(TargetError) as failure:
        apply_schema(Endpoint(dbs.target_url, "target"), datadir, ["public.first"], [])
    assert str(failure.value) == (
        'the target refused schema.sql: relation "first" already exists; nothing was applied (fix: correct the '
        f"statement in {datadir.schema_sql} (or its cause on the source), then run `supamove schema --apply` again)")
    assert target_tables(dbs, "public") == []


def test_a_pg_dump_older_than_the_source_is_a_clear_error(cli: Cli, dbs: Databases, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "old-postgres" / "bin"
    bindir.mkdir(parents=True)
    for program in ("pg_dump", "pg_restore"):
        (bindir / program).write_text(f"#!/bin/sh\necho '{program} (PostgreSQL) 12.22'\n")
        (bindir / program).chmod(0o755)
    monkeypatch.setenv("PG_BINDIR", str(bindir))
    with dbs.source() as conn:
        major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000  # type: ignore[index]
    result = cli("schema", *APP, "--dry-run")
    assert result.exit_code == ConfigError.exit_code, result.output  # was 1, the code of an unexpected error
    fix = (f"(fix: install PostgreSQL {major}'s client programs (apt-get install postgresql-client-{major}) or newer, "
           "or set PG_BINDIR to the bin folder of such an installation)")
    assert error_line(result.output) == (
        f"Error: pg_dump 12 ({bindir / 'pg_dump'}) is older than the source server (PostgreSQL {major}); it cannot "
        f"read its catalog {fix}")
    for program in ("pg_dump", "pg_restore"):  # none at all: the same code, for schema and schema --apply
        (bindir / program).unlink()
    for args in (("--dry-run",), ("--apply",)):
        result = cli("schema", *APP, *args)
        assert result.exit_code == ConfigError.exit_code, result.output
        assert error_line(result.output) == f"Error: pg_dump not found in PG_BINDIR {fix}"


def test_real_world_shapes_apply_whole(cli: Cli, dbs: Databases, data_dir: Path) -> None:
    """Each of these made `schema --apply` fail (or, the schema with a space, create nothing and exit 0)."""
    with dbs.source() as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA extensions")
        conn.execute("CREATE EXTENSION IF NOT EXISTS cube WITH SCHEMA extensions")
        conn.execute("CREATE EXTENSION IF NOT EXISTS earthdistance WITH SCHEMA extensions")
        conn.execute('CREATE SCHEMA "My App"')
        conn.execute('CREATE TABLE "My App"."T 1" (id integer PRIMARY KEY, room integer, during tstzrange, '
                     "place extensions.earth, EXCLUDE USING gist (room WITH =, during WITH &&))")
        conn.execute('ALTER DEFAULT PRIVILEGES IN SCHEMA "My App" GRANT ALL ON TABLES TO anon')  # Supabase's own kind
        conn.execute("CREATE ROLE app_reader NOLOGIN")
        conn.execute('ALTER TABLE "My App"."T 1" ENABLE ROW LEVEL SECURITY')
        conn.execute('CREATE POLICY "readers read" ON "My App"."T 1" FOR SELECT TO app_reader USING (true)')
        conn.execute('CREATE FUNCTION "My App".user_count() RETURNS bigint LANGUAGE plpgsql AS '
                     "$$BEGIN RETURN (SELECT count(*) FROM auth.users); END$$")  # a body pg_depend does not read
        conn.execute('CREATE FUNCTION "My App".me() RETURNS uuid LANGUAGE sql AS $$SELECT auth.uid()$$')  # the shim's
        conn.execute(f'GRANT USAGE ON SCHEMA "My App" TO {fixtures.APP_ROLE}')
        conn.execute(f'GRANT SELECT ON "My App"."T 1" TO {fixtures.APP_ROLE}')
    try:
        result = cli("schema", "--schema", "My App", "--apply")
        assert result.exit_code == 0, result.output
        entries = report_entries(orjson.loads((data_dir / "schema-report.json").read_bytes()))
        assert entries[("TABLE", "My App", "T 1")] == ("kept", "uses extension earthdistance")
        assert entries[("POLICY", "My App", "T 1 readers read")] == (
            "left-out", "applies to app_reader: app_reader is a role of the source; create it on the target, then "
                        "the policy, by hand")
        assert entries[("FUNCTION", "My App", "user_count()")] == (
            "kept", "its body names auth.users, part of Supabase's platform, not on the target: a call fails there "
                    "until it is rewritten")
        assert entries[("FUNCTION", "My App", "me()")] == ("kept", "")
        assert [v for k, v in entries.items() if k[0] == "DEFAULT ACL"] == [(
            "left-out", "default privileges of the source's roles for objects created later: set your own on the "
                        "target if you want them")]
        with dbs.target() as conn:
            assert target_tables(dbs, "My App") == ["My App.T 1"]
            extensions = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
            assert {"btree_gist", "cube", "earthdistance"} <= extensions  # cube for earthdistance, by CASCADE
            assert conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'x'").fetchone() == (1,)
    finally:
        with dbs.source() as conn:  # a role is the server's, not the database's
            conn.execute('DROP POLICY "readers read" ON "My App"."T 1"')
            conn.execute("DROP ROLE app_reader")


def test_full_text_search_collations_and_a_partitioned_table_referencing_auth_users_apply(
        cli: Cli, dbs: Databases, data_dir: Path) -> None:
    # initdb's `english` and "en-x-icu" were taken for Supabase's platform (pg_catalog), so a table using them
    # stopped the step and an index on to_tsvector('english', ...) was left out; a partition's copy of its
    # parent's foreign key to auth.users was charged to the partition, which stopped the step too.
    with dbs.source() as conn:
        conn.execute("""
            CREATE SCHEMA fts;
            CREATE TEXT SEARCH CONFIGURATION fts.plain_english (COPY = english);
            CREATE TABLE fts.notes (id integer PRIMARY KEY, body text, title text COLLATE "en-x-icu",
                search tsvector GENERATED ALWAYS AS (to_tsvector('english', body)) STORED);
            CREATE INDEX notes_fts ON fts.notes USING gin (to_tsvector('english', body));
            CREATE TABLE fts.activity (id bigint GENERATED BY DEFAULT AS IDENTITY, at timestamptz NOT NULL,
                actor uuid REFERENCES auth.users (id) ON DELETE CASCADE, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
            CREATE TABLE fts.activity_2024 PARTITION OF fts.activity FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
            CREATE TABLE fts.activity_default PARTITION OF fts.activity DEFAULT""")
        conn.execute(f"GRANT USAGE ON SCHEMA fts TO {fixtures.APP_ROLE}; "
                     f"GRANT SELECT ON ALL TABLES IN SCHEMA fts TO {fixtures.APP_ROLE}")
    result = cli("schema", "--schema", "fts", "--apply")
    assert result.exit_code == 0, result.output
    entries = report_entries(orjson.loads((data_dir / "schema-report.json").read_bytes()))
    assert entries[("INDEX", "fts", "notes_fts")] == ("kept", "")
    assert entries[("FK CONSTRAINT", "fts", "activity activity_actor_fkey")] == (
        "left-out", "references auth.users, part of Supabase's platform, not on the target")
    assert target_tables(dbs, "fts") == ["fts.activity", "fts.activity_2024", "fts.activity_default", "fts.notes"]
    with dbs.target() as conn:
        conn.execute("INSERT INTO fts.notes (id, body, title) VALUES (1, 'the quick brown foxes', 'Fox')")
        assert conn.execute("SELECT search::text, title COLLATE \"C\" FROM fts.notes").fetchone() == (
            "'brown':3 'fox':4 'quick':2", "Fox")
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'notes_fts'").fetchone() == (1,)
        assert conn.execute("SELECT to_tsvector('fts.plain_english', 'foxes')::text").fetchone() == ("'fox':1",)


def test_an_object_of_a_schema_not_selected_is_named_with_the_option_that_brings_it(cli: Cli, dbs: Databases) -> None:
    with dbs.source() as conn:  # a default's sequence in another schema
        conn.execute("CREATE SCHEMA shared; CREATE SEQUENCE shared.ticket_no; CREATE SCHEMA ids")
        conn.execute("CREATE TABLE ids.tickets (id bigint PRIMARY KEY DEFAULT nextval('shared.ticket_no'))")
        conn.execute(f"GRANT USAGE ON SCHEMA ids, shared TO {fixtures.APP_ROLE}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA ids TO {fixtures.APP_ROLE}")
        conn.execute(f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA shared TO {fixtures.APP_ROLE}")
    result = cli("schema", "--schema", "ids", "--apply")
    assert result.exit_code == TargetError.exit_code, result.output
    assert error_line(result.output).endswith(
        "(fix: schema.sql uses an object of schema shared, which this run did not select: add --schema shared "
        "(to `supamove export` too), then run `supamove schema --apply` again)")
    assert cli("schema", "--schema", "ids", "--schema", "shared", "--apply").exit_code == 0


def test_a_partition_in_a_schema_not_selected_is_named_with_the_option_that_brings_it(cli: Cli, dbs: Databases) -> None:
    # It was left out without a word: the export reads its rows through the partitioned table, and the import
    # then found no partition for them ("correct the value or the target column type").
    with dbs.source() as conn:
        conn.execute("CREATE SCHEMA logs; CREATE SCHEMA archive; "
                     "CREATE TABLE logs.events (at date NOT NULL, what text) PARTITION BY RANGE (at); "
                     "CREATE TABLE logs.events_now PARTITION OF logs.events FOR VALUES FROM ('2024-01-01') TO ('2030-01-01'); "
                     "CREATE TABLE archive.events_2023 PARTITION OF logs.events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01')")
        conn.execute(f"GRANT USAGE ON SCHEMA logs, archive TO {fixtures.APP_ROLE}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA logs, archive TO {fixtures.APP_ROLE}")
    for args in (("--dry-run",), ("--apply",)):
        result = cli("schema", "--schema", "logs", *args)
        assert result.exit_code == 2, result.output
        assert error_line(result.output) == (
            "Error: partition archive.events_2023 of logs.events is in schema archive, which this run does not select "
            "(fix: add --schema archive (to `supamove export` too))")
    assert cli("schema", "--schema", "logs", "--schema", "archive", "--apply").exit_code == 0
    assert target_tables(dbs, "archive") == ["archive.events_2023"]


def test_a_default_calling_auth_uid_without_the_shim_is_a_wrong_option(cli: Cli, dbs: Databases) -> None:
    with dbs.source() as conn:
        conn.execute("CREATE SCHEMA owned; CREATE TABLE owned.notes (id integer PRIMARY KEY, "
                     "owner_id uuid DEFAULT auth.uid())")
        conn.execute(f"GRANT USAGE ON SCHEMA owned TO {fixtures.APP_ROLE}")
        conn.execute(f"GRANT SELECT ON owned.notes TO {fixtures.APP_ROLE}")
    refused = cli("schema", "--schema", "owned", "--no-auth-shim", "--dry-run")
    assert refused.exit_code == 2, refused.output  # it exited 1, as for a fault of the source's
    assert error_line(refused.output) == (
        "Error: table owned.notes uses auth.uid() (Supabase's platform), so it cannot be created on the target "
        "without the auth compatibility schema (fix: drop --no-auth-shim)")
    assert cli("schema", "--schema", "owned", "--dry-run").exit_code == 0


def test_schema_all_is_every_application_schema_as_for_the_export(cli: Cli, dbs: Databases) -> None:
    # `schema` takes the export's selection, but stopped on this one: 'schema all does not exist in the source'.
    planned = cli("export", "--schema", "all", "--not-user-id-column", "billing.payments.payer_ref", "--dry-run", "--json")
    assert planned.exit_code == 0, planned.output
    schemas = orjson.loads(planned.stdout)["schemas"]
    assert {"app", "billing", "edge", "public"} <= set(schemas)
    result = cli("schema", "--schema", "all", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert {t.partition(".")[0] for t in orjson.loads(result.stdout)["tables"]} == set(schemas)
    refused = cli("schema", "--schema", "all", "--schema", "auth", "--dry-run")
    assert refused.exit_code == 2
    assert error_line(refused.output).startswith("Error: schema auth is a Supabase platform schema")


def test_an_extension_named_only_in_a_function_body_is_created_on_the_target(cli: Cli, dbs: Databases,
                                                                             data_dir: Path) -> None:
    # pg_depend does not read a function's body: an extension only a body named (the immutable unaccent wrapper of
    # a search index, pgcrypto's crypt() in a plpgsql function) was not created, so the index stopped the apply and
    # the function failed on its first call.
    with dbs.source() as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS unaccent WITH SCHEMA extensions")
        conn.execute("CREATE SCHEMA search; CREATE TABLE search.posts (id integer PRIMARY KEY, title text NOT NULL)")
        conn.execute("CREATE FUNCTION search.f_unaccent(text) RETURNS text LANGUAGE sql IMMUTABLE STRICT "
                     "AS $$ SELECT extensions.unaccent('extensions.unaccent', $1) $$")
        conn.execute("CREATE INDEX posts_title ON search.posts (search.f_unaccent(title))")
        conn.execute("CREATE FUNCTION search.hashed(pw text) RETURNS text LANGUAGE plpgsql SET search_path = '' "
                     "AS $$BEGIN RETURN extensions.crypt(pw, extensions.gen_salt('bf', 4)); END$$")
        conn.execute(f"GRANT USAGE ON SCHEMA search TO {fixtures.APP_ROLE}; "
                     f"GRANT SELECT ON ALL TABLES IN SCHEMA search TO {fixtures.APP_ROLE}")
    result = cli("schema", "--schema", "search", "--apply")
    assert result.exit_code == 0, result.output
    report = orjson.loads((data_dir / "schema-report.json").read_bytes())
    assert {x["name"] for x in report["extensions"]} == {"pgcrypto", "unaccent"}
    entries = report_entries(report)
    assert entries[("FUNCTION", "search", "f_unaccent(text)")] == ("kept", "uses extension unaccent")
    assert entries[("FUNCTION", "search", "hashed(text)")] == ("kept", "uses extension pgcrypto")
    with dbs.target() as conn:
        assert conn.execute("SELECT search.f_unaccent('Crème brûlée')").fetchone() == ("Creme brulee",)
        assert conn.execute("SELECT left(search.hashed('pw'), 7)").fetchone() == ("$2a$04$",)


def test_a_function_kept_from_every_role_on_the_source_stays_so_when_its_grants_are_left_out(
        cli: Cli, dbs: Databases, data_dir: Path) -> None:
    # A function may be called by every role unless that is revoked. Its ACL entry, left out for its grants to
    # Supabase's roles, took the REVOKE ... FROM PUBLIC along: on the target every role could call the auth hook and
    # the SECURITY DEFINER function the source kept to `authenticated` alone.
    with dbs.source() as conn:
        conn.execute("CREATE SCHEMA hooks; CREATE TABLE hooks.roles (user_id uuid PRIMARY KEY, role text)")
        conn.execute("CREATE FUNCTION hooks.access_token(event jsonb) RETURNS jsonb LANGUAGE sql STABLE "
                     "AS $$ SELECT event $$")
        conn.execute("CREATE FUNCTION hooks.is_admin(uid uuid) RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER "
                     "SET search_path = '' AS $$ SELECT EXISTS (SELECT FROM hooks.roles WHERE user_id = uid) $$")
        conn.execute("CREATE FUNCTION hooks.open() RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$")
        conn.execute("REVOKE EXECUTE ON FUNCTION hooks.access_token, hooks.is_admin FROM PUBLIC; "
                     "GRANT EXECUTE ON FUNCTION hooks.access_token TO supabase_auth_admin; "
                     "GRANT EXECUTE ON FUNCTION hooks.is_admin, hooks.open TO authenticated")
        conn.execute(f"GRANT USAGE ON SCHEMA hooks TO {fixtures.APP_ROLE}; "
                     f"GRANT SELECT ON ALL TABLES IN SCHEMA hooks TO {fixtures.APP_ROLE}")
    result = cli("schema", "--schema", "hooks", "--apply")
    assert result.exit_code == 0, result.output
    entries = report_entries(orjson.loads((data_dir / "schema-report.json").read_bytes()))
    kept_revoke = "; kept: its REVOKE ... FROM PUBLIC, so that not every role may use it, as on the source"
    assert entries[("ACL", "hooks", "FUNCTION access_token(event jsonb)")] == (
        "changed", "grants to supabase_auth_admin: supabase_auth_admin is a role of the source; grant on the target "
                   "by hand" + kept_revoke)
    assert entries[("ACL", "hooks", "FUNCTION is_admin(uid uuid)")] == (
        "changed", f"grants to authenticated, {API_GRANTS}{kept_revoke}")
    assert entries[("ACL", "hooks", "FUNCTION open()")] == ("left-out", f"grants to authenticated, {API_GRANTS}")
    with dbs.target() as conn:
        callable_by_all = dict(conn.execute(
            "SELECT proname, proacl IS NULL OR EXISTS (SELECT FROM aclexplode(proacl) a WHERE a.grantee = 0) "
            "FROM pg_proc WHERE pronamespace = 'hooks'::regnamespace").fetchall())
    assert callable_by_all == {"access_token": False, "is_admin": False, "open": True}


def test_a_target_user_that_may_not_create_an_extension_is_told_what_a_superuser_runs(
        cli: Cli, dbs: Databases, monkeypatch: pytest.MonkeyPatch) -> None:
    # The target's user owning the application (not a superuser) may create a trusted extension (citext) but not
    # moddatetime, Supabase's updated_at trigger: the apply failed on it with "correct the statement in schema.sql",
    # and, once a superuser had created it, on "permission denied for schema extensions".
    with dbs.source() as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS moddatetime WITH SCHEMA extensions; "
                     "CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA extensions")
        conn.execute("CREATE SCHEMA stamps; CREATE TABLE stamps.items (id integer PRIMARY KEY, "
                     "code extensions.citext, updated_at timestamptz)")
        conn.execute("CREATE TRIGGER handle_updated_at BEFORE UPDATE ON stamps.items "
                     "FOR EACH ROW EXECUTE PROCEDURE extensions.moddatetime(updated_at)")
        conn.execute(f"GRANT USAGE ON SCHEMA stamps TO {fixtures.APP_ROLE}; "
                     f"GRANT SELECT ON ALL TABLES IN SCHEMA stamps TO {fixtures.APP_ROLE}")
    with dbs.target() as conn:
        conn.execute("DROP ROLE IF EXISTS schema_owner; CREATE ROLE schema_owner LOGIN PASSWORD 'owner-pw-31'")
        conn.execute(f'GRANT CREATE ON DATABASE "{dbs.target_db}" TO schema_owner')
    monkeypatch.setenv("DATABASE_URL", dbs.target_server.url(dbs.target_db, "schema_owner", "owner-pw-31"))
    refused = cli("schema", "--schema", "stamps", "--apply")
    assert refused.exit_code == TargetError.exit_code, refused.output
    assert error_line(refused.output) == (
        "Error: the target's user schema_owner may not create extension moddatetime: only a superuser may (it is "
        "not a trusted extension) (fix: as a superuser, run on the target: CREATE SCHEMA IF NOT EXISTS \"extensions\"; "
        "CREATE EXTENSION IF NOT EXISTS \"moddatetime\" WITH SCHEMA \"extensions\"; GRANT USAGE, CREATE ON SCHEMA "
        "\"extensions\" TO \"schema_owner\"; then run `supamove schema --apply` again)")
    assert target_tables(dbs, "stamps") == []
    with dbs.target() as conn:  # the superuser does as told
        conn.execute("CREATE SCHEMA IF NOT EXISTS extensions; "
                     "CREATE EXTENSION IF NOT EXISTS moddatetime WITH SCHEMA extensions")
    lacking = cli("schema", "--schema", "stamps", "--apply")  # half of it: the schema's privileges are missing
    assert lacking.exit_code == TargetError.exit_code, lacking.output
    assert error_line(lacking.output) == (
        "Error: the target's user schema_owner lacks USAGE, CREATE on schema extensions, which holds the extensions "
        "schema.sql needs (citext, moddatetime) (fix: as a superuser, run on the target: GRANT USAGE, CREATE ON "
        "SCHEMA \"extensions\" TO \"schema_owner\"; then run `supamove schema --apply` again)")
    with dbs.target() as conn:
        conn.execute("GRANT USAGE, CREATE ON SCHEMA extensions TO schema_owner")
    applied = cli("schema", "--schema", "stamps", "--apply")
    assert applied.exit_code == 0, applied.output
    assert target_tables(dbs, "stamps") == ["stamps.items"]


def test_a_table_whose_type_is_left_out_stops_the_step_as_one_using_the_platform_does(cli: Cli,
                                                                                      dbs: Databases) -> None:
    # A column typed by a domain over auth.aal_level: the domain was left out, and the table with it, "depends on
    # DOMAIN levels.level, left out", exit 0; the export then read the table and the import found it missing.
    with dbs.source() as conn:
        conn.execute("GRANT USAGE ON TYPE auth.aal_level TO PUBLIC; CREATE SCHEMA levels; "
                     "CREATE DOMAIN levels.level AS auth.aal_level; "
                     "CREATE TABLE levels.sessions (id integer PRIMARY KEY, lvl levels.level); "
                     "CREATE TABLE levels.notes (id integer PRIMARY KEY)")
        conn.execute(f"GRANT USAGE ON SCHEMA levels TO {fixtures.APP_ROLE}; "
                     f"GRANT SELECT ON ALL TABLES IN SCHEMA levels TO {fixtures.APP_ROLE}")
    for args in (("--dry-run",), ("--apply",)):
        result = cli("schema", "--schema", "levels", *args)
        assert result.exit_code == 1, result.output
        assert error_line(result.output) == (
            "Error: table levels.sessions depends on DOMAIN levels.level, left out (uses auth.aal_level, part of "
            "Supabase's platform, not on the target), so it cannot be created on the target (fix: change the column's "
            "type or default on the source, or leave the table out with --exclude-tables)")
    assert target_tables(dbs, "levels") == []
    kept = cli("schema", "--schema", "levels", "--exclude-tables", "levels.sessions", "--apply")
    assert kept.exit_code == 0, kept.output
    assert target_tables(dbs, "levels") == ["levels.notes"]


def test_roles_the_target_user_may_not_create_are_named_with_what_to_run(dbs: Databases, tmp_path: Path) -> None:
    # --keep-roles as a user without CREATEROLE: "permission denied to create role", fix "correct the statement in
    # schema.sql", which names no role and no way on.
    with dbs.target() as conn:
        conn.execute("DROP ROLE IF EXISTS roles_owner; CREATE ROLE roles_owner LOGIN PASSWORD 'roles-pw-47'")
        conn.execute(f'GRANT CREATE ON DATABASE "{dbs.target_db}" TO roles_owner')
    datadir = DataDir(tmp_path / "data").ensure()
    datadir.schema_sql.write_text("CREATE TABLE public.should_not_exist (id integer);")
    as_owner = Endpoint(dbs.target_server.url(dbs.target_db, "roles_owner", "roles-pw-47"), "target")
    with pytest.raises(TargetError) as failure:
        apply_schema(as_owner, datadir, ["public.should_not_exist"], [], roles=["supamove_absent_role"])
    assert str(failure.value) == (
        "the target's user roles_owner may not create role supamove_absent_role (--keep-roles): it needs CREATEROLE "
        "(fix: as a superuser, run on the target: CREATE ROLE \"supamove_absent_role\" NOLOGIN; then run `supamove schema "
        "--apply` again, or run it without --keep-roles)")
    assert target_tables(dbs, "public") == []



def test_extension_functions_called_by_name_alone_work_on_the_target_after_the_cutover(
        cli: Cli, dbs: Databases, data_dir: Path, stack_auth: Any) -> None:
    # Supabase's sessions search `extensions`, so triggers call uuid_generate_v4() and gen_random_bytes() by name
    # alone; pg_dump leaves a body as it is. The target's database searched "$user", public, and neither extension
    # was created (only a name with its schema was looked for): the functions were created, the migration passed
    # verify, and the first INSERT after the cutover failed with "function uuid_generate_v4() does not exist".
    with dbs.source() as conn:
        conn.execute(f'ALTER ROLE {fixtures.APP_ROLE} IN DATABASE "{dbs.source_db}" '
                     'SET search_path = "$user", public, extensions, graphql')
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA extensions; "
                     "CREATE EXTENSION IF NOT EXISTS \"uuid-ossp\" WITH SCHEMA extensions")
        conn.execute("CREATE SCHEMA tix; CREATE TABLE tix.tickets (id integer PRIMARY KEY, code uuid, token text, "
                     "other uuid DEFAULT gen_random_uuid())")
        conn.execute("CREATE FUNCTION tix.stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "NEW.code := uuid_generate_v4(); NEW.token := encode(gen_random_bytes (8), 'hex'); "
                     "RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER stamp BEFORE INSERT ON tix.tickets FOR EACH ROW EXECUTE FUNCTION tix.stamp()")
        conn.execute(f"GRANT USAGE ON SCHEMA tix TO {fixtures.APP_ROLE}; "
                     f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA tix TO {fixtures.APP_ROLE}")
    with psycopg.connect(dbs.source_url, autocommit=True) as conn:  # as the application does on the source
        conn.execute("INSERT INTO tix.tickets (id) VALUES (1)")
    applied = cli("schema", "--schema", "tix", "--apply")
    assert applied.exit_code == 0, applied.output
    assert "warning" not in applied.output
    report = orjson.loads((data_dir / "schema-report.json").read_bytes())
    assert [x["name"] for x in report["extensions"]] == ["pgcrypto", "uuid-ossp"]
    assert report["searchPath"] == '"$user", public, extensions'
    assert report_entries(report)[("DATABASE SETTING", None, "search_path")] == (
        "changed", 'set on the target\'s database (ALTER DATABASE) as the source\'s sessions have it, "$user", public, '
                   "extensions: the application's functions and queries may call an extension's function by name "
                   "alone (uuid_generate_v4()); less graphql, which the target will not have")
    migrated = cli("migrate", "--schema", "tix")
    assert migrated.exit_code == 0, migrated.output
    with psycopg.connect(dbs.target_url, autocommit=True) as conn:  # a new session, as the application's
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public, extensions',)
        conn.execute("INSERT INTO tix.tickets (id) VALUES (2)")
        row = conn.execute("SELECT code IS NOT NULL, length(token) FROM tix.tickets WHERE id = 2").fetchone()
    assert row == (True, 16)


def test_a_search_path_the_target_user_may_not_set_is_skipped_with_what_to_run(
        cli: Cli, dbs: Databases, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with dbs.source() as conn:
        conn.execute(f'ALTER ROLE {fixtures.APP_ROLE} IN DATABASE "{dbs.source_db}" '
                     'SET search_path = "$user", public, extensions')
        conn.execute("CREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA extensions; CREATE SCHEMA plain; "
                     "CREATE TABLE plain.items (id integer PRIMARY KEY, code extensions.citext)")
        conn.execute(f"GRANT USAGE ON SCHEMA plain TO {fixtures.APP_ROLE}; "
                     f"GRANT SELECT ON ALL TABLES IN SCHEMA plain TO {fixtures.APP_ROLE}")
    with dbs.target() as conn:
        conn.execute("DROP ROLE IF EXISTS path_owner; CREATE ROLE path_owner LOGIN PASSWORD 'path-pw-53'")
        conn.execute(f'GRANT CREATE ON DATABASE "{dbs.target_db}" TO path_owner')
    monkeypatch.setenv("DATABASE_URL", dbs.target_server.url(dbs.target_db, "path_owner", "path-pw-53"))
    applied = cli("schema", "--schema", "plain", "--apply")
    assert applied.exit_code == 0, applied.output
    assert (f"warning: the target's user path_owner may not set the search_path of database {dbs.target_db} (only "
            "its owner or a superuser may), so it was not set: the application's functions calling an extension's "
            "function by name alone (uuid_generate_v4()) fail there until, as one of them, you run: ALTER DATABASE "
            f'"{dbs.target_db}" SET search_path = "$user", public, extensions') in " ".join(applied.output.split())
    assert target_tables(dbs, "plain") == ["plain.items"]
    with dbs.target() as conn:
        assert conn.execute("SHOW search_path").fetchone() == ('"$user", public',)


def test_security_definer_functions_applied_by_a_superuser_are_named_with_the_owner_to_give_them(
        cli: Cli, dbs: Databases, data_dir: Path) -> None:
    # pg_restore --no-owner: the functions belong to whoever applies schema.sql, often a superuser on a self-hosted
    # server, while on Supabase their owner (postgres) is not one. A SECURITY DEFINER function the application's
    # roles may call then ran as a superuser on the target, and nothing said so.
    with dbs.source() as conn:
        conn.execute("CREATE SCHEMA defs; CREATE TABLE defs.admins (user_id uuid PRIMARY KEY)")
        conn.execute("CREATE FUNCTION defs.is_admin(uid uuid) RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER "
                     "SET search_path = '' AS $$ SELECT EXISTS (SELECT FROM defs.admins WHERE user_id = uid) $$")
        conn.execute("CREATE PROCEDURE defs.purge() LANGUAGE sql SECURITY DEFINER AS $$ DELETE FROM defs.admins $$")
        conn.execute("CREATE FUNCTION defs.plain() RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$")
        conn.execute(f"ALTER FUNCTION defs.is_admin OWNER TO {fixtures.APP_ROLE}; "
                     f"ALTER PROCEDURE defs.purge OWNER TO {fixtures.APP_ROLE}; "
                     f"GRANT USAGE ON SCHEMA defs TO {fixtures.APP_ROLE}; "
                     f"GRANT SELECT ON ALL TABLES IN SCHEMA defs TO {fixtures.APP_ROLE}")
    dry = cli("schema", "--schema", "defs", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert ("SECURITY DEFINER (running with their owner's rights; on the target, those of the user applying "
            "schema.sql): defs.is_admin(uid uuid), defs.purge().") in " ".join(dry.output.split())
    applied = cli("schema", "--schema", "defs", "--apply")
    assert applied.exit_code == 0, applied.output
    assert ("warning: 2 SECURITY DEFINER functions now belong to postgres, a superuser, who applied schema.sql: each "
            "runs as a superuser for every role that may call it (on the source, as supabase_app); give them an owner "
            "that is not a superuser (the one owning the application's tables, say): ALTER FUNCTION "
            "defs.is_admin(uid uuid) OWNER TO <a non-superuser role>; ALTER PROCEDURE defs.purge() OWNER TO <a "
            "non-superuser role>") in " ".join(applied.output.split())
    report = orjson.loads((data_dir / "schema-report.json").read_bytes())
    assert report["securityDefiner"] == [
        {"kind": "FUNCTION", "name": "defs.is_admin(uid uuid)", "sourceOwner": "supabase_app"},
        {"kind": "PROCEDURE", "name": "defs.purge()", "sourceOwner": "supabase_app"}]
    definer = ("SECURITY DEFINER: runs with its owner's rights, supabase_app's on the source (not a superuser), on the "
               "target those of the user applying schema.sql: give it a non-superuser owner there (`schema --apply` "
               "names it)")
    entries = report_entries(report)
    assert entries[("FUNCTION", "defs", "is_admin(uuid)")] == ("kept", definer)
    assert entries[("FUNCTION", "defs", "plain()")] == ("kept", "")
    with dbs.target() as conn:  # the statements named work as they are
        assert conn.execute("SELECT rolsuper FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner "
                            "WHERE p.oid = 'defs.is_admin(uuid)'::regprocedure").fetchone() == (True,)
        conn.execute("DROP ROLE IF EXISTS defs_owner; CREATE ROLE defs_owner NOLOGIN")
        conn.execute("ALTER FUNCTION defs.is_admin(uid uuid) OWNER TO defs_owner; "
                     "ALTER PROCEDURE defs.purge() OWNER TO defs_owner")


def test_owner_applies_the_schema_as_the_application_s_role_which_then_owns_it(
        cli: Cli, dbs: Databases, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Applied by a superuser (which --disable-fk needs anyway), every table, sequence and function belonged to the
    # superuser: the application's role, connecting after the cutover, could read none of them, and nothing said so.
    with dbs.target() as conn:
        conn.execute("DROP ROLE IF EXISTS app_owner; CREATE ROLE app_owner LOGIN PASSWORD 'app-owner-pw-61'; "
                     "DROP ROLE IF EXISTS deployer; CREATE ROLE deployer LOGIN PASSWORD 'deployer-pw-67'")
        conn.execute(f'GRANT CREATE ON DATABASE "{dbs.target_db}" TO app_owner')
    assert refusal(cli, ConfigError, "--owner", "app_owner") == (
        "Error: --owner app_owner names who owns what --apply creates, and --apply was not given (fix: add --apply, "
        "or leave --owner out)")
    assert refusal(cli, TargetError, "--apply", "--owner", "app_ownr") == (
        "Error: --owner app_ownr: the target has no such role (role \"app_ownr\" does not exist) (fix: name a role the "
        "target has, or create it first as a superuser: CREATE ROLE \"app_ownr\" LOGIN PASSWORD '…' (the role the "
        "application connects as))")
    monkeypatch.setenv("DATABASE_URL", dbs.target_server.url(dbs.target_db, "deployer", "deployer-pw-67"))
    assert refusal(cli, TargetError, "--apply", "--owner", "app_owner") == (
        "Error: --owner app_owner: the target's user may not act as that role (permission denied to set role "
        "\"app_owner\") (fix: as a superuser, run on the target: GRANT \"app_owner\" TO \"deployer\"; then run the same "
        "command again)")
    assert target_tables(dbs) == []
    with dbs.target() as conn:  # the superuser does as told
        conn.execute("GRANT app_owner TO deployer")
    applied = cli("schema", "--schema", "app", "--apply", "--owner", "app_owner")
    assert applied.exit_code == 0, applied.output
    assert target_tables(dbs) == APP_TABLES
    with dbs.target() as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(o) FROM (SELECT relowner FROM pg_class WHERE relnamespace = 'app'::regnamespace "
            "UNION SELECT proowner FROM pg_proc WHERE pronamespace = 'app'::regnamespace "
            "UNION SELECT typowner FROM pg_type WHERE typnamespace = 'app'::regnamespace "
            "UNION SELECT nspowner FROM pg_namespace WHERE nspname IN ('app', '_supamove')) AS x(o)").fetchall()
        kinds = {r[0] for r in conn.execute("SELECT relkind FROM pg_class WHERE relnamespace = 'app'::regnamespace")}
    assert owners == [("app_owner",)]
    assert {"r", "p", "S", "i"} <= kinds  # tables, a partitioned one, sequences, indexes: every kind there is
    owner_url = dbs.target_server.url(dbs.target_db, "app_owner", "app-owner-pw-61")
    with psycopg.connect(owner_url, autocommit=True) as conn:  # what only the owner may: the import's own steps
        conn.execute("ALTER TABLE app.notes DISABLE TRIGGER USER; ALTER TABLE app.notes ENABLE TRIGGER USER")
        conn.execute("TRUNCATE app.events")


def refusal(cli: Cli, error: type[SupamoveError], *args: str) -> str:
    """`supamove schema --schema app ARGS`'s one error line, once it exited with `error`'s code."""
    result = cli("schema", "--schema", "app", *args)
    assert result.exit_code == error.exit_code, result.output
    return error_line(result.output)
