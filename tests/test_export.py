"""export: the plan, the files and metadata.json, one snapshot, exact text, resuming."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import stat
from pathlib import Path

import orjson
import psycopg
import pytest
from conftest import (
    APP_PASSWORD,
    EDGE,
    app_table,
    assert_verify_passes,
    create_database,
    entries,
    error_line,
    metadata,
    write_mapping,
)
from psycopg import sql

from supamove import catalog
from supamove.db import Endpoint, redact_url
from supamove.export import ExportOptions, copy_table, run_export, select_batches
from supamove.metadata import Metadata
from supamove.paths import DataDir, table_file_name
from supamove.progress import NullProgress
from supamove.sandbox import fixtures

PUBLIC_TABLES = ("public.alert_subscriptions, public.alerts, public.org_members, public.organizations, public.profiles, "
                 "public.readings, public.sensors, public.sites, public.units")


def lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_dry_run_shows_plan_and_writes_nothing(cli, data_dir: Path) -> None:
    result = cli("export", "--dry-run", *EDGE)
    assert result.exit_code == 0, result.output
    out = result.output
    chain = ["public.organizations", "public.sites", "public.units", "public.sensors", "public.readings"]
    assert [out.index(name) for name in chain] == sorted(out.index(name) for name in chain)  # parents first
    assert "public.sites" in out and "edge.types_zoo" in out
    assert "auth.users" in out and "auth.identities" in out and "auth.mfa_factors" in out
    assert "acknowledged_by" in out  # a user-id column found through its FK to auth.users
    assert "FK cycle or self-reference: edge.cycle_a, edge.cycle_b" in out
    assert "Platform schemas skipped: " in out and "storage" in out and "realtime" in out
    assert "Dry run: nothing was written." in out
    assert not data_dir.exists()


def test_export_writes_every_table_and_metadata(cli, dbs, data_dir: Path) -> None:
    result = cli("export", *EDGE)
    assert result.exit_code == 0, result.output
    assert "Export summary" in result.output
    meta = orjson.loads((data_dir / "metadata.json").read_bytes())
    assert meta["formatVersion"] == 2
    assert {t["format"] for t in meta["tables"]} == {"copy"} and {t["format"] for t in meta["auth"]} == {"jsonl"}
    assert meta["finishedAt"] and meta["startedAt"] and meta["snapshot"]
    with dbs.source() as conn:
        assert meta["source"]["serverVersion"] == conn.execute("SHOW server_version").fetchone()[0]
    assert "s3cret" not in orjson.dumps(meta).decode()
    names = {(t["schema"], t["name"]) for t in meta["tables"]}
    assert ("public", "readings") in names and ("edge", "Odd Table") in names
    assert not {s for s, _ in names} & {"auth", "storage", "realtime", "vault", "supabase_migrations"}
    assert {(t["schema"], t["name"]) for t in meta["auth"]} == {("auth", "users"), ("auth", "identities"),
                                                                ("auth", "mfa_factors")}
    factors = lines(data_dir / "auth" / "auth.mfa_factors.jsonl")
    assert sorted((f["friendly_name"], f["factor_type"], f["status"]) for f in factors) == [
        ("Alice's phone", "totp", "verified"), ("enzo totp_encrypted", "totp", "verified"),
        ("pete phone", "phone", "verified"), ("pete webauthn", "webauthn", "verified"),
        ("tina totp", "totp", "verified"), ("tina totp_unverified", "totp", "unverified"),
        ("una totp_unverified", "totp", "unverified")]
    assert {f["secret"] for f in factors if f["friendly_name"] in ("Alice's phone", "tina totp")} == {
        "JBSWY3DPEHPK3PXP", "KRUW4YJAKRXXI4BAKNSWG4TFOQ"}
    assert {"user_id", "friendly_name", "phone", "web_authn_credential", "last_challenged_at"} <= set(factors[0])
    with dbs.source() as conn:
        for entry in meta["tables"] + meta["auth"]:
            path = data_dir / entry["file"]
            body = path.read_bytes()
            assert entry["complete"] is True
            assert entry["bytes"] == len(body)
            assert entry["sha256"] == hashlib.sha256(body).hexdigest()
            count = conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(
                psycopg.sql.Identifier(entry["schema"], entry["name"]))).fetchone()[0]
            assert entry["rowCount"] == count == body.count(b"\n"), entry["name"]
    readings = next(t for t in meta["tables"] if t["name"] == "readings")
    assert readings["primaryKey"] == ["id"]
    assert any(c["identity"] == "always" for c in readings["columns"])
    assert readings["sequences"] and readings["sequences"][0]["column"] == "id"
    assert any(s["name"] == readings["sequences"][0]["name"] for s in meta["sequences"])
    profiles = next(t for t in meta["tables"] if t["name"] == "profiles")
    assert profiles["userIdColumns"] == ["id"]
    subs = next(t for t in meta["tables"] if t["name"] == "alert_subscriptions")
    assert "notify_user_ids" in subs["userIdColumns"]


def test_files_holding_users_are_private(exported: Path) -> None:
    assert stat.S_IMODE(os.stat(exported).st_mode) == 0o700
    for path in [exported / "metadata.json", *exported.glob("*/*.*")]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    users = lines(exported / "auth" / "auth.users.jsonl")
    assert any(u["encrypted_password"] and u["encrypted_password"].startswith("$2a$") for u in users)


def test_values_are_postgres_text_forms(exported_jsonl: Path, dbs) -> None:
    rows = lines(exported_jsonl / "tables" / table_file_name("edge", "types_zoo", "jsonl"))
    with dbs.source() as conn:
        conn.execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1")
        for column in ("j", "jb", "ts_tz", "f8", "n_free", "b", "int_arr", "text_arr", "txt", "r"):
            expected = sorted((r[0] for r in conn.execute(psycopg.sql.SQL("SELECT {}::text FROM edge.types_zoo").format(
                psycopg.sql.Identifier(column)))), key=str)
            assert sorted((r[column] for r in rows), key=str) == expected, column
    assert any("NaN" == r["f8"] for r in rows) and any("-0" == r["f8"] for r in rows)
    assert any("NaN" == r["n_free"] for r in rows)
    assert all(isinstance(r["id"], int) for r in rows)
    # jsonb is its text too: a jsonb 'null' must stay distinct from SQL NULL
    assert "null" in [r["jb"] for r in rows] and None in [r["jb"] for r in rows]


def test_every_line_is_what_row_to_json_writes(exported_jsonl: Path, dbs) -> None:
    """JSON Lines (--table-format jsonl): each line is built from the columns' texts, byte for byte PostgreSQL's
    own row_to_json."""
    exported = exported_jsonl
    meta = Metadata.load(DataDir(exported))
    with dbs.source() as conn:
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres'; "
                     "SET bytea_output = 'hex'; SET extra_float_digits = 1")
        for entry in meta.tables:
            texts = sql.SQL(", ").join(  # a character's text is its output: ::text trims its trailing spaces
                sql.SQL("CASE WHEN {c} IS NOT NULL THEN concat({c}) END AS {c}" if c.padded else "{c}::text AS {c}" if c.encoding == "text" else "{c}")
                .format(c=sql.Identifier(c.name)) for c in entry.table.columns)
            only = sql.SQL("" if entry.table.partitioned else "ONLY")
            query = sql.SQL("SELECT row_to_json(r.*)::text FROM (SELECT {} FROM {} {}) r").format(
                texts, only, sql.Identifier(*entry.key))
            expected = sorted(row[0].encode() for row in conn.execute(query))
            assert sorted((exported / entry.file).read_bytes().splitlines()) == expected, entry.qualified
    assert {"edge.types_zoo", "edge.Odd Table"} <= {e.qualified for e in meta.tables}


def test_every_line_is_what_copy_writes(exported: Path, dbs) -> None:
    """An application table's file is COPY's text format of its columns, byte for byte, in the export's settings."""
    meta = Metadata.load(DataDir(exported))
    with dbs.source() as conn:
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres'; "
                     "SET bytea_output = 'hex'; SET extra_float_digits = 1; SET search_path = pg_catalog")
        for entry in meta.tables:
            columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in entry.table.columns)
            only = sql.SQL("" if entry.table.partitioned else "ONLY")
            out = io.BytesIO()
            with conn.cursor() as cur, cur.copy(sql.SQL("COPY (SELECT {} FROM {} {}) TO STDOUT").format(
                    columns, only, sql.Identifier(*entry.key))) as copy:
                for chunk in copy:
                    out.write(chunk)
            assert entry.format == "copy" and entry.file.endswith(".copy")
            assert sorted((exported / entry.file).read_bytes().splitlines()) == sorted(out.getvalue().splitlines()), \
                entry.qualified
    assert {"edge.types_zoo", "edge.Odd Table"} <= {e.qualified for e in meta.tables}


