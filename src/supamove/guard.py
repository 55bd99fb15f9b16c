"""Refusals that keep Supabase read-only: a target that is the source, or a target that is a Supabase project."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from supamove.catalog import PLATFORM_SCHEMAS
from supamove.db import Endpoint, connection
from supamove.errors import SupamoveError
from supamove.log import get_logger

log = get_logger("guard")
# The platform schemas only a Supabase project has: a self-hosted target may well have auth (the
# compatibility schema supamove creates), extensions, cron or PostGIS's, never these.
SUPABASE_ONLY_SCHEMAS = PLATFORM_SCHEMAS & {
    "storage", "realtime", "supabase_functions", "supabase_migrations", "_realtime", "_analytics", "_supavisor",
    "graphql", "graphql_public", "vault", "pgsodium", "pgsodium_masks"}
SAME_DATABASE_FIX = ("set DATABASE_URL to the new PostgreSQL database, not Supabase's "
                     "(SUPABASE_DB_URL is only ever read)")


@dataclass(frozen=True)
class ServerIdentity:
    """What tells one database from another, readable by any user on either side."""

    system_identifier: int | None  # pg_control_system(): None where the user may not call it
    started: datetime  # pg_postmaster_start_time(): differs between any two running servers
    database_oid: int
    database: str

    def same_server(self, other: ServerIdentity) -> bool:
        """The same running server (cluster), whatever the URLs say: its start time tells any two apart."""
        systems = (self.system_identifier, other.system_identifier)
        return (None in systems or systems[0] == systems[1]) and self.started == other.started

    def same_database(self, other: ServerIdentity) -> bool:
        return self.same_server(other) and self.database_oid == other.database_oid

    def recorded(self) -> dict[str, Any]:
        """What metadata.json's `source` keeps of it, for a rerun to compare: not the start time, which a
        restart changes. The system identifier as text: a 64-bit number is not exact in every JSON reader."""
        system = None if self.system_identifier is None else str(self.system_identifier)
        return {"systemIdentifier": system, "database": self.database, "databaseOid": self.database_oid}


def server_identity(conn: psycopg.Connection) -> ServerIdentity:
    """The identity of the database `conn` is connected to; the cluster's system identifier only where the
    user may call pg_control_system() (a CASE around the call does not help: the privilege of a function in
    FROM is checked when the query is planned, so the call is a query of its own)."""
    row = conn.execute("""
        SELECT has_function_privilege('pg_control_system()', 'EXECUTE'), pg_postmaster_start_time(),
               d.oid::bigint, current_database()
        FROM pg_database d WHERE d.datname = current_database()""").fetchone()
    assert row is not None
    system = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone() if row[0] else None
    return ServerIdentity(system[0] if system else None, row[1], row[2], row[3])


def supabase_traits(conn: psycopg.Connection) -> list[str]:
    """What makes the database `conn` is connected to a Supabase project: auth.users and its own schemas."""
    row = conn.execute("""
        SELECT to_regclass('auth.users') IS NOT NULL,
               array(SELECT nspname::text FROM pg_namespace WHERE nspname = ANY(%s) ORDER BY 1)""",
                       (sorted(SUPABASE_ONLY_SCHEMAS),)).fetchone()
    assert row is not None
    schemas = list(row[1])
    return (["auth.users"] if row[0] else []) + (
        [f"the schema{'s' if len(schemas) > 1 else ''} {', '.join(schemas)}"] if schemas else [])


def target_problem(target: ServerIdentity, traits: list[str], source: ServerIdentity | None) -> str | None:
    """Why the target must not be written to, or None."""
    if source is not None and source.same_database(target):
        return (f"DATABASE_URL and SUPABASE_DB_URL name the same database ({target.database}): "
                "writing to the target would change the source")
    if traits:
        return (f"the target database ({target.database}) holds Supabase's {' and '.join(traits)}: "
                "it is a Supabase project, not the new PostgreSQL")
    return None


def target_on_source_server(target: ServerIdentity, source: ServerIdentity | None) -> str | None:
    """A warning when the target is another database of the source's own server: not refused (a rehearsal may
    use one server), but in a cutover the data would stay on Supabase's server and go when the project does."""
    if source is None or not source.same_server(target) or source.same_database(target):
        return None
    return (f"the target database ({target.database}) is on the source's own server, beside {source.database}: "
            "the data would not leave it; set DATABASE_URL to the new PostgreSQL server unless this is a rehearsal")


def check_target(target: Endpoint, source: Endpoint | None) -> Endpoint:
    """The target, once it is known not to be the source nor a Supabase project (else a TargetError)."""
    with connection(target, autocommit=True) as conn:
        identity, traits = server_identity(conn), supabase_traits(conn)
    source_identity = _source_identity(source)
    problem = target_problem(identity, traits, source_identity)
    if problem is not None:
        raise target.error(f"refused: {problem}", SAME_DATABASE_FIX)
    if (warning := target_on_source_server(identity, source_identity)) is not None:
        log.warning("%s", warning)
    return target


def _source_identity(source: Endpoint | None) -> ServerIdentity | None:
    """The source's identity; None when unset or unreachable (the Supabase traits still guard the target)."""
    if source is None:
        return None
    try:
        with connection(source, autocommit=True) as conn:
            return server_identity(conn)
    except SupamoveError as exc:
        log.debug("source identity not read (%s): the target is checked for Supabase's traits only", exc)
        return None
