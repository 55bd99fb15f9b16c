"""Supabase Auth's users on the source, unchanged since the export: else Stack Auth lacks what changed.

The export fingerprinted each auth table in its snapshot (`authstate`); the same columns are fingerprinted
again now. A sign-up or a change during the freeze fails verify, with the way to carry it.
"""

from __future__ import annotations

import psycopg

from supamove.authstate import fingerprint
from supamove.db import Endpoint, connect, first_line
from supamove.files import read_json
from supamove.metadata import Metadata, TableEntry
from supamove.paths import DataDir
from supamove.verify.model import AUTH_CHANGED, AuthCheck
from supamove.words import counted


def auth_checks(source: Endpoint, datadir: DataDir) -> list[AuthCheck]:
    """Each auth table the export fingerprinted, compared with the source now; auth.users also with what the
    last `migrate-users` read and did. None without metadata.json."""
    if not datadir.metadata.exists():
        return []
    recorded = [e for e in Metadata.load(datadir, require_complete=False).auth if e.fingerprint is not None]
    if not recorded:
        return []
    checks = _compared_now(source, recorded)
    for check, entry in zip(checks, recorded, strict=True):
        if entry.name == "users":
            check.failures += carried(datadir, entry.sha256)
    return checks


def carried(datadir: DataDir, exported: str | None) -> list[str]:
    """Why the users of this auth export are not all in Stack Auth by the last migrate-users' report, if so."""
    if not datadir.users_report.exists():
        return []  # no migrate-users yet: the import says what its user ids need
    report = read_json(datadir.users_report, "migrate-users")
    header = report if isinstance(report, dict) else {}
    read = (header.get("authExport") or {}).get("usersSha256") if isinstance(header.get("authExport"), dict) else None
    if read is not None and read != exported:
        return ["`supamove migrate-users` has not run since this auth export: what it holds is not all in "
                "Stack Auth"]
    failed = (header.get("summary") or {}).get("failed") if isinstance(header.get("summary"), dict) else None
    if isinstance(failed, int) and failed:
        return [f"{counted(failed, 'user')} failed in the last `supamove migrate-users` (see {datadir.users_report})"]
    return []


def _compared_now(source: Endpoint, recorded: list[TableEntry]) -> list[AuthCheck]:
    checks = []
    with connect(source, autocommit=True) as conn:
        for entry in recorded:
            assert entry.fingerprint is not None
            check = AuthCheck(entry.schema, entry.name, entry.fingerprint.rows)
            try:
                now = fingerprint(conn, entry.schema, entry.name, entry.fingerprint.columns)
            except psycopg.Error as exc:
                check.failures.append(f"could not read {entry.qualified} on the source: {first_line(exc)}")
            else:
                check.source_rows = now.rows
                if now != entry.fingerprint:
                    check.failures.append(AUTH_CHANGED)
            checks.append(check)
    return checks
