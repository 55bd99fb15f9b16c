"""A throwaway PostgreSQL made to look like a Supabase project running FreshTrack Pro.

create_source() builds the Supabase side (platform roles and schemas, auth users of every
kind, the application's data), create_target() the empty self-hosted side. All data is
deterministic: ids are md5-derived uuids, timestamps count from EPOCH, "random" values
come from hashint8extended(), so two runs with the same `rows` give the same rows.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bcrypt
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

SQL_DIR = Path(__file__).with_name("sql")
PLATFORM_SQL = SQL_DIR / "supabase_platform.sql"
APP_SQL = SQL_DIR / "freshtrack_app.sql"
SOURCE_EXTRAS_SQL = SQL_DIR / "freshtrack_source_extras.sql"

APP_ROLE = "supabase_app"
APP_PASSWORD = "supamove-app-test-password"

# The application's tables, parents before children (a valid load order).
SOURCE_TABLES: list[str] = [
    "organizations",
    "profiles",
    "org_members",
    "sites",
    "units",
    "sensors",
    "readings",
    "alerts",
    "alert_subscriptions",
]

# Schemas Supabase owns; a migration of the application must leave them behind.
PLATFORM_SCHEMAS: tuple[str, ...] = (
    "auth", "storage", "realtime", "extensions", "graphql", "graphql_public", "vault",
    "pgsodium", "net", "cron", "supabase_functions", "supabase_migrations", "_realtime",
    "_analytics", "pgbouncer",
)

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
MIN_USERS = 40
MAX_USERS = 2000
HASH_POOL = 256  # distinct pgcrypto hashes shared by the generated users (bcrypt is slow)
PARALLEL_FROM = 400_000  # readings: load in parallel chunks from this many rows
REBUILD_INDEXES_FROM = 200_000  # readings: drop and rebuild indexes around the load

# A real argon2id hash (libargon2, m=65536 t=3 p=4) of ARGON2_PASSWORDS' password.
ARGON2_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$c3VwYW1vdmUtZml4dHVyZQ$XUonrJmLsEv3k3zSufCe/twXiuTPB0JqynpYgOGXB+o"
)
SSO_PROVIDER_LABEL = "supamove-sso:acme"


def fixed_uuid(label: str) -> str:
    """The uuid PostgreSQL gives for md5(label)::uuid."""
    return str(uuid.UUID(hashlib.md5(label.encode()).hexdigest()))


def user_uuid(key: str | int) -> str:
    """Id of a seeded auth user: a SEED_USERS key, or the number of a generated user."""
    return fixed_uuid(f"supamove-user:{key}")


SSO_PROVIDER_ID = fixed_uuid(SSO_PROVIDER_LABEL)


@dataclass(frozen=True)
class SeedUser:
    """A hand-written auth user: one kind of account the user migration must handle."""

    key: str
    kind: str
    email: str | None = None
    password: str | None = None
    hash_kind: str = "pgcrypto"  # bcrypt ($2a$10$, bcrypt lib) | pgcrypto ($2a$06$) | argon2 | null | empty
    providers: tuple[str, ...] = ("email",)
    full_name: str | None = None
    name: str | None = None
    phone: str | None = None
    confirmed: bool = True
    sso: bool = False
    anonymous: bool = False
    deleted: bool = False
    banned: bool = False

    @property
    def id(self) -> str:
        """The user's auth.users.id."""
        return user_uuid(self.key)


SEED_USERS: tuple[SeedUser, ...] = (
    SeedUser("alice", "email_password", "alice@freshtrack.test", "Alice-Fridge-2024!", "bcrypt",
             full_name="Alice Andersson", name="Alice"),
    SeedUser("bob", "email_password", "bob@freshtrack.test", "correct horse battery staple", "bcrypt",
             full_name="Bob Okafor"),
    SeedUser("zoe", "unicode_name", "zoe.mueller@freshtrack.test", "Kühlschrank-❄-Pässwort", "bcrypt",
             full_name="Zoë Müller-Łukasiewicz ❄️"),
    SeedUser("dana", "unconfirmed", "dana@freshtrack.test", "dana-unconfirmed-1", "bcrypt",
             full_name="Dana Scully", confirmed=False),
    SeedUser("erin", "email_and_google", "erin@freshtrack.test", "Erin+Google=2", "bcrypt",
             providers=("email", "google"), full_name="Erin Walsh", name="Erin Walsh"),
    SeedUser("frank", "google", "frank.google@gmail.test", hash_kind="empty", providers=("google",),
             full_name="Frank Ocean", name="Frank Ocean"),
    SeedUser("grace", "github", "grace@github.test", hash_kind="null", providers=("github",),
             name="Grace Hopper"),
    SeedUser("kai", "google_and_github", "kai@multi.test", hash_kind="empty",
             providers=("google", "github"), full_name="Kai Nakamura", name="Kai Nakamura"),
    SeedUser("anon", "anonymous", hash_kind="null", providers=(), anonymous=True),
    SeedUser("deleted", "soft_deleted", "deleted.user@freshtrack.test", "Deleted-But-Kept-7",
             full_name="Former Employee", deleted=True),
    SeedUser("banned", "banned", "banned.user@freshtrack.test", "Banned-Until-2099",
             full_name="Mallory Banned", banned=True),
    SeedUser("phone", "phone_only", hash_kind="empty", providers=("phone",), phone="15550101234"),
    SeedUser("ivan", "sso", "ivan.petrov@acme-corp.test", hash_kind="empty", providers=("sso",),
             full_name="Иван Петров", sso=True),
    SeedUser("judy", "email_password", "judy.case@freshtrack.test", "Judy-Lower-Case-1",
             full_name="Judy Case"),
    SeedUser("judy_sso", "case_duplicate_sso", "Judy.Case@freshtrack.test", hash_kind="empty",
             providers=("sso",), full_name="Judy Case (SSO)", sso=True),
    SeedUser("magic_null", "null_password", "magic.null@freshtrack.test", hash_kind="null"),
    SeedUser("magic_empty", "empty_password", "magic.empty@freshtrack.test", hash_kind="empty"),
    SeedUser("argon", "argon2", "argon@freshtrack.test", "Argon-Pass-2024!", "argon2",
             full_name="Argo Naut"),
    SeedUser("jose", "unicode_name", "jose.alvarez@freshtrack.test", "José-Ñandú-42",
             name="José Álvarez-Núñez"),
    SeedUser("li", "unicode_name", "li.xiaolong@freshtrack.test", "龙-Dragon-88", full_name="李小龙"),
)

