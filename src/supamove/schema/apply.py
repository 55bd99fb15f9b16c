"""schema.sql applied to the target in one transaction, after checking the target can take it."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from supamove.db import Endpoint, connection, first_line
from supamove.log import get_logger
from supamove.paths import DataDir
from supamove.schema.model import Extension, SecurityDefiner, path_text

log = get_logger("schema")


@dataclass
class ApplyResult:
    tables: int
    seconds: float
    applied_before: str | None = None  # when this same schema.sql was applied by an earlier run: nothing done
    warnings: list[str] = field(default_factory=list)  # what schema.sql could not do, and what to run for it


BANNER_START = "-- The application schema for the target, written by `supamove schema` at "
# The schema.sql applied, by SHA-256, recorded in its transaction: a rerun (after a Ctrl-C that came once
# it had committed, say) finds its work done instead of refusing a target that holds the tables.
RECORD = ("CREATE SCHEMA IF NOT EXISTS _supamove",
          "CREATE TABLE IF NOT EXISTS _supamove.schema_applied (sha256 text PRIMARY KEY, "
          "applied_at timestamptz NOT NULL DEFAULT now())")


def missing_extensions(conn: psycopg.Connection, extensions: list[Extension]) -> list[str]:
    """The extensions the target's server cannot create (not installed there)."""
    names = [x.name for x in extensions]
    available = {r[0] for r in conn.execute(
        "SELECT name FROM pg_available_extensions WHERE name = ANY(%s)", (names,))}
    return [n for n in names if n not in available]


# For each extension schema.sql creates: whether it is there already, whether this user may create it (a superuser,
# or a trusted extension: citext, pgcrypto, pg_trgm), and this user's USAGE and CREATE on its schema, if there.
EXTENSION_RIGHTS_SQL = """
SELECT w.name, w.schema, EXISTS (SELECT FROM pg_extension e WHERE e.extname = w.name),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       OR coalesce((SELECT v.trusted FROM pg_available_extension_versions v JOIN pg_available_extensions a
                    ON a.name = v.name AND a.default_version = v.version WHERE v.name = w.name), false),
       n.oid IS NULL OR has_schema_privilege(n.oid, 'USAGE'), n.oid IS NULL OR has_schema_privilege(n.oid, 'CREATE')
FROM unnest(%s::text[], %s::text[]) AS w(name, schema) LEFT JOIN pg_namespace n ON n.nspname = w.schema
ORDER BY 1
"""


def check_extension_rights(conn: psycopg.Connection, target: Endpoint, extensions: list[Extension]) -> None:
    """The user applying schema.sql must be able to create its extensions and use their schemas: said before any
    statement runs, with what a superuser runs for it (schema.sql then skips what is there)."""
    rows = conn.execute(EXTENSION_RIGHTS_SQL, ([x.name for x in extensions], [x.schema for x in extensions])).fetchall()
    untrusted = [(name, schema) for name, schema, there, may, _, _ in rows if not there and not may]
    lacking: dict[str, list[str]] = {}
    for name, schema, there, _, usage, create in rows:
        missing = {p for p, ok in (("USAGE", usage), ("CREATE", create or there)) if not ok}
        if missing and (name, schema) not in untrusted:
            lacking[schema] = [p for p in ("USAGE", "CREATE") if p in missing or p in lacking.get(schema, [])]
    if not untrusted and not lacking:
        return
    user = str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
    raise target.error(_rights_message(user, untrusted, lacking, rows), _rights_fix(conn, user, untrusted, lacking))


def _rights_message(user: str, untrusted: list[tuple[str, str]], lacking: dict[str, list[str]],
                    rows: list[tuple[Any, ...]]) -> str:
    if untrusted:
        names = ", ".join(name for name, _ in untrusted)
        return (f"the target's user {user} may not create extension {names}: only a superuser may (it is not a "
                "trusted extension)")
    schema, privileges = next(iter(lacking.items()))
    names = ", ".join(r[0] for r in rows if r[1] == schema)
    return (f"the target's user {user} lacks {', '.join(privileges)} on schema {schema}, which holds the extensions "
            f"schema.sql needs ({names})")


def _rights_fix(conn: psycopg.Connection, user: str, untrusted: list[tuple[str, str]],
                lacking: dict[str, list[str]]) -> str:
    """The statements a superuser runs for it."""
    name = sql.Identifier
    statements = [sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name(s)) for s in sorted({s for _, s in untrusted})]
    statements += [sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}").format(name(x), name(s))
                   for x, s in untrusted]
    statements += [sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(name(s), name(user))
                   for s in sorted({s for _, s in untrusted} | set(lacking))]
    return (f"as a superuser, run on the target: {'; '.join(x.as_string(conn) for x in statements)}; then run "
            "`supamove schema --apply` again")


