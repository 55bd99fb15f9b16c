"""verify after a faithful migration: all pass; one change on the target fails exactly that table, naming the row.

The faithful target is built without `supamove import`: pg_dump --data-only piped into psql, then the
user-id columns remapped with UPDATEs through a user-mapping.json written here.
"""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from conftest import Databases, _counter, _create_database, error_line, fresh_databases
from psycopg import sql

from supamove import catalog
from supamove.catalog import Table
from supamove.clock import now_iso
from supamove.db import Endpoint
from supamove.files import write_json
from supamove.metadata import Metadata, TableEntry
from supamove.paths import DataDir
from supamove.sandbox.pgserver import PostgresServer, find_bindir
from supamove.verify import VerifyOptions, run_verify
from supamove.verify import run as verify_run

SCHEMAS = ["public", "edge"]
Faithful = tuple[str, dict[str, str], list[Table]]  # target template database, user mapping, tables
STACK_NAMESPACE = uuid.UUID("5f0c3c55-3a0b-4f6e-9d57-6b1f2d9c1a11")


# --- building a faithful target ---------------------------------------------------------------------


def stack_id(supabase_id: str) -> str:
    return str(uuid.uuid5(STACK_NAMESPACE, supabase_id))


def make_mapping(source_admin_url: str) -> dict[str, str]:
    """Supabase user id to a made-up Stack Auth id, for every auth user."""
    with psycopg.connect(source_admin_url) as conn:
        return {str(r[0]): stack_id(str(r[0])) for r in conn.execute("SELECT id FROM auth.users ORDER BY id")}