def test_columns_the_catalog_calls_not_null_write_the_same_lines_and_a_null_there_stays_null(dbs) -> None:
    """A NOT NULL column is written without its NULL test: the lines stay row_to_json's for every type, and
    a NULL all the same (the constraint dropped after the catalog was read) is written as null, its line whole."""
    with dbs.source() as conn:
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres'; "
                     "SET bytea_output = 'hex'; SET extra_float_digits = 1")
        table = next(t for t in catalog.read_tables(conn, ["edge"]) if t.name == "types_zoo")
        claimed = dataclasses.replace(table, columns=tuple(dataclasses.replace(c, nullable=False)
                                                           for c in table.columns))
        texts = sql.SQL(", ").join(
            sql.SQL("CASE WHEN {c} IS NOT NULL THEN concat({c}) END AS {c}" if c.padded else
                    "{c}::text AS {c}" if c.encoding == "text" else "{c}").format(c=sql.Identifier(c.name))
            for c in table.columns)
        expected = sorted(r[0].encode() for r in conn.execute(sql.SQL(
            "SELECT row_to_json(r.*)::text FROM (SELECT {} FROM edge.types_zoo) r").format(texts)))
        assert any(b":null" in line for line in expected)  # rows holding a NULL take the full form
        out = io.BytesIO()
        copy_table(conn, claimed, out, NullProgress(), fmt="jsonl")
    assert sorted(out.getvalue().splitlines()) == expected