def check_roles(conn: psycopg.Connection, target: Endpoint, roles: Sequence[str]) -> None:
    """The roles --keep-roles creates that the target lacks need a user with CREATEROLE: named before any statement."""
    row = conn.execute("SELECT current_user, rolsuper OR rolcreaterole, ARRAY(SELECT r FROM unnest(%s::text[]) r "
                       "WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) ORDER BY r) "
                       "FROM pg_roles WHERE rolname = current_user", (list(roles),)).fetchone()
    if row is None or row[1] or not row[2]:
        return
    user, _, missing = row
    create = [sql.SQL("CREATE ROLE {} NOLOGIN; ").format(sql.Identifier(r)).as_string(conn) for r in missing]
    raise target.error(f"the target's user {user} may not create role {', '.join(missing)} (--keep-roles): it needs "
                       "CREATEROLE", f"as a superuser, run on the target: {''.join(create)}then run "
                       "`supamove schema --apply` again, or run it without --keep-roles")


def existing_tables(conn: psycopg.Connection, tables: list[str]) -> list[str]:
    """Those of `tables` (schema.name) the target already has."""
    pairs = [t.split(".", 1) for t in tables]
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN unnest(%s::text[], %s::text[]) AS w(s, t) ON w.s = n.nspname AND w.t = c.relname ORDER BY 1",
        ([p[0] for p in pairs], [p[1] for p in pairs])).fetchall()
    return [r[0] for r in rows]


def apply_schema(target: Endpoint, datadir: DataDir, tables: list[str], extensions: list[Extension],
                 roles: Sequence[str] = (), search_path: list[str] | None = None,
                 definers: Sequence[SecurityDefiner] = (), owner: str | None = None) -> ApplyResult:
    """Run schema.sql on the target in one transaction: all of it, or nothing; `roles`, those it creates;
    `search_path`, the one it sets on the database; `definers`, its SECURITY DEFINER functions; `owner`, the role
    it runs as (--owner), which then owns what it creates."""
    started = time.monotonic()
    script = datadir.schema_sql.read_text(encoding="utf-8")
    digest = schema_digest(script)
    with connection(target, autocommit=True) as conn:  # transaction() below is then the real one
        act_as(conn, target, owner)
        before = applied_before(conn, digest, tables)
        if before is not None:
            log.info("%s was applied to the target at %s: nothing to do", datadir.schema_sql, before)
            return ApplyResult(len(tables), time.monotonic() - started, before)
        check_target(conn, target, tables, extensions)
        check_roles(conn, target, roles)
        warnings = [w for w in [search_path_warning(conn, search_path or []), definer_warning(conn, definers)] if w]
        try:
            with conn.transaction():
                conn.execute(script.encode())
                for statement in RECORD:
                    conn.execute(statement)
                conn.execute("INSERT INTO _supamove.schema_applied (sha256) VALUES (%s) ON CONFLICT DO NOTHING",
                             (digest,))
        except psycopg.Error as exc:
            raise target.error(f"the target refused {datadir.schema_sql.name}: {first_line(exc)}; nothing was applied",
                               _refusal_fix(exc, tables, datadir)) from exc
    log.info("applied %s to the target: %d tables", datadir.schema_sql, len(tables))
    for warning in warnings:
        log.warning("%s", warning)
    return ApplyResult(len(tables), time.monotonic() - started, warnings=warnings)


def act_as(conn: psycopg.Connection, target: Endpoint, owner: str | None) -> None:
    """--owner: the session takes that role (SET ROLE, as pg_restore --role does), so what schema.sql creates belongs
    to it rather than to the user connecting (often a superuser), and every check below is of the role's rights."""
    if owner is None:
        return
    role = sql.Identifier(owner).as_string(conn)
    try:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
    except psycopg.errors.InvalidParameterValue as exc:  # role "…" does not exist
        raise target.error(f"--owner {owner}: the target has no such role ({first_line(exc)})",
                           f"name a role the target has, or create it first as a superuser: CREATE ROLE {role} "
                           "LOGIN PASSWORD '…' (the role the application connects as)") from exc
    except psycopg.Error as exc:  # permission denied to set role "…": the user is not a member of it
        user = sql.Identifier(str(conn.execute("SELECT session_user").fetchone()[0])).as_string(conn)  # type: ignore[index]
        raise target.error(f"--owner {owner}: the target's user may not act as that role ({first_line(exc)})",
                           f"as a superuser, run on the target: GRANT {role} TO {user}; then run the same "
                           "command again") from exc


