"""What schema.sql creates before pg_dump's part: schemas, extensions, roles, the auth compatibility schema."""

from __future__ import annotations

import psycopg
from psycopg import sql

from supamove.schema.model import API_ROLES, Extension

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


def prelude(conn: psycopg.Connection, schemas: list[str], extensions: list[Extension], auth_shim: bool,
            keep_roles: bool) -> str:
    """The SQL schema.sql starts with, before pg_dump's part."""
    parts = [("Schemas", create_schemas(schemas))]
    if extensions:
        parts.append(("Extensions the application uses", create_extensions(extensions)))
    if keep_roles:
        parts.append(("Supabase's API roles (--keep-roles)", create_roles()))
    text = "".join(f"-- {title}\n{composed.as_string(conn)}\n" for title, composed in parts)
    if auth_shim:
        text += "-- The auth compatibility schema: auth.uid(), auth.jwt(), auth.role(), auth.email()" + AUTH_SHIM
    return text