def write_mapping(path: Path, mapping: dict[str, str]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_json(path, {"generatedAt": "2025-01-01T00:00:00Z", "retainUntil": "2025-04-01T00:00:00Z",
                      "mappings": [{"supabaseUserId": s, "stackAuthUserId": t, "email": None,
                                    "migratedAt": "2025-01-01T00:00:00Z"} for s, t in mapping.items()]})


def copy_data(source_admin_url: str, target_url: str, schemas: list[str]) -> None:
    """The source's rows of `schemas` into the target's identical tables, with sequence states."""
    bindir = find_bindir()
    dump = [str(bindir / "pg_dump"), "--data-only", "--disable-triggers", "--no-owner", "--no-privileges",
            *[f"--schema={s}" for s in schemas], source_admin_url.replace("?sslmode=disable", "")]
    load = [str(bindir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", target_url.replace("?sslmode=disable", "")]
    with subprocess.Popen(dump, stdout=subprocess.PIPE) as producer:
        result = subprocess.run(load, stdin=producer.stdout, capture_output=True, text=True)
    assert producer.returncode == 0 and result.returncode == 0, result.stderr


def remap(source_admin_url: str, target_url: str, mapping: dict[str, str], schemas: list[str]) -> None:
    """Replace every Supabase user id in the target's user-id columns by its Stack Auth id."""
    with psycopg.connect(source_admin_url) as conn:
        tables = [t for t in catalog.read_tables(conn, schemas) if t.user_id_columns]
    with psycopg.connect(target_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no triggers touching other columns
        conn.execute("CREATE TEMP TABLE m (supabase uuid PRIMARY KEY, stack uuid NOT NULL)")
        with conn.cursor().copy("COPY m FROM STDIN") as copy:
            for pair in mapping.items():
                copy.write_row(pair)
        for table in tables:
            for name in table.user_id_columns:
                col, rel = sql.Identifier(name), sql.Identifier(table.schema, table.name)
                if table.column(name).type.endswith("]"):  # type: ignore[union-attr]
                    conn.execute(sql.SQL(
                        "UPDATE {t} SET {c} = (SELECT array_agg(coalesce(m.stack, e.v) ORDER BY e.n) "
                        "FROM unnest({c}) WITH ORDINALITY e(v, n) LEFT JOIN m ON m.supabase = e.v) "
                        "WHERE cardinality({c}) > 0").format(t=rel, c=col))
                else:
                    conn.execute(sql.SQL("UPDATE {t} SET {c} = m.stack FROM m WHERE {t}.{c} = m.supabase").format(
                        t=rel, c=col))


def lift_sequences(target_url: str, tables: list[Table]) -> None:
    """As import does: a sequence the source left at or below its column's max continues above it."""
    with psycopg.connect(target_url, autocommit=True) as conn:
        for table in tables:
            for ref in table.sequences:
                conn.execute(sql.SQL(
                    "SELECT setval(%s::regclass, m) FROM (SELECT max({c}) AS m FROM {t}) x, pg_sequence s "
                    "WHERE s.seqrelid = %s::regclass AND m >= coalesce(pg_sequence_last_value(%s::regclass) "
                    "+ s.seqincrement, s.seqstart)").format(c=sql.Identifier(ref.column),
                                                          t=sql.Identifier(table.schema, table.name)),
                    (ref.qualified,) * 3)


def write_metadata(datadir: DataDir, tables: list[Table]) -> None:
    """The metadata.json of a finished export of `tables`, written without running one."""
    datadir.ensure()
    meta = Metadata(datadir, source={"serverVersion": "15", "url": "postgresql://source"}, started_at=now_iso(),
                    finished_at=now_iso(), schemas=SCHEMAS, tables=[TableEntry.new(t, datadir) for t in tables])
    meta.save()


@pytest.fixture(scope="module")
def faithful_template(pg_source: PostgresServer, pg_target: PostgresServer, source_template: str,
                      target_template: str) -> Iterator[Faithful]:
    """A target database holding the source's data with user ids remapped; the mapping; the tables."""
    name = f"faithful_{os.getpid()}_{next(_counter)}"
    target_url = _create_database(pg_target, name, target_template)
    source_url = pg_source.url(source_template)
    mapping = make_mapping(source_url)
    copy_data(source_url, target_url, SCHEMAS)
    remap(source_url, target_url, mapping, SCHEMAS)
    with psycopg.connect(source_url) as conn:
        tables = catalog.read_tables(conn, SCHEMAS)
    lift_sequences(target_url, tables)
    yield name, mapping, tables
    with psycopg.connect(pg_target.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dbs(pg_source: PostgresServer, pg_target: PostgresServer, source_template: str,
        faithful_template: Faithful) -> Iterator[Databases]:
    """Fresh databases for one test, the target already migrated faithfully."""
    with fresh_databases(pg_source, pg_target, source_template, faithful_template[0]) as databases:
        yield databases


@pytest.fixture
def described(data_dir: Path, faithful_template: Faithful) -> Path:
    """A data directory holding the metadata.json of an export of public and edge."""
    write_metadata(DataDir(data_dir), faithful_template[2])
    return data_dir


@pytest.fixture
def migrated(described: Path, faithful_template: Faithful) -> Path:
    """The data directory of a finished migration: export, user mapping, data in the target."""
    write_mapping(described / "user-mapping.json", faithful_template[1])
    return described


def verify(cli: Any, *args: str) -> tuple[int, dict[str, Any], str]:
    result = cli("verify", *args)
    report = orjson.loads((Path(os.environ["MIGRATION_DATA_DIR"]) / "verification-report.json").read_bytes())
    return result.exit_code, report, result.output


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{t['schema']}.{t['table']}": t for t in report["tables"]}


def only_failure(report: dict[str, Any]) -> dict[str, Any]:
    failed = [t for t in report["tables"] if t["status"] == "fail"]
    assert len(failed) == 1, [(t["table"], t["reason"]) for t in failed]
    return failed[0]


# --- a faithful migration passes ------------------------------------------------------------------


def test_faithful_migration_passes(cli, migrated: Path, dbs: Databases) -> None:
    code, report, out = verify(cli)
    assert code == 0, out
    tables = by_name(report)
    assert all(t["status"] == "pass" for t in report["tables"]), [
        (n, t["reason"]) for n, t in tables.items() if t["status"] != "pass"]
    for name in ("public.profiles", "public.alerts", "public.alert_subscriptions", "public.org_members",
                 "public.readings", "edge.types_zoo"):
        assert tables[name]["status"] == "pass"
        assert tables[name]["sourceChecksum"] == tables[name]["targetChecksum"]
        assert tables[name]["sourceRows"] == tables[name]["targetRows"] > 0
    assert report["summary"]["fail"] == 0 and report["summary"]["checksums"] is True
    assert report["summary"]["pass"] == report["summary"]["tables"] == len(report["tables"])
    assert report["source"].startswith("postgresql://") and "s3cret" not in orjson.dumps(report).decode()
    assert report["tablesFrom"] == "metadata.json"
    assert stat.S_IMODE(os.stat(migrated / "verification-report.json").st_mode) == 0o600
    assert "Verification" in out and "pass" in out


def test_without_mapping_user_id_tables_warn(cli, described: Path, dbs: Databases) -> None:
    code, report, out = verify(cli)
    assert code == 0, out
    tables = by_name(report)
    assert tables["public.alerts"]["status"] == "warn"
    assert "acknowledged_by" in tables["public.alerts"]["reason"] and "user-mapping.json" in tables["public.alerts"]["reason"]
    assert tables["public.readings"]["status"] == "pass"


# --- one change on the target fails exactly that table, naming the row ------------------------------

COLUMN_TYPES = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typtype, t.typcategory
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = 'edge.types_zoo'::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum
"""
# kind: (which column, the rows that qualify, the change)
CHANGES: dict[str, tuple[Any, str, str]] = {
    "numeric": (lambda typ, kind, cat: typ.startswith("numeric"), "{c} <> 'NaN'", "{c} + 1"),
    "float-nan-vs-0": (lambda typ, kind, cat: typ == "double precision", "true",
                       "CASE WHEN {c} = 'NaN' THEN 0 ELSE 'NaN'::float8 END"),
    "timestamptz": (lambda typ, kind, cat: typ.startswith("timestamp") and "with time zone" in typ,
                    "isfinite({c})", "{c} + interval '1 microsecond'"),
    "bytea": (lambda typ, kind, cat: typ == "bytea", "true", "{c} || '\\x00'::bytea"),
    "json": (lambda typ, kind, cat: typ == "json", "true", "'{{\"changed\": true}}'::json"),
    "jsonb": (lambda typ, kind, cat: typ == "jsonb", "true", "jsonb_build_array({c})"),
    "text": (lambda typ, kind, cat: typ == "text", "true", "{c} || 'x'"),
    "array": (lambda typ, kind, cat: cat == "A", "cardinality({c}) > 0", "array_cat({c}, {c})"),
    "enum": (lambda typ, kind, cat: kind == "e", "true",
             "(SELECT e FROM unnest(enum_range({c})) e WHERE e <> {c} LIMIT 1)"),
    "json-whitespace": (lambda typ, kind, cat: typ == "json", "true", "(' ' || {c}::text || ' ')::json"),
}


def change_one_row(conn: psycopg.Connection, schema: str, table: str, column: str, where: str,
                   change: str, key: str) -> str:
    """Change `column` in one row of the target; returns that row's key as text."""
    rel, col = sql.Identifier(schema, table), sql.Identifier(column)
    pick = sql.SQL("SELECT {k}::text FROM {t} WHERE {c} IS NOT NULL AND ({w}) ORDER BY {k} LIMIT 1").format(
        k=sql.Identifier(key), t=rel, c=col, w=sql.SQL(where).format(c=col))
    row = conn.execute(pick).fetchone()
    assert row, f"no row of {schema}.{table} qualifies for a change of {column}"
    conn.execute("SET session_replication_role = replica")
    conn.execute(sql.SQL("UPDATE {t} SET {c} = {v} WHERE {k}::text = %s").format(
        t=rel, c=col, v=sql.SQL(change).format(c=col), k=sql.Identifier(key)), (row[0],))
    return str(row[0])


def zoo_key(conn: psycopg.Connection) -> str:
    row = conn.execute("""SELECT a.attname FROM pg_constraint c JOIN pg_attribute a
                          ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
                          WHERE c.conrelid = 'edge.types_zoo'::regclass AND c.contype = 'p'""").fetchone()
    assert row, "edge.types_zoo has no primary key"
    return str(row[0])


@pytest.mark.parametrize("kind", list(CHANGES))
def test_one_changed_value_fails_that_table(cli, migrated: Path, dbs: Databases, kind: str) -> None:
    wanted, where, change = CHANGES[kind]
    with dbs.target() as conn:
        columns = [(name, typ) for name, typ, typtype, cat in conn.execute(COLUMN_TYPES)
                   if wanted(typ, typtype, cat)]
        assert columns, f"edge.types_zoo has no {kind} column"
        key = zoo_key(conn)
        for name, _ in columns:  # the first column of that type holding a row to change
            try:
                with conn.transaction():
                    row = change_one_row(conn, "edge", "types_zoo", name, where, change, key)
                column = name
                break
            except AssertionError:
                continue
        else:
            pytest.fail(f"no {kind} value to change in edge.types_zoo")
    code, report, out = verify(cli)
    assert code == 7, out
    failed = only_failure(report)
    assert (failed["schema"], failed["table"]) == ("edge", "types_zoo")
    assert "contents differ" in failed["reason"]
    changed = [d for d in failed["differences"] if d["kind"] == "changed"]
    assert len(failed["differences"]) == 1 and changed, failed["differences"]
    assert changed[0]["key"] == {key: row}
    assert [c["column"] for c in changed[0]["columns"]] == [column]
    assert f"{key}={row}" in out


def test_deleted_row(cli, migrated: Path, dbs: Databases) -> None:
    with dbs.target() as conn:
        conn.execute("DELETE FROM public.readings WHERE id = 1234")
    code, report, out = verify(cli)
    assert code == 7
    failed = only_failure(report)
    assert failed["table"] == "readings" and failed["sourceRows"] == failed["targetRows"] + 1
    assert "row counts differ" in failed["reason"]
    assert failed["differences"] == [{"kind": "missing", "key": {"id": "1234"}}]
    assert "id=1234 missing" in out


def test_extra_row(cli, migrated: Path, dbs: Databases) -> None:
    with dbs.target() as conn:
        conn.execute("""INSERT INTO public.readings (id, sensor_id, recorded_at, temperature)
                        OVERRIDING SYSTEM VALUE
                        SELECT 99999999, sensor_id, recorded_at, temperature FROM public.readings LIMIT 1""")
    code, report, _ = verify(cli)
    assert code == 7
    failed = only_failure(report)
    assert failed["table"] == "readings"
    assert failed["differences"] == [{"kind": "extra", "key": {"id": "99999999"}}]
    assert "collides with existing rows" in failed["reason"]  # the sequence was left behind


def test_duplicated_row_in_table_without_primary_key(cli, migrated: Path, dbs: Databases) -> None:
    with dbs.source() as conn:
        tables = [t for t in catalog.read_tables(conn, SCHEMAS) if not t.row_key]
        counts = {t.key: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(*t.key))).fetchone()[0] for t in tables}
    table = next(t for t in tables if counts[t.key] > 0)
    names = [c.name for c in table.columns if not c.generated]
    cols = sql.SQL(", ").join(map(sql.Identifier, names))
    with dbs.target() as conn:
        conn.execute(sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM {t} LIMIT 1").format(
            t=sql.Identifier(*table.key), c=cols))
    code, report, out = verify(cli)
    assert code == 7, out
    failed = only_failure(report)
    assert (failed["schema"], failed["table"]) == table.key
    assert len(failed["differences"]) == 1
    diff = failed["differences"][0]
    assert diff["kind"] == "extra" and diff["count"] == 1 and set(diff["row"]) <= set(names)


def test_user_id_mapped_to_the_wrong_stack_user(cli, migrated: Path, dbs: Databases,
                                                faithful_template: Faithful) -> None:
    with dbs.target() as conn:
        alert, acker = conn.execute("SELECT id, acknowledged_by FROM public.alerts "
                                    "WHERE acknowledged_by IS NOT NULL ORDER BY id LIMIT 1").fetchone()
        other = next(s for s in faithful_template[1].values() if s != str(acker))
        conn.execute("UPDATE public.alerts SET acknowledged_by = %s WHERE id = %s", (other, alert))
    code, report, _ = verify(cli)
    assert code == 7
    failed = only_failure(report)
    assert failed["table"] == "alerts"
    assert [(d["kind"], d["key"], [c["column"] for c in d["columns"]]) for d in failed["differences"]] == [
        ("changed", {"id": str(alert)}, ["acknowledged_by"])]


def test_user_id_without_mapping_back_fails(cli, migrated: Path, dbs: Databases) -> None:
    with dbs.target() as conn:
        conn.execute("UPDATE public.alert_subscriptions SET notify_user_ids = notify_user_ids || %s::uuid "
                     "WHERE id = (SELECT id FROM public.alert_subscriptions ORDER BY id LIMIT 1)", (str(uuid.uuid4()),))
    code, report, _ = verify(cli)
    assert code == 7
    failed = only_failure(report)
    assert failed["table"] == "alert_subscriptions"
    assert "does not map back to a Supabase user" in failed["reason"]
    assert failed["differences"][0]["columns"][0]["column"] == "notify_user_ids"
    assert "!unmapped:" in failed["differences"][0]["columns"][0]["target"]


def test_timestamp_shifted_by_one_microsecond(cli, migrated: Path, dbs: Databases) -> None:
    with dbs.target() as conn:
        conn.execute("UPDATE public.readings SET recorded_at = recorded_at + interval '1 microsecond' WHERE id = 777")
    code, report, _ = verify(cli)
    assert code == 7
    failed = only_failure(report)
    assert failed["differences"][0]["key"] == {"id": "777"}
    change = failed["differences"][0]["columns"][0]
    assert change["column"] == "recorded_at" and change["target"].endswith(".000001+00")


# --- sequences, missing tables and columns, options -------------------------------------------------


def test_sequence_behind_fails(cli, migrated: Path, dbs: Databases) -> None:
    with dbs.target() as conn:
        conn.execute("SELECT setval(pg_get_serial_sequence('public.alerts', 'id'), 1)")
    code, report, _ = verify(cli)
    assert code == 7
    failed = only_failure(report)
    assert failed["table"] == "alerts" and "collides with existing rows" in failed["reason"]
    assert failed["sourceChecksum"] == failed["targetChecksum"]


def test_missing_target_table_and_extra_column(cli, migrated: Path, dbs: Databases) -> None:
    with dbs.target() as conn:
        conn.execute("DROP TABLE public.alert_subscriptions")
        conn.execute("ALTER TABLE public.sites ADD COLUMN note text")
    code, report, _ = verify(cli)
    assert code == 7
    tables = by_name(report)
    failed = only_failure(report)
    assert failed["table"] == "alert_subscriptions" and "public.alert_subscriptions does not exist" in failed["reason"]
    assert tables["public.sites"]["status"] == "warn"
    assert "column note is in the target only" in tables["public.sites"]["reason"]


def test_max_diffs_and_tables_options(cli, migrated: Path, dbs: Databases) -> None:
    with dbs.target() as conn:
        conn.execute("DELETE FROM public.readings WHERE id IN (10, 20, 30, 40, 50)")
    code, report, _ = verify(cli, "--tables", "readings", "--max-diffs", "2", "--jobs", "3")
    assert code == 7
    assert [t["table"] for t in report["tables"]] == ["readings"]
    assert report["tables"][0]["differences"] == [{"kind": "missing", "key": {"id": "10"}},
                                                  {"kind": "missing", "key": {"id": "20"}}]


def test_big_tables_are_checksummed_in_block_ranges(migrated: Path, dbs: Databases,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    source, target = Endpoint(dbs.source_url, "source"), Endpoint(dbs.target_url, "target")
    options = VerifyOptions(tables=["readings", "alerts"])
    whole = run_verify(source, target, DataDir(migrated), options)
    monkeypatch.setattr(verify_run, "CHUNK_BLOCKS", 1)
    with dbs.target() as conn:
        conn.execute("UPDATE public.readings SET temperature = 99 WHERE id = 1999")
    pieces = run_verify(source, target, DataDir(migrated), options)
    assert [t.source_checksum for t in pieces.tables] == [t.source_checksum for t in whole.tables]
    status = {t.table: t for t in pieces.tables}
    assert (status["readings"].status, status["alerts"].status) == ("fail", "pass")
    assert status["readings"].differences[0].key == {"id": "1999"}


def test_skip_checksum_compares_counts_only(cli, migrated: Path, dbs: Databases) -> None:
    with dbs.target() as conn:
        conn.execute("UPDATE public.readings SET temperature = -273 WHERE id = 5")
    code, report, _ = verify(cli, "--skip-checksum")
    assert code == 0
    assert report["summary"]["checksums"] is False
    assert all(t["sourceChecksum"] is None for t in report["tables"])


def test_import_end_to_end(cli, data_dir: Path, dbs: Databases, faithful_template: Faithful) -> None:
    """The real runbook: export, import into an empty target, then verify."""
    result = cli("export", "--schema", "public", "--schema", "edge")
    assert result.exit_code == 0, result.output
    write_mapping(data_dir / "user-mapping.json", faithful_template[1])
    with dbs.target() as conn:
        tables = [f"{s}.{n}" for s, n in conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY(%s)", (SCHEMAS,))]
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
            sql.SQL(", ").join(sql.Identifier(*t.split(".")) for t in tables)))
    code, report, _ = verify(cli, "--skip-checksum")
    assert code == 7
    assert {t["reason"] for t in report["tables"] if t["sourceRows"]} == {"target table is empty: run `supamove import`"}
    result = cli("import")
    assert result.exit_code == 0, result.output
    code, report, out = verify(cli)
    assert code == 0, out
    assert report["summary"]["fail"] == 0



def test_nothing_compared_never_passes(cli, data_dir: Path, dbs: Databases) -> None:
    write_metadata(DataDir(data_dir), [])  # an export of no table
    code, report, out = verify(cli)
    assert code == 7
    assert report["tables"] == [] and report["summary"]["tables"] == 0
    assert error_line(out) == (
        "Error: no table was compared (metadata.json lists none): nothing was verified (fix: export the "
        "application's tables (`supamove export --dry-run` shows which; check --schema and --tables), import "
        "them, then verify)")