def test_a_table_keeping_big_values_apart_is_read_a_row_at_a_time(cli, dbs, data_dir: Path) -> None:
    """Rows travel in batches of blocks, but not when the values kept apart from them (TOAST) could make a
    batch too big for one message: such a table is read a row at a time, with the same lines."""
    app_table(dbs, "documents", "CREATE TABLE public.documents (id integer PRIMARY KEY, body text)",
              "ALTER TABLE public.documents ALTER body SET STORAGE EXTERNAL",  # apart, not compressed
              "INSERT INTO public.documents SELECT g, repeat(md5(g::text), 20000) "
              "FROM generate_series(1, 20) g", on_target=False)  # 640 kB each: 12.8 MB apart from the rows
    with dbs.source() as conn:
        tables = {t.name: t for t in catalog.read_tables(conn, ["public"])}
        assert select_batches(conn, tables["readings"]) is not None
        assert select_batches(conn, tables["documents"]) is None
        expected = [r[0].encode() for r in conn.execute(
            "SELECT row_to_json(d.*)::text FROM public.documents d ORDER BY id")]
    result = cli("export", "--table-format", "jsonl")
    assert result.exit_code == 0, result.output
    assert sorted((data_dir / "tables" / "public.documents.jsonl").read_bytes().splitlines()) == sorted(expected)


def test_a_table_of_values_that_compress_well_is_read_a_row_at_a_time(dbs) -> None:
    """TOAST keeps values compressed: 15 values of 45 MB of quotes take 7.6 MB there, under the 8 MB that
    batches were allowed, and come to 1.35 GB as JSON (each quote written \\"). Read in batches, the export
    stopped with 'out of memory' at every run; read a row at a time, each line is 90 MB."""
    app_table(dbs, "quotes", "CREATE TABLE public.quotes (id integer PRIMARY KEY, body text)",
              "ALTER TABLE public.quotes ALTER body SET COMPRESSION pglz",  # PostgreSQL's default
              "INSERT INTO public.quotes SELECT g, repeat('\"', 45000000) FROM generate_series(1, 15) g",
              on_target=False)
    with dbs.source() as conn:
        toasted = conn.execute("SELECT pg_relation_size(reltoastrelid) FROM pg_class "
                               "WHERE oid = 'public.quotes'::regclass").fetchone()[0]
        assert toasted < 8 << 20
        table = next(t for t in catalog.read_tables(conn, ["public"]) if t.name == "quotes")
        assert select_batches(conn, table) is None


def test_a_row_too_big_for_a_json_line_is_named_with_the_way_around_it(cli, dbs, data_dir: Path) -> None:
    """540 MB of quotes is a valid text value, and 1.08 GB as JSON, past what PostgreSQL builds: the export stopped
    with 'lost the source connection while exporting public.quoted: out of memory (fix: check the source is up,
    then run `supamove export` again)', which no rerun gets past."""
    app_table(dbs, "quoted", "CREATE TABLE public.quoted (id integer PRIMARY KEY, body text)",
              "INSERT INTO public.quoted VALUES (1, repeat('\"', 540000000))", on_target=False)
    result = cli("export", "--tables", "public.quoted", "--table-format", "jsonl")
    assert result.exit_code == 3, result.output
    assert error_line(result.output).startswith(
        "Error: public.quoted holds a row too big to export: its line passes PostgreSQL's 1 GB limit (out of "
        "memory: Cannot enlarge string buffer"), result.output
    assert error_line(result.output).endswith(
        "(fix: leave it out with --exclude-tables public.quoted and copy it with pg_dump --data-only --table "
        "'\"public\".\"quoted\"')"), result.output


@pytest.mark.parametrize(("fmt", "body"), [("copy", b"\n\n"), ("jsonl", b"{}\n{}\n")])
def test_a_table_of_no_columns_moves_as_an_empty_line_per_row(cli, dbs, data_dir: Path, fmt: str, body: bytes) -> None:
    app_table(dbs, "markers", "CREATE TABLE public.markers ()", "INSERT INTO public.markers DEFAULT VALUES",
              "INSERT INTO public.markers DEFAULT VALUES")
    result = cli("export", "--tables", "public.markers", "--table-format", fmt)
    assert result.exit_code == 0, result.output
    assert (data_dir / "tables" / f"public.markers.{fmt}").read_bytes() == body
    imported = cli("import")
    assert imported.exit_code == 0, imported.output
    verified = cli("verify", "--tables", "public.markers")
    assert verified.exit_code == 0, verified.output
    with dbs.target() as conn:
        assert conn.execute("SELECT count(*) FROM public.markers").fetchone() == (2,)


