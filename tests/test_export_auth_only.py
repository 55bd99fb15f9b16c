"""export --auth-only: the auth tables again from a fresh snapshot, the application's entries untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import psycopg
from conftest import EDGE, entries, error_line, metadata


def test_auth_only_replaces_the_auth_entries_and_nothing_else(cli, dbs, data_dir: Path) -> None:
    assert cli("export", *EDGE).exit_code == 0
    before = metadata(data_dir)
    files = {e["file"]: (data_dir / e["file"]).stat().st_mtime_ns for e in before["tables"]}
    with psycopg.connect(dbs.source_admin_url, autocommit=True) as conn:
        conn.execute("UPDATE auth.users SET encrypted_password = NULL WHERE email = 'alice@freshtrack.test'")
        conn.execute("DELETE FROM auth.mfa_factors")
    result = cli("export", "--auth-only")
    assert result.exit_code == 0, result.output
    assert "Exported 3 tables" in result.output
    after = metadata(data_dir)
    assert after["tables"] == before["tables"]  # every application entry, as it was
    assert {k: v for k, v in after.items() if k not in ("auth", "snapshotsDiffer")} == \
        {k: v for k, v in before.items() if k not in ("auth", "snapshotsDiffer")}
    assert after["snapshotsDiffer"] is True  # the users are of a later snapshot than the tables
    assert {e["file"]: (data_dir / e["file"]).stat().st_mtime_ns for e in after["tables"]} == files
    auth = entries(data_dir)
    assert auth["auth.mfa_factors"]["rowCount"] == 0 and auth["auth.mfa_factors"]["complete"] is True
    assert auth["auth.users"]["snapshot"] != before["snapshot"]
    body = (data_dir / auth["auth.users"]["file"]).read_bytes()
    assert hashlib.sha256(body).hexdigest() == auth["auth.users"]["sha256"]
    alice = next(orjson.loads(line) for line in body.splitlines() if b"alice@freshtrack.test" in line)
    assert alice["encrypted_password"] is None  # read after the change


def test_auth_only_before_any_export_leaves_the_export_unfinished(cli, data_dir: Path) -> None:
    result = cli("export", "--auth-only")
    assert result.exit_code == 0, result.output
    meta = metadata(data_dir)
    assert meta["tables"] == [] and meta["finishedAt"] is None
    assert sorted(e["name"] for e in meta["auth"]) == ["identities", "mfa_factors", "users"]
    refused = cli("import")
    assert refused.exit_code != 0
    assert f"the export in {data_dir} is not finished" in refused.output


def test_auth_only_takes_no_other_option(cli, data_dir: Path) -> None:
    result = cli("export", "--auth-only", "--force")
    assert result.exit_code == 2
    assert error_line(result.output) == ("Error: --auth-only exports the auth tables alone: it takes no other "
                                         "option (fix: run `supamove export --auth-only` by itself)")
    assert [p.name for p in data_dir.rglob("*")] == ["supamove.lock"]  # refused before anything is exported
