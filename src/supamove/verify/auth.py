"""Supabase Auth's users on the source, unchanged since the export: else Stack Auth lacks what changed.

The export fingerprinted each auth table in its snapshot (`authstate`); the same columns are fingerprinted
again now. A sign-up or a change during the freeze fails verify, with the way to carry it.
"""

from __future__ import annotations

import psycopg

from supamove.authstate import fingerprint
from supamove.db import Endpoint, connect, first_line
from supamove.metadata import Metadata
from supamove.paths import DataDir
from supamove.verify.model import AuthCheck

CHANGED = "changed on the source since the export"


def auth_checks(source: Endpoint, datadir: DataDir) -> list[AuthCheck]:
    """Each auth table the export fingerprinted, compared with the source now; none without metadata.json."""
    if not datadir.metadata.exists():
        return []
    recorded = [e for e in Metadata.load(datadir, require_complete=False).auth if e.fingerprint is not None]
    if not recorded:
        return []
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
                    check.failures.append(CHANGED)
            checks.append(check)
    return checks