def test_hostile_names_get_safe_file_names() -> None:
    assert table_file_name("edge", "Odd Table") == "edge.Odd%20Table.copy"
    assert table_file_name("public", 'a"b/c', "jsonl") == "public.a%22b%2Fc.jsonl"
    # x."y.z" and "x.y".z were both x.y.z.jsonl: one table's rows overwrote the other's
    assert (table_file_name("x", "y.z"), table_file_name("x.y", "z")) == ("x.y.z.copy", "x%2Ey.z.copy")


def test_rows_written_during_export_are_not_seen(dbs, tmp_path: Path) -> None:
    """Every table comes from the one snapshot taken when the export started."""
    writer = psycopg.connect(dbs.source_admin_url, autocommit=True)

    class WriteWhileExporting:
        def start(self, label: str, total: int | None) -> None:
            writer.execute("INSERT INTO public.organizations (name, slug) VALUES ('written during export', 'w-' || gen_random_uuid())")

        def advance(self, label: str, n: int = 1) -> None:
            pass

        def finish(self, label: str) -> None:
            pass

    try:
        before = writer.execute("SELECT count(*) FROM public.organizations").fetchone()[0]
        datadir = DataDir(tmp_path / "data")
        run_export(Endpoint(dbs.source_url, "source"), datadir, ExportOptions(), WriteWhileExporting())
        exported = datadir.table_file("public", "organizations").read_bytes().splitlines()
        assert len(exported) == before
        assert writer.execute("SELECT count(*) FROM public.organizations").fetchone()[0] > before
    finally:
        writer.close()


def test_rerun_finishes_missing_tables_and_keeps_complete_ones(cli, exported: Path) -> None:
    meta_path = exported / "metadata.json"
    meta = orjson.loads(meta_path.read_bytes())
    victim = next(t for t in meta["tables"] if t["name"] == "alerts")
    keeper = next(t for t in meta["tables"] if t["name"] == "readings")
    keeper_mtime = os.stat(exported / keeper["file"]).st_mtime_ns
    # an interrupted run: the table unfinished, its file half-written under its final name
    victim["complete"] = False
    (exported / victim["file"]).write_bytes(b'{"id": 1}\n')
    (exported / "tables" / "public.sites.copy.partial").write_bytes(b"half")
    meta["finishedAt"] = None
    meta_path.write_bytes(orjson.dumps(meta))
    result = cli("export", *EDGE)
    assert result.exit_code == 0, result.output
    assert "skipping public.readings: exported by a previous run" in result.output
    assert "skipping public.alerts" not in result.output
    assert os.stat(exported / keeper["file"]).st_mtime_ns == keeper_mtime
    new = orjson.loads(meta_path.read_bytes())
    alerts = next(t for t in new["tables"] if t["name"] == "alerts")
    assert alerts["complete"] and alerts["rowCount"] > 1
    assert alerts["bytes"] == os.path.getsize(exported / alerts["file"])
    assert not list(exported.glob("tables/*.partial"))
    forced = cli("export", "--force", *EDGE)
    assert forced.exit_code == 0 and "skipping" not in forced.output
    assert os.stat(exported / keeper["file"]).st_mtime_ns != keeper_mtime


def test_platform_schema_is_refused(cli) -> None:
    result = cli("export", "--schema", "storage")
    assert result.exit_code == 2
    assert "schema storage is a Supabase platform schema, not application data" in result.output


def test_tables_and_exclude_narrow_the_set(cli, data_dir: Path) -> None:
    result = cli("export", "--tables", "org*", "--tables", "public.sites", "--exclude-tables", "org_members")
    assert result.exit_code == 0, result.output
    meta = orjson.loads((data_dir / "metadata.json").read_bytes())
    assert sorted(t["name"] for t in meta["tables"]) == ["organizations", "sites"]


def test_named_user_id_column(cli, data_dir: Path) -> None:
    result = cli("export", "--tables", "sites", "--user-id-column", "public.sites.name")
    assert result.exit_code == 0, result.output
    meta = orjson.loads((data_dir / "metadata.json").read_bytes())
    assert meta["tables"][0]["userIdColumns"] == ["name"]
    bad = cli("export", "--user-id-column", "public.sites")
    assert bad.exit_code == 2 and "is not schema.table.column" in bad.output


def test_password_never_printed_or_logged(cli, env, exported: Path) -> None:
    log = Path(env["LOG_FILE_PATH"]).read_text()
    assert "s3cret-app-pw-!x" not in log
    result = cli("export", "--dry-run")
    assert "s3cret-app-pw-!x" not in result.output


