"""What schema.sql creates before pg_dump's part: schemas, extensions, roles, the auth compatibility schema."""

from __future__ import annotations

import psycopg
from psycopg import sql

from supamove.schema.model import API_ROLES, Extension, path_text

# Supabase Auth's helpers, reading the JWT claims the way PostgREST publishes them
# (request.jwt.claims, one JSON setting; request.jwt.claim.* is the older form). With Stack
# Auth the token's `sub` is the Stack Auth user id, which is what the import writes into
# the user-id columns, so policies comparing a column with auth.uid() keep working.
AUTH_SHIM = """
CREATE SCHEMA IF NOT EXISTS auth;
GRANT USAGE ON SCHEMA auth TO PUBLIC;

CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path TO ''
AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                  nullif(current_setting('request.jwt.claims', true), ''))::jsonb
$$;

CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
    LANGUAGE sql STABLE
    SET search_path TO ''
AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
$$;

CREATE OR REPLACE FUNCTION auth.role() RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO ''
AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.role', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'))::text
$$;

CREATE OR REPLACE FUNCTION auth.email() RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO ''
AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.email', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email'))::text
$$;
"""


def create_schemas(schemas: list[str]) -> sql.Composed:
    """CREATE SCHEMA IF NOT EXISTS for each: public is in every database, others may be."""
    return sql.Composed([sql.SQL("CREATE SCHEMA IF NOT EXISTS {};\n").format(sql.Identifier(s)) for s in schemas])


def create_extensions(extensions: list[Extension]) -> sql.Composed:
    """Each extension in the schema the application's objects name it by (extensions.citext)."""
    # CASCADE: an extension another needs (earthdistance needs cube) is created with it.
    parts = [sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {} CASCADE;\n").format(
        sql.Identifier(x.name), sql.Identifier(x.schema)) for x in extensions]
    return create_schemas(sorted({x.schema for x in extensions})) + sql.Composed(parts)


def create_roles() -> sql.Composed:
    """Supabase's API roles, NOLOGIN, unless the target has them."""
    block = ("DO $roles$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) "
             "THEN CREATE ROLE {} NOLOGIN; END IF; END $roles$;\n")
    return sql.Composed([sql.SQL(block).format(sql.Literal(role), sql.Identifier(role)) for role in API_ROLES])


def set_search_path(path: list[str]) -> sql.Composed:
    """ALTER DATABASE of whichever database schema.sql is applied to; only its owner or a superuser may: another
    user is warned with the statement to run, and the rest is applied (`schema --apply` says so too)."""
    block = ("DO $search_path$ BEGIN EXECUTE 'ALTER DATABASE ' || quote_ident(current_database()) "
             "|| ' SET search_path = ' || {}; "
             "EXCEPTION WHEN insufficient_privilege THEN RAISE WARNING '%', {}; END $search_path$;\n")
    warning = (f"search_path not set: only the database's owner or a superuser may; as one, run: ALTER DATABASE "
               f"<this database> SET search_path = {path_text(path)}")
    return sql.SQL(block).format(sql.Literal(path_text(path)), sql.Literal(warning))


def prelude(conn: psycopg.Connection, schemas: list[str], extensions: list[Extension], auth_shim: bool,
            keep_roles: bool, search_path: list[str] | None = None) -> str:
    """The SQL schema.sql starts with, before pg_dump's part."""
    parts = [("Schemas", create_schemas(schemas))]
    if extensions:
        parts.append(("Extensions the application uses", create_extensions(extensions)))
    if keep_roles:
        parts.append(("Supabase's API roles (--keep-roles)", create_roles()))
    if search_path:
        parts.append(("The search_path of the source's sessions, for new sessions of this database: see "
                      "schema-report.json", set_search_path(search_path)))
    text = "".join(f"-- {title}\n{composed.as_string(conn)}\n" for title, composed in parts)
    if auth_shim:
        text += "-- The auth compatibility schema: auth.uid(), auth.jwt(), auth.role(), auth.email()" + AUTH_SHIM
    return text