# Plaintext passwords of the seeded bcrypt users: the $2a$10$ ones made with the bcrypt
# library and the $2a$06$ ones made by pgcrypto's crypt(). bcrypt.checkpw() verifies both.
KNOWN_PASSWORDS: dict[str, str] = {
    u.email: u.password for u in SEED_USERS
    if u.email and u.password and u.hash_kind in ("bcrypt", "pgcrypto")
}
# The argon2id user's password (not bcrypt: Stack Auth cannot take this hash as is).
ARGON2_PASSWORDS: dict[str, str] = {
    u.email: u.password for u in SEED_USERS if u.email and u.password and u.hash_kind == "argon2"
}


def generated_password(n: int) -> str:
    """Plaintext password of generated user number n (email user{n:05d}@freshtrack.test)."""
    return f"Fresh-{n % HASH_POOL:03d}-pass"


@dataclass(frozen=True)
class SeedSizes:
    """How many rows create_source() puts in each table for a given `rows`."""

    users: int
    generated_users: int
    identities: int
    organizations: int
    profiles: int
    org_members: int
    sites: int
    units: int
    sensors: int
    readings: int
    alerts: int
    alert_subscriptions: int

    def table_counts(self) -> dict[str, int]:
        """Expected count per table, keyed like SOURCE_TABLES plus auth.users/identities."""
        counts = {name: getattr(self, name) for name in SOURCE_TABLES}
        counts["auth.users"] = self.users
        counts["auth.identities"] = self.identities
        return counts