def test_log_file_holds_the_steps_summaries_and_errors(cli, env, exported: Path) -> None:
    log = Path(env["LOG_FILE_PATH"]).read_text()
    assert "STEP export: started" in log and "STEP export: finished in" in log
    assert "Export summary: table | rows" in log
    assert "Exported " in log and "public.readings" in log
    failed = cli("export", "--schema", "vault")
    assert failed.exit_code == 2
    assert "ERROR supamove.terminal: Error: schema vault is a Supabase platform schema" in \
        Path(env["LOG_FILE_PATH"]).read_text()
    assert failed.output.count("platform schema") == 1  # shown once on the terminal


def files_of(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file() and p.name != "supamove.lock"}  # the lock names who holds the directory, not data


def test_finished_export_is_not_exported_again_without_force(cli, exported: Path) -> None:
    before = files_of(exported)
    result = cli("export", *EDGE)
    assert result.exit_code == 2
    finished = metadata(exported)["finishedAt"]
    assert re.fullmatch(
        rf"Error: the export in {re.escape(str(exported))} finished at {re.escape(finished)} \(\d+ s ago\) "
        r"\(fix: run `supamove export --force` to export again \(`--force --tables SCHEMA.TABLE` re-exports some "
        r"tables only\), or set --data-dir to a new directory\)", error_line(result.output)), result.output
    assert files_of(exported) == before


def test_an_export_this_version_cannot_read_is_not_written_over_without_force(cli, exported: Path,
                                                                            stack_auth) -> None:
    # A finished export of another version (or a damaged metadata.json) was exported over in silence, exit 0:
    # the refusal a finished export gets, and its --force, were skipped.
    meta = orjson.loads((exported / "metadata.json").read_bytes())
    meta["formatVersion"] = 3
    (exported / "metadata.json").write_bytes(orjson.dumps(meta))
    before = files_of(exported)
    for args in (("export", *EDGE), ("migrate", *EDGE)):
        result = cli(*args)
        assert result.exit_code == 5, (args, result.output)
        assert error_line(result.output) == (
            f"Error: {exported / 'metadata.json'} is format version 3, this supamove reads versions 1 and 2: the export "
            "there is not written over (fix: run `supamove export --force` to export everything again over it, "
            "or set --data-dir to another directory)")
        assert files_of(exported) == before
    forced = cli("export", *EDGE, "--force")
    assert forced.exit_code == 0, forced.output
    assert "is format version 3, this supamove reads versions 1 and 2: exporting everything again over it (--force)" \
        in " ".join(forced.output.split())
    assert orjson.loads((exported / "metadata.json").read_bytes())["formatVersion"] == 2


def test_table_pattern_matching_nothing_is_an_error(cli, data_dir: Path) -> None:
    result = cli("export", "--tables", "reading")
    assert result.exit_code == 2
    assert error_line(result.output) == (
        f"Error: --tables reading matches no table; the tables of public are: {PUBLIC_TABLES} "
        "(fix: check the pattern (name or schema.name, shell patterns such as 'readings*'))")
    assert not files_of(data_dir)  # found before anything is written
    left = cli("export", "--exclude-tables", "*", "--exclude-tables", "reading")
    assert left.exit_code == 2
    assert error_line(left.output) == (
        f"Error: --exclude-tables * reading leaves no table to export; the tables of public are: {PUBLIC_TABLES} "
        "(fix: exclude fewer tables)")
    assert not files_of(data_dir)
    # A mistyped --exclude-tables left nothing out: the table meant to stay behind was exported, exit 0.
    for args in (("--dry-run",), ()):
        typo = cli("export", "--exclude-tables", "alerts", "--exclude-tables", "reading", *args)
        assert typo.exit_code == 2, typo.output
        assert error_line(typo.output) == (
            f"Error: --exclude-tables reading matches no table; the tables of public are: {PUBLIC_TABLES} "
            "(fix: check the pattern (name or schema.name, shell patterns such as 'readings*'))")
        assert not files_of(data_dir)


def test_typo_over_a_finished_export_changes_nothing(cli, exported: Path) -> None:
    before = files_of(exported)
    result = cli("export", "--force", *EDGE, "--tables", "reading", "--tables", "sites")
    assert result.exit_code == 2
    assert error_line(result.output).startswith(
        "Error: --tables reading matches no table; the tables of edge, public are: edge.")
    assert files_of(exported) == before


