"""schema.sql applied to the target in one transaction, after checking the target can take it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

from supamove.db import Endpoint, connection, first_line
from supamove.log import get_logger
from supamove.paths import DataDir
from supamove.schema.model import Extension

log = get_logger("schema")


@dataclass
class ApplyResult:
    tables: int
    seconds: float


def missing_extensions(conn: psycopg.Connection, extensions: list[Extension]) -> list[str]:
    """The extensions the target's server cannot create (not installed there)."""
    names = [x.name for x in extensions]
    available = {r[0] for r in conn.execute(
        "SELECT name FROM pg_available_extensions WHERE name = ANY(%s)", (names,))}
    return [n for n in names if n not in available]


def existing_tables(conn: psycopg.Connection, tables: list[str]) -> list[str]:
    """Those of `tables` (schema.name) the target already has."""
    pairs = [t.split(".", 1) for t in tables]
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN unnest(%s::text[], %s::text[]) AS w(s, t) ON w.s = n.nspname AND w.t = c.relname ORDER BY 1",
        ([p[0] for p in pairs], [p[1] for p in pairs])).fetchall()
    return [r[0] for r in rows]


def apply_schema(target: Endpoint, datadir: DataDir, tables: list[str], extensions: list[Extension]) -> ApplyResult:
    """Run schema.sql on the target in one transaction: all of it, or nothing."""
    started = time.monotonic()
    script = datadir.schema_sql.read_text(encoding="utf-8")
    with connection(target, autocommit=True) as conn:  # transaction() below is then the real one
        check_target(conn, target, tables, extensions)
        try:
            with conn.transaction():
                conn.execute(script.encode())
        except psycopg.Error as exc:
            raise target.error(f"the target refused {datadir.schema_sql.name}: {first_line(exc)}; nothing was applied",
                               f"correct the statement in {datadir.schema_sql} (or its cause on the source), "
                               "then run `supamove schema --apply` again") from exc
    log.info("applied %s to the target: %d tables", datadir.schema_sql, len(tables))
    return ApplyResult(len(tables), time.monotonic() - started)


def check_target(conn: psycopg.Connection, target: Endpoint, tables: list[str], extensions: list[Extension]) -> None:
    """Refuse before changing anything: an extension the server lacks, a table already there."""
    missing = missing_extensions(conn, extensions)
    if missing:
        raise target.error(f"the target cannot create extension {', '.join(missing)}: not installed on its server",
                           "install it on the target's server (citext, pg_trgm, uuid-ossp and the like are in "
                           "the postgresql-contrib package), then run `supamove schema --apply` again")
    present = existing_tables(conn, tables)
    if present:
        raise target.error(f"the target already has {len(present)} of the tables: {', '.join(present)}",
                           "apply the schema to an empty database, or drop those tables first")