def definer_warning(conn: psycopg.Connection, definers: Sequence[SecurityDefiner]) -> str | None:
    """schema.sql's objects belong to the user applying it (pg_restore --no-owner): a SECURITY DEFINER function
    then runs as that user for every role that may call it; as a superuser, when a superuser applies it."""
    row = conn.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not definers or row is None or not row[1]:
        return None
    owners = ", ".join(sorted({d.source_owner for d in definers}))
    # d.name comes quoted from the source (format's %I), as ALTER takes it.
    statements = "; ".join(sql.SQL("ALTER {} {} OWNER TO <a non-superuser role>").format(
        sql.SQL(d.kind), sql.SQL(d.name)).as_string(conn) for d in definers)
    return (f"{len(definers)} SECURITY DEFINER function{'s' if len(definers) > 1 else ''} now belong"
            f"{'' if len(definers) > 1 else 's'} to {row[0]}, a superuser, who applied schema.sql: each runs as a "
            f"superuser for every role that may call it (on the source, as {owners}); give them an owner that is "
            f"not a superuser (the one owning the application's tables, say): {statements}")


def search_path_warning(conn: psycopg.Connection, path: list[str]) -> str | None:
    """schema.sql's ALTER DATABASE ... SET search_path needs the database's owner or a superuser: for another user
    it is skipped (the schema itself needs neither), said with the statement to run."""
    row = conn.execute("SELECT r.rolname, d.datname, r.rolsuper OR pg_has_role(d.datdba, 'USAGE') "
                       "FROM pg_roles r, pg_database d WHERE r.rolname = current_user "
                       "AND d.datname = current_database()").fetchone()
    if not path or row is None or row[2]:
        return None
    user, database, _ = row
    statement = sql.SQL("ALTER DATABASE {} SET search_path = ").format(sql.Identifier(database)).as_string(conn)
    return (f"the target's user {user} may not set the search_path of database {database} (only its owner or a "
            f"superuser may), so it was not set: the application's functions calling an extension's function by "
            f"name alone (uuid_generate_v4()) fail there until, as one of them, you run: {statement}"
            f"{path_text(path)}")


# What a statement names that the target lacks: `schema "shared" does not exist`, `relation "xb.plans" ...`.
MISSING = re.compile(r'(?:schema "([^"]+)"|relation "([^".]+)\.[^"]+") does not exist')


def _refusal_fix(exc: psycopg.Error, tables: list[str], datadir: DataDir) -> str:
    """An object of a schema this run did not select (a default's sequence, a view's or a key's table) is
    named with the option that brings it; any other refusal, with the statement to correct."""
    found = MISSING.search(first_line(exc))
    missing = (found.group(1) or found.group(2)) if found else None
    if missing and missing not in {t.split(".", 1)[0] for t in tables}:
        return (f"schema.sql uses an object of schema {missing}, which this run did not select: add --schema "
                f"{missing} (to `supamove export` too), then run `supamove schema --apply` again")
    return (f"correct the statement in {datadir.schema_sql} (or its cause on the source), then run "
            "`supamove schema --apply` again")


def schema_digest(script: str) -> str:
    """SHA-256 of schema.sql less its banner, which says when it was written: the same schema, the same digest."""
    body = script.split("\n\n", 1)[-1] if script.startswith(BANNER_START) else script
    return hashlib.sha256(body.encode()).hexdigest()


def applied_before(conn: psycopg.Connection, digest: str, tables: list[str]) -> str | None:
    """When this schema.sql was applied to the target, if it was and every one of its tables is there still."""
    when = _recorded(conn).get(digest)
    return when if when and len(existing_tables(conn, tables)) == len(tables) else None


def _recorded(conn: psycopg.Connection) -> dict[str, str]:
    """Each schema.sql supamove applied to this target (SHA-256) and when; none before the first apply."""
    if conn.execute("SELECT to_regclass('_supamove.schema_applied')").fetchone() == (None,):
        return {}
    return {str(d): str(t) for d, t in conn.execute("SELECT sha256, applied_at::text FROM _supamove.schema_applied")}


def check_target(conn: psycopg.Connection, target: Endpoint, tables: list[str], extensions: list[Extension]) -> None:
    """Refuse before changing anything: an extension the server lacks, a table already there."""
    missing = missing_extensions(conn, extensions)
    if missing:
        raise target.error(f"the target cannot create extension {', '.join(missing)}: not installed on its server",
                           "install it on the target's server (citext, pg_trgm, uuid-ossp and the like are in "
                           "the postgresql-contrib package), then run `supamove schema --apply` again")
    check_extension_rights(conn, target, extensions)
    present = existing_tables(conn, tables)
    if present:
        earlier = max(_recorded(conn).values(), default=None)
        why = (f"; they come from another schema.sql, applied at {earlier} (the source's schema changed since, or "
               "other options were given)" if earlier else "")
        raise target.error(f"the target already has {len(present)} of the tables: {', '.join(present)}{why}",
                           "apply the schema to an empty database, or drop those tables first" + (
                               " (`supamove schema --dry-run` shows what this one would create)" if earlier else ""))