def test_force_tables_exports_one_table_again_and_keeps_the_others(cli, exported: Path) -> None:
    old, old_meta = entries(exported), metadata(exported)
    assert old_meta["snapshotsDiffer"] is False
    before = files_of(exported)
    result = cli("export", "--force", "--tables", "sites")
    assert result.exit_code == 0, result.output
    new, meta = entries(exported), metadata(exported)
    assert list(new) == list(old)
    assert new["public.sites"]["snapshot"] == meta["snapshot"] != old["public.sites"]["snapshot"]
    assert new["public.sites"]["sha256"] == old["public.sites"]["sha256"]  # the same rows, read again
    assert {k: v for k, v in new.items() if k != "public.sites"} == {k: v for k, v in old.items() if k != "public.sites"}
    assert meta["snapshotsDiffer"] is True and meta["finishedAt"] > old_meta["finishedAt"]
    assert (meta["schemas"], meta["loadOrder"]) == (old_meta["schemas"], old_meta["loadOrder"])
    assert meta["sequences"] == old_meta["sequences"]
    assert meta["userIdValueCheck"]["columns"] == old_meta["userIdValueCheck"]["columns"]
    after = files_of(exported)
    assert {k: v for k, v in after.items() if "sites" not in k and k != "metadata.json"} == \
        {k: v for k, v in before.items() if "sites" not in k and k != "metadata.json"}
    assert after["tables/public.sites.copy"][1] != before["tables/public.sites.copy"][1]
    # a table named by --exclude-tables leaves the export; the others not selected stay
    dropped = cli("export", "--force", "--tables", "sites", "--exclude-tables", "alerts")
    assert dropped.exit_code == 0, dropped.output
    assert set(entries(exported)) == set(old) - {"public.alerts"}


def test_an_export_of_format_version_1_resumes_in_copy_text_and_imports(cli, dbs, exported_jsonl: Path) -> None:
    """An export an earlier version left (JSON Lines only, no `format`, format version 1) is resumed, not
    written again: its finished files stay as they are, the rest is written in COPY text, the import reads both."""
    data_dir = exported_jsonl
    meta = metadata(data_dir)
    meta["formatVersion"], meta["finishedAt"] = 1, None
    for item in meta["tables"] + meta["auth"]:
        del item["format"]
    next(t for t in meta["tables"] if t["name"] == "alerts")["complete"] = False
    (data_dir / "metadata.json").write_bytes(orjson.dumps(meta))
    kept = {k: v for k, v in files_of(data_dir).items() if k.endswith(".jsonl") and "alerts" not in k}
    result = cli("export", *EDGE)
    assert result.exit_code == 0, result.output
    resumed = entries(data_dir)
    assert (resumed["public.alerts"]["file"], resumed["public.alerts"]["format"]) == ("tables/public.alerts.copy", "copy")
    assert (resumed["public.sites"]["file"], resumed["public.sites"]["format"]) == ("tables/public.sites.jsonl", "jsonl")
    assert not (data_dir / "tables" / "public.alerts.jsonl").exists()  # no entry names it any more
    assert {k: v for k, v in files_of(data_dir).items() if k in kept} == kept
    assert metadata(data_dir)["formatVersion"] == 2
    write_mapping(dbs, data_dir)
    imported = cli("import")
    assert imported.exit_code == 0, imported.output
    assert_verify_passes(cli)


def interrupted(data_dir: Path, table: str) -> None:
    """metadata.json as a run killed before `table` was whole leaves it."""
    meta = metadata(data_dir)
    meta["finishedAt"] = None
    next(t for t in meta["tables"] if t["name"] == table)["complete"] = False
    (data_dir / "metadata.json").write_bytes(orjson.dumps(meta))


def test_an_export_of_another_source_is_neither_resumed_nor_added_to(cli, dbs, data_dir: Path, monkeypatch) -> None:
    app_table(dbs, "only_here", "CREATE TABLE public.only_here (id int PRIMARY KEY)", "INSERT INTO public.only_here VALUES (1)")
    assert cli("export", *EDGE).exit_code == 0
    first = metadata(data_dir)["source"]
    with dbs.source() as conn:
        oid, system = conn.execute("SELECT oid, (SELECT system_identifier::text FROM pg_control_system()) "
                                   "FROM pg_database WHERE datname = current_database()").fetchone()
    interrupted(data_dir, "alerts")
    other = create_database(dbs.source_server, f"{dbs.source_db}_b", "source_template")
    try:
        with psycopg.connect(other, autocommit=True) as conn:
            conn.execute("INSERT INTO public.organizations (name, slug) VALUES ('only in b', 'only-in-b')")
            b_oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
        b_url = dbs.source_server.url(f"{dbs.source_db}_b", fixtures.APP_ROLE, APP_PASSWORD)
        monkeypatch.setenv("SUPABASE_DB_URL", b_url)
        before = files_of(data_dir)
        for args in (EDGE, (*EDGE, "--tables", "sites"), (*EDGE, "--force", "--tables", "sites"), ("--auth-only",)):
            refused = cli("export", *args)
            assert refused.exit_code == 2, refused.output
            line = error_line(refused.output)
            assert line.startswith(f"Error: the export in {data_dir} was read from another database: "
                                   f"{first['url']} (database {dbs.source_db}, oid {oid}, system identifier {system}); "
                                   f"SUPABASE_DB_URL now names {redact_url(b_url)} (database {dbs.source_db}_b, "
                                   f"oid {b_oid}, system identifier {system}) (fix: "), line
            assert line.endswith("(fix: run `supamove export --force` to export everything again from this source, "
                                 "or set --data-dir to another directory)"), line
            assert files_of(data_dir) == before
        assert (first["database"], first["databaseOid"], first["systemIdentifier"]) == (dbs.source_db, oid, system)

        again = cli("export", "--force", *EDGE)
        assert again.exit_code == 0, again.output
        assert "was read from " + first["url"] + ": exporting everything again from this source" in \
            " ".join(again.output.split())
        meta = metadata(data_dir)
        assert (meta["source"]["database"], meta["source"]["databaseOid"]) == (f"{dbs.source_db}_b", b_oid)
        assert {e["snapshot"] for e in entries(data_dir).values()} == {meta["snapshot"]}
        assert "public.only_here" not in entries(data_dir)  # a table of the other source only
        assert not (data_dir / "tables" / "public.only_here.copy").exists()
        assert b"only in b" in (data_dir / "tables" / "public.organizations.copy").read_bytes()

        # an export of a version that recorded no source identity resumes as before
        interrupted(data_dir, "alerts")
        older = metadata(data_dir)
        for key in ("systemIdentifier", "database", "databaseOid"):
            del older["source"][key]
        (data_dir / "metadata.json").write_bytes(orjson.dumps(older))
        resumed = cli("export", *EDGE)
        assert resumed.exit_code == 0, resumed.output
        assert "skipping public.sites: exported by a previous run" in resumed.output
        assert metadata(data_dir)["source"]["databaseOid"] == b_oid
    finally:
        with dbs.source() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(f"{dbs.source_db}_b")))


