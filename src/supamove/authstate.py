"""A fingerprint of what the users' migration reads from Supabase Auth's tables.

The export records it for each auth table, in the snapshot its files come from; verify computes it again
on the source. A sign-up, a new password, a changed e-mail or a linked identity during the freeze changes
it, and the user in Stack Auth would be stale without a word. A sign-in does not: the columns it moves
(last_sign_in_at, updated_at, identity_data's claims) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from supamove.catalog import Table

# The columns supamove reads, per auth table (those a table lacks, in an older Supabase Auth, are skipped).
FIELDS = {
    "users": ("id", "email", "phone", "encrypted_password", "email_confirmed_at", "raw_user_meta_data",
              "raw_app_meta_data", "is_anonymous", "deleted_at", "banned_until", "is_sso_user"),
    "identities": ("id", "user_id", "provider", "provider_id"),
    "mfa_factors": ("id", "user_id", "factor_type", "status", "secret"),
}


@dataclass(frozen=True)
class Fingerprint:
    """The rows of an auth table and one digest of the columns supamove reads, order-independent."""

    columns: tuple[str, ...]
    rows: int
    md5: str

    def to_dict(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "rows": self.rows, "md5": self.md5}

    @classmethod
    def from_dict(cls, data: Any) -> Fingerprint | None:
        """The recorded fingerprint; None when there is none (an export of an older supamove). One that is not
        one is a damaged metadata.json (ValueError): verify would otherwise skip that table without a word."""
        if data is None:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) \
                or not all(isinstance(c, str) for c in data["columns"]) or not isinstance(data.get("rows"), int) \
                or isinstance(data["rows"], bool) or not isinstance(data.get("md5"), str):
            raise ValueError(f"fingerprint is {str(data)[:60]}, not the export's")
        return cls(tuple(data["columns"]), data["rows"], data["md5"])


def fingerprint_columns(table: Table) -> tuple[str, ...]:
    present = {c.name for c in table.columns}
    return tuple(c for c in FIELDS.get(table.name, ()) if c in present)


def fingerprint(conn: psycopg.Connection, schema: str, name: str, columns: tuple[str, ...]) -> Fingerprint:
    """The table's fingerprint as this session sees it (inside the export's snapshot, or now)."""
    row_text = sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
    query = sql.SQL("SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '') "
                    "FROM (SELECT {} AS h FROM {}) hashed").format(row_text, sql.Identifier(schema, name))
    rows, digest = conn.execute(query).fetchone() or (0, "")
    return Fingerprint(columns, int(rows), str(digest))