def seed_sizes(rows: int) -> SeedSizes:
    """The sizes create_source(rows=rows) seeds: readings == rows, the rest scaled."""
    users = min(MAX_USERS, max(MIN_USERS, rows // 200))
    bulk = users - len(SEED_USERS)
    orgs = max(3, users // 20)
    units = orgs * 3 * 4
    profiles = users - sum(u.anonymous for u in SEED_USERS)
    special_identities = sum(len(_identities(u, EPOCH)) for u in SEED_USERS)
    return SeedSizes(
        users=users, generated_users=bulk, identities=special_identities + bulk + bulk // 10,
        organizations=orgs, profiles=profiles, org_members=profiles + bulk // 17,
        sites=orgs * 3, units=units, sensors=units * 2, readings=rows,
        alerts=max(5, rows // 100), alert_subscriptions=(units + 2) // 3 + orgs,
    )


# ---------------------------------------------------------------------------
# Connections, URLs, SQL files
# ---------------------------------------------------------------------------

def connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection with the session in UTC."""
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SET TimeZone = 'UTC'")
    return conn


def role_url(url: str, user: str, password: str | None) -> str:
    """The same server and database as `url`, logging in as `user`."""
    params = conninfo_to_dict(url)
    host = params.get("host") or "127.0.0.1"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or "postgres"
    extra = {k: v for k, v in params.items()
             if k not in ("host", "port", "dbname", "user", "password") and v is not None}
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in extra.items())
    return f"postgresql://{auth}@{host}:{port}/{quote(str(dbname), safe='')}" + (f"?{query}" if query else "")


def apply_sql(url: str, *paths: Path | str) -> None:
    """Run SQL files, each as one multi-statement script, in order."""
    with connect(url) as conn:
        for path in paths:
            conn.execute(Path(path).read_text(encoding="utf-8"))


def table_counts(url: str, tables: list[str]) -> dict[str, int]:
    """Exact row counts; names are "table" (in public) or "schema.table"."""
    counts: dict[str, int] = {}
    with connect(url) as conn:
        for name in tables:
            schema, _, table = name.rpartition(".")
            ident = sql.Identifier(schema or "public", table)
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
            counts[name] = int(row[0]) if row else 0
    return counts


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------

def create_source(url: str, rows: int = 1000, app_password: str | None = None) -> str:
    """Make the database at `url` (superuser) a seeded Supabase project; return the app role's URL."""
    apply_sql(url, PLATFORM_SQL, APP_SQL, SOURCE_EXTRAS_SQL)
    sizes = seed_sizes(rows)
    with connect(url) as conn:
        _seed_auth(conn, sizes)
        _seed_app(conn, sizes)
    _seed_readings(url, sizes)
    with connect(url) as conn:
        _finish(conn, sizes)
    return create_app_role(url, app_password or APP_PASSWORD)


def create_target(url: str) -> None:
    """Create FreshTrack's application schema (no auth schema) on an empty target database."""
    apply_sql(url, APP_SQL)


def create_app_role(url: str, password: str = APP_PASSWORD, role: str = APP_ROLE) -> str:
    """Create the login Supabase calls `postgres`: not superuser, BYPASSRLS; return its URL."""
    with connect(url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL(
            "ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS PASSWORD {}"
        ).format(sql.Identifier(role), sql.Literal(password)))
        grant_app_role(conn, role)
    return role_url(url, role, password)


def grant_app_role(conn: psycopg.Connection[Any], role: str = APP_ROLE) -> None:
    """Make `role` owner of public's objects and a reader of every platform schema."""
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(ident))
    for kind, obj in _public_objects(conn):
        conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kind), sql.SQL(obj), ident))
    present = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
    for schema in (s for s in PLATFORM_SCHEMAS if s in present):
        name = sql.Identifier(schema)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(name, ident))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(name, ident))
        conn.execute(sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(name, ident))
    if "auth" in present:
        conn.execute(sql.SQL("GRANT REFERENCES ON ALL TABLES IN SCHEMA auth TO {}").format(ident))
        conn.execute(sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA auth TO {}").format(ident))


def _public_objects(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(ALTER keyword, quoted name) of public's tables, free sequences, types and functions."""
    return [(r[0], r[1]) for r in conn.execute(_PUBLIC_OBJECTS_SQL).fetchall()]


_PUBLIC_OBJECTS_SQL = """
SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                      WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, c.oid::regclass::text
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
  AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d
           WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.oid::regtype::text
FROM pg_type t
WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd', 'r') AND t.typrelid = 0
UNION ALL
SELECT 'ROUTINE', p.oid::regprocedure::text
FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace
"""


# ---------------------------------------------------------------------------
# Auth users
# ---------------------------------------------------------------------------

def _bcrypt_salt(label: str) -> str:
    """A deterministic 22-character bcrypt salt (last character with zero padding bits)."""
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    digest = hashlib.sha256(label.encode()).digest()
    return "".join(alphabet[b & 63] for b in digest[:21]) + alphabet[(digest[21] & 3) * 16]


@cache
def _bcrypt_hash(password: str, label: str) -> str:
    """$2a$10$ hash from the bcrypt library, with a salt derived from label."""
    salt = ("$2a$10$" + _bcrypt_salt(label)).encode()
    return bcrypt.hashpw(password.encode(), salt).decode()


def _pool_hash(i: int) -> str:
    """The $2a$06$ hash pgcrypto's crypt() gives generated_password(i) with a fixed salt."""
    salt = "$2a$06$" + hashlib.md5(f"supamove-pool:{i}".encode()).hexdigest()[:21] + "O"
    return bcrypt.hashpw(generated_password(i).encode(), salt.encode()).decode()


def _password_hash(conn: psycopg.Connection[Any], user: SeedUser) -> str | None:
    """What Supabase would hold in encrypted_password for this user."""
    if user.hash_kind == "null":
        return None
    if user.hash_kind == "empty":
        return ""
    if user.hash_kind == "argon2":
        return ARGON2_HASH
    assert user.password is not None
    if user.hash_kind == "bcrypt":
        return _bcrypt_hash(user.password, f"supamove-salt:{user.key}")
    salt = "$2a$06$" + _bcrypt_salt(f"supamove-salt:{user.key}")
    return bcrypt.hashpw(user.password.encode(), salt.encode()).decode()  # what pgcrypto's crypt() gives


def _provider_label(provider: str) -> str:
    """Supabase's provider name: SSO identities are "sso:<provider id>"."""
    return f"sso:{SSO_PROVIDER_ID}" if provider == "sso" else provider


def _oauth_id(user: SeedUser, provider: str) -> str:
    """A deterministic provider-side account id (Google: 21 digits, GitHub: 8)."""
    number = int(hashlib.md5(f"{provider}:{user.key}".encode()).hexdigest()[:12], 16)
    return f"1{number:020d}"[:21] if provider == "google" else str(10_000_000 + number % 90_000_000)


def _display_name(user: SeedUser) -> str | None:
    """The name an app shows: full_name, else name."""
    return user.full_name or user.name


def _identity_data(user: SeedUser, provider: str) -> dict[str, Any]:
    """identity_data as Supabase Auth stores it for this provider."""
    if provider == "email":
        return {"sub": user.id, "email": user.email, "email_verified": user.confirmed,
                "phone_verified": False}
    if provider == "phone":
        return {"sub": user.id, "phone": user.phone, "email_verified": False, "phone_verified": True}
    if provider == "sso":
        return {"iss": "https://idp.acme-corp.test/saml/metadata", "sub": user.email,
                "email": user.email, "full_name": user.full_name, "email_verified": True,
                "phone_verified": False, "custom_claims": {"department": "Kitchen Ops"}}
    sub = _oauth_id(user, provider)
    avatar = f"https://avatars.{provider}.test/{sub}"
    data: dict[str, Any] = {"sub": sub, "provider_id": sub, "email": user.email, "name": user.name,
                            "avatar_url": avatar, "email_verified": True, "phone_verified": False}
    if provider == "google":
        data.update(iss="https://accounts.google.com", picture=avatar, full_name=user.full_name)
    else:
        login = (user.name or user.key).split()[0].lower() + "-gh"
        data.update(iss="https://api.github.com", user_name=login, preferred_username=login)
    return data


def _identity_provider_id(user: SeedUser, provider: str) -> str:
    """provider_id: the user id for email/phone, the NameID for SSO, the account id for OAuth."""
    if provider in ("email", "phone"):
        return user.id
    if provider == "sso":
        return str(user.email)
    return _oauth_id(user, provider)


def _identities(user: SeedUser, created: datetime) -> list[dict[str, Any]]:
    """The auth.identities rows Supabase keeps for this user."""
    return [
        {"id": fixed_uuid(f"supamove-identity:{provider}:{user.key}"), "user_id": user.id,
         "provider": _provider_label(provider), "provider_id": _identity_provider_id(user, provider),
         "identity_data": Jsonb(_identity_data(user, provider)),
         "last_sign_in_at": created + timedelta(days=3), "created_at": created, "updated_at": created}
        for provider in user.providers
    ]


def _user_meta(user: SeedUser) -> dict[str, Any]:
    """raw_user_meta_data: the first OAuth/SSO identity's claims, else names from sign-up."""
    oauth = [p for p in user.providers if p not in ("email", "phone")]
    if oauth:
        return {k: v for k, v in _identity_data(user, oauth[0]).items() if v is not None}
    if user.anonymous or user.phone:
        return {}
    meta: dict[str, Any] = {"sub": user.id, "email": user.email, "email_verified": user.confirmed,
                            "phone_verified": False}
    meta.update({k: v for k, v in (("full_name", user.full_name), ("name", user.name)) if v})
    return meta


def _app_meta(user: SeedUser) -> dict[str, Any]:
    """raw_app_meta_data: {"provider": first, "providers": [...]}."""
    if not user.providers:
        return {}
    providers = [_provider_label(p) for p in user.providers]
    return {"provider": providers[0], "providers": providers}


def _user_row(conn: psycopg.Connection[Any], user: SeedUser, created: datetime) -> dict[str, Any]:
    """One auth.users row for a hand-written user."""
    confirmed_at = created + timedelta(minutes=4) if user.confirmed and user.email else None
    return {
        "id": user.id, "email": user.email, "encrypted_password": _password_hash(conn, user),
        "email_confirmed_at": confirmed_at,
        "confirmation_token": "" if user.confirmed else hashlib.sha224(user.key.encode()).hexdigest(),
        "confirmation_sent_at": created if user.email else None,
        "last_sign_in_at": created + timedelta(days=3) if user.confirmed and not user.deleted else None,
        "raw_app_meta_data": Jsonb(_app_meta(user)), "raw_user_meta_data": Jsonb(_user_meta(user)),
        "created_at": created, "updated_at": created + timedelta(days=3), "phone": user.phone,
        "phone_confirmed_at": created + timedelta(minutes=2) if user.phone else None,
        "banned_until": datetime(2099, 1, 1, tzinfo=UTC) if user.banned else None,
        "is_sso_user": user.sso, "deleted_at": created + timedelta(days=30) if user.deleted else None,
        "is_anonymous": user.anonymous,
    }


def _special_created(index: int) -> datetime:
    """created_at of the index-th hand-written user."""
    return EPOCH - timedelta(days=100 - index, hours=index)


def _seed_auth(conn: psycopg.Connection[Any], sizes: SeedSizes) -> None:
    """Insert the hand-written users, the generated users, and their identities and sessions."""
    with conn.transaction():
        conn.execute(_SSO_SQL, {"sso": SSO_PROVIDER_ID})
        users = [_user_row(conn, u, _special_created(i)) for i, u in enumerate(SEED_USERS)]
        identities = [r for i, u in enumerate(SEED_USERS) for r in _identities(u, _special_created(i))]
        with conn.cursor() as cur:
            cur.executemany(_INSERT_USER_SQL, users)
            cur.executemany(_INSERT_IDENTITY_SQL, identities)
        params = {"bulk": sizes.generated_users, "pool": HASH_POOL, "epoch": EPOCH,
                  "alice": user_uuid("alice"), "dana": user_uuid("dana"), "kai": user_uuid("kai")}
        conn.execute("CREATE TEMP TABLE seed_pool (i integer, hash text) ON COMMIT DROP")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO seed_pool VALUES (%s, %s)",
                            [(i, _pool_hash(i)) for i in range(min(HASH_POOL - 1, sizes.generated_users) + 1)])
        for statement in _BULK_AUTH_SQL:
            conn.execute(statement, params)


_SSO_SQL = """
INSERT INTO auth.sso_providers (id, resource_id, created_at, updated_at)
VALUES (%(sso)s, 'acme-corp', '2023-09-01 09:00:00+00', '2023-09-01 09:00:00+00');
"""

_INSERT_USER_SQL = """
INSERT INTO auth.users (
    instance_id, id, aud, role, email, encrypted_password, email_confirmed_at, confirmation_token,
    confirmation_sent_at, recovery_token, email_change_token_new, email_change, last_sign_in_at,
    raw_app_meta_data, raw_user_meta_data, created_at, updated_at, phone, phone_confirmed_at,
    banned_until, is_sso_user, deleted_at, is_anonymous)
VALUES (
    '00000000-0000-0000-0000-000000000000', %(id)s, 'authenticated', 'authenticated', %(email)s,
    %(encrypted_password)s, %(email_confirmed_at)s, %(confirmation_token)s, %(confirmation_sent_at)s,
    '', '', '', %(last_sign_in_at)s, %(raw_app_meta_data)s, %(raw_user_meta_data)s, %(created_at)s,
    %(updated_at)s, %(phone)s, %(phone_confirmed_at)s, %(banned_until)s, %(is_sso_user)s,
    %(deleted_at)s, %(is_anonymous)s)
"""

_INSERT_IDENTITY_SQL = """
INSERT INTO auth.identities (id, user_id, provider, provider_id, identity_data, last_sign_in_at,
                             created_at, updated_at)
VALUES (%(id)s, %(user_id)s, %(provider)s, %(provider_id)s, %(identity_data)s, %(last_sign_in_at)s,
        %(created_at)s, %(updated_at)s)
"""

# Generated users: user00001@freshtrack.test ... with pgcrypto bcrypt ($2a$06$) hashes of
# generated_password(n); every 13th unconfirmed, every 10th also linked to Google.
_BULK_AUTH_SQL: tuple[str, ...] = (
    """
    CREATE TEMP TABLE seed_bulk ON COMMIT DROP AS
    SELECT n, md5('supamove-user:' || n)::uuid AS id,
           'user' || lpad(n::text, 5, '0') || '@freshtrack.test' AS email,
           mod(n, 13) <> 0 AS confirmed, mod(n, 10) = 0 AS google,
           %(epoch)s::timestamptz - interval '120 days' + n * interval '37 minutes' AS created,
           (ARRAY['Amelia', 'Ben', 'Chiara', 'Dmitri', 'Émile', 'Fatima', 'Göran', 'Hana', 'Inès',
                  'Jonas', 'Kwame', 'Lucía', 'Mei', 'Nikolai', 'Oona', 'Priya', 'Quentin', 'Rosa',
                  'Søren', 'Tomás', 'Ute', 'Valentina', 'Wei', 'Xóchitl', 'Yusuf', 'Zanele'])[1 + mod(n, 26)]
           || ' ' ||
           (ARRAY['Andersen', 'Brown', 'Chen', 'Dubois', 'Eriksen', 'Fernández', 'García', 'Hoffmann',
                  'Ivanova', 'Jensen', 'Kowalski', 'López', 'Müller', 'Nakamura', 'O''Brien', 'Petrov',
                  'Quispe', 'Rossi', 'Schmidt', 'Tanaka', 'Ünal', 'Virtanen', 'Wójcik', 'Xu', 'Yılmaz',
                  'Zhang'])[1 + mod(n * 7, 26)] AS full_name
    FROM generate_series(1, %(bulk)s) n
    """,
    """
    INSERT INTO auth.users (
        instance_id, id, aud, role, email, encrypted_password, email_confirmed_at, confirmation_token,
        confirmation_sent_at, recovery_token, email_change_token_new, email_change, last_sign_in_at,
        raw_app_meta_data, raw_user_meta_data, created_at, updated_at, is_sso_user, is_anonymous)
    SELECT '00000000-0000-0000-0000-000000000000', b.id, 'authenticated', 'authenticated', b.email,
           p.hash, CASE WHEN b.confirmed THEN b.created + interval '7 minutes' END,
           CASE WHEN b.confirmed THEN '' ELSE md5('supamove-confirm:' || b.n) END, b.created, '', '', '',
           CASE WHEN b.confirmed THEN b.created + mod(b.n, 90) * interval '1 day' END,
           CASE WHEN b.google THEN '{"provider": "email", "providers": ["email", "google"]}'::jsonb
                ELSE '{"provider": "email", "providers": ["email"]}'::jsonb END,
           jsonb_build_object('sub', b.id::text, 'email', b.email, 'full_name', b.full_name,
                              'email_verified', b.confirmed, 'phone_verified', false),
           b.created, b.created + mod(b.n, 90) * interval '1 day', false, false
    FROM seed_bulk b JOIN seed_pool p ON p.i = mod(b.n, %(pool)s)
    ORDER BY b.n
    """,
    """
    INSERT INTO auth.identities (id, user_id, provider, provider_id, identity_data, last_sign_in_at,
                                 created_at, updated_at)
    SELECT md5('supamove-identity:email:' || b.n)::uuid, b.id, 'email', b.id::text,
           jsonb_build_object('sub', b.id::text, 'email', b.email, 'email_verified', b.confirmed,
                              'phone_verified', false),
           CASE WHEN b.confirmed THEN b.created + mod(b.n, 90) * interval '1 day' END, b.created, b.created
    FROM seed_bulk b
    UNION ALL
    SELECT md5('supamove-identity:google:' || b.n)::uuid, b.id, 'google', (109000000000000000000 + b.n)::text,
           jsonb_build_object('iss', 'https://accounts.google.com',
                              'sub', (109000000000000000000 + b.n)::text,
                              'provider_id', (109000000000000000000 + b.n)::text,
                              'email', b.email, 'name', b.full_name, 'full_name', b.full_name,
                              'picture', 'https://lh3.googleusercontent.test/a/' || b.n,
                              'avatar_url', 'https://lh3.googleusercontent.test/a/' || b.n,
                              'email_verified', true, 'phone_verified', false),
           b.created + interval '2 days', b.created + interval '1 day', b.created + interval '2 days'
    FROM seed_bulk b WHERE b.google
    """,
    """
    INSERT INTO auth.sessions (id, user_id, created_at, updated_at, factor_id, aal, not_after,
                               refreshed_at, user_agent, ip)
    SELECT md5('supamove-session:' || u.id)::uuid, u.id, u.created_at + interval '3 days',
           u.created_at + interval '3 days 1 hour',
           CASE WHEN u.id = %(alice)s THEN md5('supamove-factor:alice')::uuid END,
           CASE WHEN u.id = %(alice)s THEN 'aal2' ELSE 'aal1' END::auth.aal_level, NULL,
           (u.created_at + interval '3 days 1 hour') AT TIME ZONE 'UTC',
           'Mozilla/5.0 (X11; Linux x86_64) FreshTrack/3.2',
           ('203.0.113.' || (1 + mod(hashtext(u.id::text) & 2147483647, 254)))::inet
    FROM auth.users u
    WHERE u.last_sign_in_at IS NOT NULL AND u.deleted_at IS NULL
      AND (u.email NOT LIKE 'user%%' OR right(split_part(u.email, '@', 1), 2) = '50'
           OR right(split_part(u.email, '@', 1), 2) = '00')
    """,
    """
    INSERT INTO auth.refresh_tokens (instance_id, id, token, user_id, revoked, created_at, updated_at,
                                     parent, session_id)
    SELECT '00000000-0000-0000-0000-000000000000', row_number() OVER (ORDER BY s.created_at, s.id),
           substr(md5('supamove-refresh:' || s.id), 1, 12), s.user_id::text, false, s.created_at,
           s.updated_at, NULL, s.id
    FROM auth.sessions s
    """,
    """
    SELECT setval(pg_get_serial_sequence('auth.refresh_tokens', 'id'),
                  greatest(1, (SELECT count(*) FROM auth.refresh_tokens)),
                  (SELECT count(*) FROM auth.refresh_tokens) > 0)
    """,
    """
    INSERT INTO auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at,
                                  updated_at, secret)
    VALUES (md5('supamove-factor:alice')::uuid, %(alice)s, 'Alice''s phone', 'totp', 'verified',
            %(epoch)s::timestamptz - interval '60 days', %(epoch)s::timestamptz - interval '60 days',
            'JBSWY3DPEHPK3PXP')
    """,
    """
    INSERT INTO auth.mfa_amr_claims (session_id, created_at, updated_at, authentication_method, id)
    SELECT md5('supamove-session:' || %(alice)s)::uuid, %(epoch)s::timestamptz - interval '59 days',
           %(epoch)s::timestamptz - interval '59 days', m, md5('supamove-amr:' || m)::uuid
    FROM unnest(ARRAY['password', 'totp']) m
    """,
    """
    INSERT INTO auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at,
                                      updated_at)
    SELECT md5('supamove-ott:dana')::uuid, u.id, 'confirmation_token', u.confirmation_token, u.email,
           u.created_at AT TIME ZONE 'UTC', u.created_at AT TIME ZONE 'UTC'
    FROM auth.users u WHERE u.id = %(dana)s
    """,
    """
    INSERT INTO auth.flow_state (id, user_id, auth_code, code_challenge_method, code_challenge,
                                 provider_type, created_at, updated_at, authentication_method,
                                 auth_code_issued_at)
    VALUES (md5('supamove-flow:kai')::uuid, %(kai)s, md5('supamove-code:kai')::uuid::text, 's256',
            'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', 'github',
            %(epoch)s::timestamptz - interval '10 days', %(epoch)s::timestamptz - interval '10 days',
            'oauth', %(epoch)s::timestamptz - interval '10 days')
    """,
    """
    INSERT INTO auth.audit_log_entries (instance_id, id, payload, created_at, ip_address)
    SELECT '00000000-0000-0000-0000-000000000000', md5('supamove-audit:' || u.id)::uuid,
           json_build_object('action', 'user_signedup', 'actor_id', u.id,
                             'actor_username', coalesce(u.email, u.phone, ''),
                             'actor_via_sso', u.is_sso_user, 'log_type', 'team',
                             'traits', json_build_object('provider',
                                                          coalesce(u.raw_app_meta_data ->> 'provider', 'anonymous'))),
           u.created_at, '198.51.100.7'
    FROM auth.users u
    """,
    """
    INSERT INTO auth.sso_domains (id, sso_provider_id, domain, created_at, updated_at)
    SELECT md5('supamove-sso-domain:acme')::uuid, id, 'acme-corp.test', created_at, updated_at
    FROM auth.sso_providers
    """,
    """
    INSERT INTO auth.saml_providers (id, sso_provider_id, entity_id, metadata_xml, attribute_mapping,
                                     created_at, updated_at, name_id_format)
    SELECT md5('supamove-saml:acme')::uuid, id, 'https://idp.acme-corp.test/saml/metadata',
           '<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" '
           'entityID="https://idp.acme-corp.test/saml/metadata"/>',
           '{"keys": {"email": {"name": "mail"}, "full_name": {"name": "displayName"}}}',
           created_at, updated_at, 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress'
    FROM auth.sso_providers
    """,
    """
    INSERT INTO auth.schema_migrations (version)
    SELECT unnest(ARRAY['20171026211738', '20171026211808', '20171026211834', '20180103212743',
                        '20180108183307', '20180119214651', '20180125194653', '00', '20210710035447',
                        '20210722035447', '20210730183235', '20210909172000', '20210927181326',
                        '20211122151130', '20211124214934', '20211202183645', '20220114185221',
                        '20220114185340', '20220224000811', '20220323170000', '20220429102000',
                        '20220531120530', '20220614074223', '20220811173540', '20221003041349',
                        '20221003041400', '20221011041400', '20221020193600', '20221021073300',
                        '20221021082433', '20221027105023', '20221114143122', '20221114143410',
                        '20221125140132', '20221208132122', '20221215195500', '20221215195800',
                        '20221215195900', '20230116124310', '20230116124412', '20230131181311',
                        '20230322519590', '20230402418590', '20230411005111', '20230508135423',
                        '20230523124323', '20230818113222', '20230914180801', '20231027141322',
                        '20231114161723', '20231117164230', '20240115144230', '20240214120130',
                        '20240306115329', '20240314092811', '20240427152123', '20240612123726',
                        '20240729123726', '20240802193726', '20240806073726', '20241009103726'])
    """,
)


# ---------------------------------------------------------------------------
# Application data
# ---------------------------------------------------------------------------

def _seed_app(conn: psycopg.Connection[Any], sizes: SeedSizes) -> None:
    """Organizations, profiles, members, sites, units, sensors, alerts and subscriptions."""
    specials = [u for u in SEED_USERS if not u.anonymous]
    params = {
        "orgs": sizes.organizations, "bulk": sizes.generated_users, "units": sizes.units,
        "sensors": sizes.sensors, "rows": sizes.readings, "alerts": sizes.alerts, "epoch": EPOCH,
        "special_ids": [u.id for u in specials],
        "special_names": [_display_name(u) for u in specials],
        "special_roles": [{"alice": "owner", "bob": "admin", "erin": "manager"}.get(u.key, "staff")
                          for u in specials],
        "special_orgs": [1 if u.sso else 0 for u in specials],
        "special_phones": [u.phone for u in specials],
        "ackers": [user_uuid(k) for k in ("alice", "bob", "deleted", "erin")],
        "org0_notify": [user_uuid("alice"), user_uuid("deleted"), user_uuid("bob")],
    }
    with conn.transaction():
        for statement in _APP_SQL:
            conn.execute(statement, params)


# Numbering: organization o in [0, orgs), site s = 3*o + j, unit u = 4*s + j, sensor
# k = 2*u + j; generated user n belongs to organization mod(n, orgs).
_APP_SQL: tuple[str, ...] = (
    """
    INSERT INTO public.organizations (id, name, slug, plan, settings, created_at, updated_at)
    SELECT md5('supamove-org:' || o)::uuid,
           CASE WHEN o = 0 THEN 'FreshTrack Demo Foods'
                ELSE (ARRAY['Harbor Fish Market', 'Green Leaf Grocers', 'Café Élan', 'Nordic Cold Storage',
                            'Sunrise Bakery', 'Trattoria Bella', 'Sushi Zen 寿司', 'MediPharm Clinic',
                            'Campus Dining', 'Farm & Fork'])[1 + mod(o, 10)]
                     || CASE WHEN o >= 10 THEN ' #' || (o / 10 + 1) ELSE '' END END,
           'org-' || lpad(o::text, 4, '0'),
           (ARRAY['starter', 'pro', 'enterprise'])[1 + mod(o, 3)],
           jsonb_build_object(
               'temperature_unit', CASE WHEN mod(o, 4) = 1 THEN 'F' ELSE 'C' END,
               'timezone', (ARRAY['Europe/Berlin', 'America/New_York', 'Asia/Tokyo', 'Europe/London',
                                  'America/Los_Angeles', 'Australia/Sydney'])[1 + mod(o, 6)],
               'escalation_minutes', 15 + mod(o, 4) * 15,
               'features', CASE WHEN mod(o, 3) = 2 THEN '["sms", "reports", "haccp"]'::jsonb
                                ELSE '["reports"]'::jsonb END,
               'haccp', jsonb_build_object('log_retention_days', 365, 'auditor', NULL)),
           %(epoch)s::timestamptz - interval '200 days' + o * interval '1 day',
           %(epoch)s::timestamptz - interval '200 days' + o * interval '1 day' + interval '3 hours'
    FROM generate_series(0, %(orgs)s - 1) o
    """,
    """
    INSERT INTO public.profiles (id, organization_id, full_name, role, phone, avatar_url, timezone, created_at)
    SELECT s.id, md5('supamove-org:' || s.org)::uuid, s.name, s.role, s.phone, NULL, 'UTC', u.created_at
    FROM unnest(%(special_ids)s::uuid[], %(special_names)s::text[], %(special_roles)s::text[],
                %(special_orgs)s::int[], %(special_phones)s::text[]) AS s(id, name, role, org, phone)
    JOIN auth.users u ON u.id = s.id
    UNION ALL
    SELECT md5('supamove-user:' || n)::uuid, md5('supamove-org:' || mod(n, %(orgs)s))::uuid,
           u.raw_user_meta_data ->> 'full_name',
           CASE WHEN n <= %(orgs)s THEN 'owner' WHEN mod(n, 5) = 0 THEN 'manager'
                WHEN mod(n, 7) = 0 THEN 'viewer' ELSE 'staff' END,
           CASE WHEN mod(n, 4) = 0 THEN '+1555' || lpad(n::text, 7, '0') END,
           CASE WHEN mod(n, 3) = 0 THEN 'https://cdn.freshtrack.test/avatars/' || n || '.png' END,
           (ARRAY['UTC', 'Europe/Berlin', 'America/New_York'])[1 + mod(n, 3)], u.created_at
    FROM generate_series(1, %(bulk)s) n
    JOIN auth.users u ON u.id = md5('supamove-user:' || n)::uuid
    """,
    """
    INSERT INTO public.org_members (organization_id, user_id, role, created_at)
    SELECT organization_id, id, role::public.org_role, created_at + interval '1 minute'
    FROM public.profiles
    UNION ALL
    SELECT md5('supamove-org:' || mod(n + 1, %(orgs)s))::uuid, md5('supamove-user:' || n)::uuid,
           'viewer', %(epoch)s::timestamptz - interval '20 days' + n * interval '1 minute'
    FROM generate_series(17, %(bulk)s, 17) n
    """,
    """
    INSERT INTO public.sites (id, organization_id, name, address, timezone, latitude, longitude,
                              created_at, updated_at)
    SELECT md5('supamove-site:' || s)::uuid, md5('supamove-org:' || (s / 3))::uuid,
           (ARRAY['Main Kitchen', 'Central Warehouse', 'Downtown Store'])[1 + mod(s, 3)],
           (1 + mod(s * 37, 899)) || ' ' ||
           (ARRAY['Harbour Road', 'Königstraße', 'Rue de Rivoli', 'Elm Street', 'Calle Mayor'])[1 + mod(s, 5)],
           o.settings ->> 'timezone',
           round((47.0 + mod(s * 7919, 100000) / 100000.0 * 5)::numeric, 6),
           round((8.0 + mod(s * 104729, 100000) / 100000.0 * 6)::numeric, 6),
           o.created_at + interval '1 hour', o.created_at + interval '1 hour'
    FROM generate_series(0, %(orgs)s * 3 - 1) s
    JOIN public.organizations o ON o.id = md5('supamove-org:' || (s / 3))::uuid
    """,
    """
    CREATE TEMP TABLE seed_unit_type ON COMMIT DROP AS
    SELECT * FROM (VALUES
        (0, 'fridge'::public.unit_type, 0.00, 5.00),
        (1, 'freezer', -25.00, -15.00),
        (2, 'walk_in_cooler', 1.00, 4.00),
        (3, 'walk_in_freezer', -23.00, -18.00),
        (4, 'blast_chiller', -40.00, 3.00),
        (5, 'display_case', 1.00, 6.50)) AS t(i, unit_type, temp_min, temp_max)
    """,
    """
    INSERT INTO public.units (id, site_id, name, unit_type, temp_min, temp_max, is_active, created_at,
                              updated_at)
    SELECT md5('supamove-unit:' || u)::uuid, md5('supamove-site:' || (u / 4))::uuid,
           initcap(replace(t.unit_type::text, '_', '-')) || ' ' || (1 + mod(u, 4)),
           t.unit_type, t.temp_min, t.temp_max, mod(u, 23) <> 22,
           %(epoch)s::timestamptz - interval '150 days' + u * interval '10 minutes',
           %(epoch)s::timestamptz - interval '150 days' + u * interval '10 minutes'
               + CASE WHEN mod(u, 5) = 0 THEN interval '40 days' ELSE interval '0' END
    FROM generate_series(0, %(units)s - 1) u
    JOIN seed_unit_type t ON t.i = mod(u * 5, 6)
    """,
    """
    INSERT INTO public.sensors (id, unit_id, serial_number, model, firmware_version, installed_at,
                                last_seen_at, battery_level, created_at)
    SELECT md5('supamove-sensor:' || k)::uuid, md5('supamove-unit:' || (k / 2))::uuid,
           'FT' || lpad(k::text, 6, '0') || CASE WHEN mod(k, 2) = 0 THEN '-T' ELSE '-H' END,
           CASE WHEN mod(k, 2) = 0 THEN 'FT-Probe T1' ELSE 'FT-Climate H2' END,
           '2.' || mod(k, 3) || '.' || mod(k, 7),
           %(epoch)s::timestamptz - interval '30 days' + mod(k, 48) * interval '1 hour',
           CASE WHEN k < %(rows)s THEN %(epoch)s::timestamptz
                + make_interval(secs => ((%(rows)s - 1 - k) / %(sensors)s) * 300 + mod(k, 300)) END,
           CASE WHEN k < %(rows)s THEN greatest(5, 100 - ((%(rows)s - 1 - k) / %(sensors)s) / 150)
                ELSE 100 END,
           %(epoch)s::timestamptz - interval '30 days' + mod(k, 48) * interval '1 hour'
    FROM generate_series(0, %(sensors)s - 1) k
    """,
    """
    INSERT INTO public.alerts (id, unit_id, sensor_id, severity, status, message, temperature,
                               acknowledged_by, acknowledged_at, resolved_at, created_at)
    SELECT g.a, un.id, md5('supamove-sensor:' || (g.u * 2))::uuid, g.severity,
           g.status::public.alert_status,
           CASE WHEN g.severity = 'info' THEN un.name || ': sensor battery low'
                ELSE un.name || ': ' || round(un.temp_max + g.excess, 2) || ' °C outside '
                     || un.temp_min || '..' || un.temp_max || ' °C' END,
           CASE WHEN g.severity <> 'info' THEN (un.temp_max + g.excess)::float8 END,
           CASE WHEN g.status <> 'open' AND mod(g.a, 9) <> 0 THEN
                CASE WHEN g.o = 0 THEN (%(ackers)s::uuid[])[1 + mod(g.a / 4, 4)]
                     WHEN g.c > 0 THEN md5('supamove-user:' || (g.o + %(orgs)s * mod(g.a / 4, g.c)))::uuid
                END END,
           CASE WHEN g.status <> 'open' THEN g.created + (5 + mod(g.a, 40)) * interval '1 minute' END,
           CASE WHEN g.status = 'resolved' THEN g.created + interval '1 hour'
                + mod(g.a, 120) * interval '1 minute' END,
           g.created
    FROM (
        SELECT a, u, u / 12 AS o,
               CASE WHEN %(bulk)s >= u / 12 THEN (%(bulk)s - u / 12) / %(orgs)s + 1 ELSE 0 END AS c,
               CASE WHEN mod(a, 10) < 2 THEN 'info' WHEN mod(a, 10) < 7 THEN 'warning'
                    ELSE 'critical' END::public.alert_severity AS severity,
               (ARRAY['open', 'acknowledged', 'resolved', 'resolved'])[1 + mod(a, 4)] AS status,
               CASE WHEN mod(a, 10) < 7 THEN 1.5 + mod(a, 5) * 0.5 ELSE 6.0 + mod(a, 7) END AS excess,
               %(epoch)s::timestamptz + ((a::bigint * 2592000) / %(alerts)s) * interval '1 second' AS created
        FROM (SELECT a, mod(a * 7, %(units)s) AS u FROM generate_series(1, %(alerts)s) a) x
    ) g
    JOIN public.units un ON un.id = md5('supamove-unit:' || g.u)::uuid
    ORDER BY g.a
    """,
    """
    INSERT INTO public.alert_subscriptions (id, organization_id, unit_id, min_severity, channels,
                                            notify_user_ids, created_at, updated_at)
    SELECT md5('supamove-sub:unit:' || u)::uuid, md5('supamove-org:' || (u / 12))::uuid,
           md5('supamove-unit:' || u)::uuid,
           CASE WHEN mod(u, 2) = 0 THEN 'warning' ELSE 'critical' END::public.alert_severity,
           CASE mod(u, 4) WHEN 0 THEN ARRAY['email'] WHEN 1 THEN ARRAY['email', 'sms']
                          WHEN 2 THEN ARRAY['push', 'email'] ELSE ARRAY['email', 'sms', 'push'] END,
           CASE WHEN u / 12 = 0 THEN (%(ackers)s::uuid[])[1:2]
                ELSE ARRAY(SELECT md5('supamove-user:' || (u / 12 + %(orgs)s * j))::uuid
                           FROM generate_series(0, least(2, (%(bulk)s - u / 12) / %(orgs)s)) j
                           ORDER BY j) END,
           %(epoch)s::timestamptz - interval '100 days' + u * interval '1 hour',
           %(epoch)s::timestamptz - interval '100 days' + u * interval '1 hour'
    FROM generate_series(0, %(units)s - 1, 3) u
    UNION ALL
    SELECT md5('supamove-sub:org:' || o)::uuid, md5('supamove-org:' || o)::uuid, NULL, 'critical',
           ARRAY['sms'],
           CASE WHEN o = 0 THEN %(org0_notify)s::uuid[]
                WHEN mod(o, 5) = 4 THEN '{}'::uuid[]
                ELSE ARRAY[md5('supamove-user:' || o)::uuid] END,
           %(epoch)s::timestamptz - interval '90 days', %(epoch)s::timestamptz - interval '80 days'
    FROM generate_series(0, %(orgs)s - 1) o
    """,
)


# ---------------------------------------------------------------------------
# Readings: the big table
# ---------------------------------------------------------------------------

def _seed_readings(url: str, sizes: SeedSizes) -> None:
    """Fill public.readings with sizes.readings rows, in parallel chunks when large."""
    total = sizes.readings
    if total <= 0:
        return
    rebuild = total >= REBUILD_INDEXES_FROM
    with connect(url) as conn:
        saved = _drop_reading_indexes(conn) if rebuild else []
    workers = min(4, os.cpu_count() or 1) if total >= PARALLEL_FROM else 1
    step = -(-total // workers)
    chunks = [(lo, min(total, lo + step) - 1) for lo in range(0, total, step)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda c: _insert_readings(url, sizes, *c), chunks))
    if saved:
        with connect(url) as conn:
            conn.execute("SET maintenance_work_mem = '512MB'")
            for statement in saved:
                conn.execute(statement)


def _drop_reading_indexes(conn: psycopg.Connection[Any]) -> list[str]:
    """Drop readings' primary key and indexes; return the statements that recreate them."""
    rows = conn.execute(_READING_INDEXES_SQL).fetchall()
    for _create, drop in rows:
        conn.execute(drop)
    return [str(create) for create, _drop in rows]


_READING_INDEXES_SQL = """
SELECT format('ALTER TABLE public.readings ADD CONSTRAINT %I %s', c.conname, pg_get_constraintdef(c.oid)),
       format('ALTER TABLE public.readings DROP CONSTRAINT %I', c.conname)
FROM pg_constraint c
WHERE c.conrelid = 'public.readings'::regclass AND c.contype IN ('p', 'u')
UNION ALL
SELECT pg_get_indexdef(i.indexrelid), format('DROP INDEX %s', i.indexrelid::regclass)
FROM pg_index i
WHERE i.indrelid = 'public.readings'::regclass
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
"""


def _insert_readings(url: str, sizes: SeedSizes, first: int, last: int) -> None:
    """Insert readings number first..last (0-based; id = number + 1)."""
    params = {"first": first, "last": last, "ns": sizes.sensors, "epoch": EPOCH}
    with connect(url) as conn:
        conn.execute("SET session_replication_role = replica")  # no FK checks: valid by construction
        conn.execute(_READINGS_SQL, params)


# Sensor k = mod(g, ns) reports every 5 minutes; temperature follows a daily sine around
# the unit type's midpoint, with hash noise and rare door-left-open excursions.
_READINGS_SQL = """
WITH s AS MATERIALIZED (
    SELECT substr(se.serial_number, 3, 6)::int AS k, se.id, se.firmware_version AS fw,
           ((u.temp_min + u.temp_max) / 2)::float8 AS mid,
           ((u.temp_max - u.temp_min) / 4)::float8 AS amp
    FROM public.sensors se JOIN public.units u ON u.id = se.unit_id
)
INSERT INTO public.readings (id, sensor_id, recorded_at, temperature, humidity, battery, door_open, raw)
OVERRIDING SYSTEM VALUE
SELECT r.g + 1, s.id,
       %(epoch)s::timestamptz + make_interval(secs => r.step * 300 + mod(r.k, 300)),
       round((s.mid + s.amp * sin(r.step * 0.02181661564992912 + r.k)
              + ((r.h & 1023)::float8 / 1023 - 0.5) * 0.8
              + CASE WHEN ((r.h >> 10) & 1023) = 0 THEN 9.5 ELSE 0 END) * 100) / 100,
       CASE WHEN mod(r.k, 2) = 1 THEN (round(450 + 300 * ((r.h >> 20) & 1023)::float8 / 1023) / 10)::real END,
       greatest(5, 100 - r.step / 150)::smallint,
       CASE WHEN mod(r.k, 2) = 0 THEN ((r.h >> 30) & 63) = 0 END,
       CASE WHEN mod(r.g, 10) = 0 THEN jsonb_build_object(
           'rssi', -45 - ((r.h >> 36) & 63), 'snr', ((r.h >> 42) & 127)::float8 / 10, 'fw', s.fw,
           'gw', 'gw-' || lpad(mod(r.k, 16)::text, 2, '0'), 'seq', r.step) END
FROM (SELECT g, mod(g, %(ns)s) AS k, g / %(ns)s AS step, hashint8extended(g, 20240101) AS h
      FROM generate_series(%(first)s::bigint, %(last)s::bigint) g) r
JOIN s ON s.k = r.k
"""


def _finish(conn: psycopg.Connection[Any], sizes: SeedSizes) -> None:
    """Set sequences past the seeded ids, then vacuum and analyze."""
    conn.execute(
        "SELECT setval(pg_get_serial_sequence('public.readings', 'id'), greatest(%(r)s, 1), %(r)s > 0),"
        " setval(pg_get_serial_sequence('public.alerts', 'id'), greatest(%(a)s, 1), %(a)s > 0)",
        {"r": sizes.readings, "a": sizes.alerts},
    )
    conn.execute("VACUUM (ANALYZE)")