def test_a_source_user_that_may_not_read_the_clusters_identity_records_the_database_alone(
        cli, dbs, data_dir: Path) -> None:
    """pg_control_system() revoked from the source's user: export, import and verify stopped with "unexpected
    InsufficientPrivilege" (a CASE around the call does not keep PostgreSQL from checking its privilege)."""
    with dbs.source() as conn:
        conn.execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
    result = cli("export", *EDGE)
    assert result.exit_code == 0, result.output
    source = metadata(data_dir)["source"]
    assert (source["systemIdentifier"], source["database"]) == (None, dbs.source_db)
    for args in (("export", "--auth-only"), ("import", "--dry-run"), ("verify", "--skip-checksum")):
        checked = cli(*args)
        assert "unexpected" not in checked.output and "InsufficientPrivilege" not in checked.output, (args, checked.output)


def test_a_table_gone_from_the_source_leaves_the_export(cli, dbs, data_dir: Path) -> None:
    for name in ("legacy", "renamed", "dropped_later"):
        app_table(dbs, name, f"CREATE TABLE public.{name} (id serial PRIMARY KEY, note text)",
                  f"INSERT INTO public.{name} (note) VALUES ('stale')", on_target=False)
    assert cli("export", *EDGE).exit_code == 0
    before = entries(data_dir)
    with dbs.source() as conn:
        conn.execute("DROP TABLE public.legacy")
        conn.execute("ALTER TABLE public.renamed RENAME TO renamed_now")
    forced = cli("export", "--force", *EDGE, "--tables", "sites")
    assert forced.exit_code == 0, forced.output
    shown = " ".join(forced.output.split())
    for name in ("legacy", "renamed"):
        assert f"public.{name} no longer exists in the source: its file and its entry leave the export" in shown
        assert not (data_dir / "tables" / f"public.{name}.copy").exists()
    assert "keeping public.dropped_later: not selected, exported by an earlier run" in shown  # as before
    assert set(entries(data_dir)) == set(before) - {"public.legacy", "public.renamed"}
    meta = metadata(data_dir)
    assert not {"public.legacy", "public.renamed"} & {name for group in meta["loadOrder"] for name in group}
    assert not {"legacy_id_seq", "renamed_id_seq"} & {s["name"] for s in meta["sequences"]}

    # an interrupted export resumed: the same
    interrupted(data_dir, "alerts")
    with dbs.source() as conn:
        conn.execute("DROP TABLE public.dropped_later")
    resumed = cli("export", *EDGE, "--tables", "alerts")
    assert resumed.exit_code == 0, resumed.output
    assert "public.dropped_later no longer exists in the source" in " ".join(resumed.output.split())
    assert "public.dropped_later" not in entries(data_dir)
    assert not (data_dir / "tables" / "public.dropped_later.copy").exists()
    again = cli("export", "--force", *EDGE)
    assert again.exit_code == 0, again.output
    assert metadata(data_dir)["snapshotsDiffer"] is False and "public.renamed_now" in entries(data_dir)


def test_metadata_json_reads_and_writes_back_unchanged(exported: Path) -> None:
    path = exported / "metadata.json"
    raw = path.read_bytes()
    assert orjson.dumps(Metadata.load(DataDir(exported)).to_dict(), option=orjson.OPT_INDENT_2) + b"\n" == raw
    # an export of an older version lacks the keys added since; one of a later version has keys this one
    # does not know: both load, and are written back as they were
    older = orjson.loads(raw)
    for key in ("snapshotsDiffer", "unexportedSchemas", "options", "userIdValueCheck"):
        del older[key]
    older["laterKey"] = {"kept": True}
    older["tables"][0]["laterField"] = [1]
    path.write_bytes(orjson.dumps(older))
    meta = Metadata.load(DataDir(exported))
    assert meta.to_dict() == older
    del older["tables"][0]["userIdFoundBy"], older["tables"][0]["columns"][0]["baseType"]
    path.write_bytes(orjson.dumps(older))
    entry = Metadata.load(DataDir(exported)).tables[0]
    assert entry.table.user_id_found_by == () and entry.table.columns[0].base_type == entry.table.columns[0].type


