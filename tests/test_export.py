"""export: the plan, the files and metadata.json, one snapshot, exact text, resuming."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import orjson
import psycopg
from conftest import EDGE

from supamove.db import Endpoint
from supamove.export import ExportOptions, run_export
from supamove.paths import DataDir, table_file_name


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
    assert meta["formatVersion"] == 1
    assert meta["finishedAt"] and meta["startedAt"] and meta["snapshot"]
    assert meta["source"]["serverVersion"].startswith("15")
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
    for path in [exported / "metadata.json", *exported.glob("*/*.jsonl")]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    users = lines(exported / "auth" / "auth.users.jsonl")
    assert any(u["encrypted_password"] and u["encrypted_password"].startswith("$2a$") for u in users)


def test_values_are_postgres_text_forms(exported: Path, dbs) -> None:
    rows = lines(exported / "tables" / table_file_name("edge", "types_zoo"))
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


def test_hostile_names_get_safe_file_names() -> None:
    assert table_file_name("edge", "Odd Table") == "edge.Odd%20Table.jsonl"
    assert table_file_name("public", 'a"b/c') == "public.a%22b%2Fc.jsonl"


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
        exported = lines(datadir.table_file("public", "organizations"))
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
    (exported / "tables" / "public.sites.jsonl.partial").write_bytes(b"half")
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