def test_tables_whose_names_hold_dots_keep_their_own_files_and_names(cli, dbs) -> None:
    # x."y.z" and "x.y".z were both x.y.z.jsonl and both "x.y.z": one's rows overwrote the other's (exit 0), or
    # the progress display stopped with an unexpected KeyError.
    ddl = 'CREATE SCHEMA x; CREATE SCHEMA "x.y"; CREATE TABLE x."y.z" (id integer PRIMARY KEY, v text); ' \
          'CREATE TABLE "x.y".z (id integer PRIMARY KEY, v text);'
    with dbs.source() as conn:
        conn.execute(ddl)
        conn.execute('GRANT USAGE ON SCHEMA x, "x.y" TO supabase_app; '
                     'GRANT SELECT ON x."y.z", "x.y".z TO supabase_app')
        conn.execute('INSERT INTO x."y.z" VALUES (1, \'in x\'); INSERT INTO "x.y".z VALUES (1, \'in x.y\'), (2, \'too\')')
    with dbs.target() as conn:
        conn.execute(ddl)
    for step in (("export", "--schema", "x", "--schema", "x.y", "--jobs", "2"), ("import",),
                 ("verify", "--skip-checksum"), ("verify",)):
        result = cli(*step)
        assert result.exit_code == 0, (step, result.output)
    assert 'x."y.z"' in result.output and '"x.y".z' in result.output
    with dbs.target() as conn:
        assert conn.execute('SELECT v FROM x."y.z"').fetchall() == [("in x",)]
        assert conn.execute('SELECT v FROM "x.y".z ORDER BY id').fetchall() == [("in x.y",), ("too",)]


def test_a_table_the_user_may_not_read_is_named_before_anything_is_read(cli, dbs, data_dir: Path) -> None:
    # The dry run stopped with "unexpected InsufficientPrivilege" (the plan's checks read the table), and the
    # export wrote the other tables before it stopped at that one.
    role = fixtures.APP_ROLE
    with dbs.source() as conn:
        conn.execute(f"REVOKE SELECT ON public.sites FROM {role}")
        conn.execute(f'CREATE TABLE public."Partly" (id integer PRIMARY KEY, secret text); '
                     f'GRANT SELECT (id) ON public."Partly" TO {role}')
    for args in (("--dry-run",), ()):
        result = cli("export", *args)
        assert result.exit_code == 3, result.output
        assert error_line(result.output) == (
            'Error: the user in SUPABASE_DB_URL may not read public.Partly, public.sites (fix: on the source, '
            'GRANT SELECT ON "public"."Partly", "public"."sites" TO that user (and USAGE on its schema); or use the '
            "postgres user; or leave them out with --exclude-tables)")
        assert not (data_dir / "tables").exists() or not any((data_dir / "tables").iterdir())
    result = cli("export", "--exclude-tables", "public.sites", "--exclude-tables", "public.Partly")
    assert result.exit_code == 0, result.output


def test_a_sequence_the_user_may_not_read_is_named_before_anything_is_read(cli, dbs, data_dir: Path) -> None:
    # An identity column's sequence, and one in a schema the user may not use: the export read every table, then
    # stopped with "unexpected InsufficientPrivilege".
    role = fixtures.APP_ROLE
    with dbs.source() as conn:
        conn.execute("CREATE TABLE public.tickets (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title text)")
        conn.execute(f"GRANT SELECT ON public.tickets TO {role}; REVOKE ALL ON SEQUENCE public.tickets_id_seq FROM {role}")
        conn.execute("CREATE SCHEMA numbering; CREATE SEQUENCE numbering.invoice_seq; "
                     "REVOKE ALL ON SCHEMA numbering FROM PUBLIC; "
                     "CREATE TABLE public.invoices (n bigint PRIMARY KEY DEFAULT nextval('numbering.invoice_seq'))")
        conn.execute(f"GRANT SELECT ON public.invoices TO {role}")
    result = cli("export")
    assert result.exit_code == 3, result.output
    assert error_line(result.output) == (
        "Error: the user in SUPABASE_DB_URL may not read sequence numbering.invoice_seq, public.tickets_id_seq "
        '(fix: on the source, GRANT SELECT ON SEQUENCE "numbering"."invoice_seq", "public"."tickets_id_seq" TO that '
        "user (and USAGE on its schema); or use the postgres user)")
    assert not (data_dir / "tables").exists() or not any((data_dir / "tables").iterdir())
