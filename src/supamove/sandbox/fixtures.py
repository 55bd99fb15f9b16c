"""A throwaway PostgreSQL made to look like a Supabase project running FreshTrack Pro.

create_source() builds the Supabase side (platform roles and schemas, auth users of every
kind, the application's data), create_target() the empty self-hosted side. All data is
deterministic: ids are md5-derived uuids, timestamps count from EPOCH, "random" values
come from hashint8extended(), so two runs with the same `rows` give the same rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
    # auth.mfa_factors rows (alice's verified TOTP factor is seeded with her session in seed_auth.sql):
    # totp, totp_unverified, totp_encrypted, phone, webauthn
    factors: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """The user's auth.users.id."""
        return user_uuid(self.key)


# Longer than Stack Auth's 256 UTF-16 units: 375 ASCII characters; "A" and 200 emoji (401 units,
# so a cut at 256 would fall inside a surrogate pair).
LONG_NAME = ("Dr. Maximiliane Theodora " * 15).strip()
EMOJI_NAME = "A" + "\U0001F9CA" * 200
# The base32 TOTP secrets of the seeded factors (Supabase Auth stores the text as is, unencrypted).
TOTP_SECRETS = {"alice": "JBSWY3DPEHPK3PXP", "tina": "KRUW4YJAKRXXI4BAKNSWG4TFOQ"}

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
    SeedUser("longname", "long_name", "long.name@freshtrack.test", "Long-Name-Pass-1", "bcrypt",
             full_name=LONG_NAME),
    SeedUser("emoji", "emoji_name", "emoji@freshtrack.test", "Emoji-Pass-2", full_name=EMOJI_NAME),
    SeedUser("linda", "linkedin_and_linkedin_oidc", "linda@freshtrack.test", hash_kind="empty",
             providers=("linkedin", "linkedin_oidc"), full_name="Linda Lindqvist"),
    SeedUser("xena", "twitter_and_x", "xena@freshtrack.test", hash_kind="empty", providers=("twitter", "x"),
             name="Xena Tweet"),
    SeedUser("taken", "github_account_in_stack_auth", "taken@freshtrack.test", hash_kind="empty",
             providers=("github",), name="Tad Taken"),
    SeedUser("ada", "azure", "ada@freshtrack.test", hash_kind="empty", providers=("azure",), full_name="Ada Azure"),
    SeedUser("azure_no_oid", "azure_without_object_id", "azure.old@freshtrack.test", "Azure-Old-3",
             providers=("email", "azure"), full_name="Otto Oldtoken"),
    SeedUser("tina", "totp_verified_and_unverified", "tina@freshtrack.test", "Tina-Totp-4", "bcrypt",
             full_name="Tina Totp", factors=("totp", "totp_unverified")),
    SeedUser("una", "totp_unverified", "una@freshtrack.test", "Una-Unverified-5", full_name="Una Verified",
             factors=("totp_unverified",)),
    SeedUser("pete", "phone_and_webauthn_factors", "pete@freshtrack.test", "Pete-Phone-6", full_name="Pete Phone",
             factors=("phone", "webauthn")),
    SeedUser("enzo", "totp_encrypted", "enzo@freshtrack.test", "Enzo-Encrypted-7", full_name="Enzo Encrypted",
             factors=("totp_encrypted",)),
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


def sql_statements(name: str) -> list[str]:
    """The statements of sandbox/sql/<name>.sql, each ending in `;` at the end of a line.

    One execute() each, because they take parameters (a multi-statement script cannot).
    """
    text = (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")
    chunks = re.split(r";[ \t]*$", text, flags=re.MULTILINE)
    return [c.strip() for c in chunks if any(line.strip() and not line.lstrip().startswith("--")
                                              for line in c.splitlines())]


def sql_statement(name: str) -> str:
    """The one statement of sandbox/sql/<name>.sql."""
    [statement] = sql_statements(name)
    return statement


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
    return [(r[0], r[1]) for r in conn.execute(sql_statement("public_objects")).fetchall()]



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


def oauth_account_id(key: str, provider: str) -> str:
    """The provider-side account id of seeded user `key` (what Supabase keeps as provider_id)."""
    user = next(u for u in SEED_USERS if u.key == key)
    return _oauth_id(user, provider)


def azure_object_id(key: str) -> str:
    """The Microsoft Graph object id (the ID token's oid claim) of a seeded azure user."""
    return fixed_uuid(f"supamove-azure-oid:{key}")


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
    elif provider == "azure":  # provider.parseAzureIDToken: the token's other claims in custom_claims
        data.update(iss="https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
                    full_name=user.full_name, custom_claims={"tid": fixed_uuid("supamove-azure-tenant")})
        if user.key != "azure_no_oid":  # identities of an older Supabase Auth lack it
            data["custom_claims"]["oid"] = azure_object_id(user.key)
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
    """The auth.identities rows Supabase keeps for this user; the last listed signed in last."""
    return [
        {"id": fixed_uuid(f"supamove-identity:{provider}:{user.key}"), "user_id": user.id,
         "provider": _provider_label(provider), "provider_id": _identity_provider_id(user, provider),
         "identity_data": Jsonb(_identity_data(user, provider)),
         "last_sign_in_at": created + timedelta(days=3, hours=i), "created_at": created, "updated_at": created}
        for i, provider in enumerate(user.providers)
    ]


def _factors(user: SeedUser, created: datetime) -> list[dict[str, Any]]:
    """The auth.mfa_factors rows of this user (columns of sandbox/sql/seed_factor.sql)."""
    rows = []
    for i, kind in enumerate(user.factors):
        factor_id = fixed_uuid(f"supamove-factor:{user.key}:{kind}")
        secret = None
        if kind.startswith("totp"):
            secret = TOTP_SECRETS.get(user.key, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")
        if kind == "totp_encrypted":  # crypto.EncryptedString: Supabase Auth's at-rest encryption
            secret = json.dumps({"key_id": "supamove-key", "alg": "aes-gcm-hkdf",
                                 "nonce": "c3VwYW1vdmVub25jZQ==", "data": "ZW5jcnlwdGVkIHRvdHAgc2VjcmV0"})
        rows.append({"id": factor_id, "user_id": user.id, "friendly_name": f"{user.key} {kind}",
                     "factor_type": kind.split("_")[0], "factor_status": "unverified" if kind.endswith("unverified")
                     else "verified", "created_at": created + timedelta(days=1, hours=i),
                     "updated_at": created + timedelta(days=1, hours=i), "secret": secret,
                     "phone": user.phone or "15550109876" if kind == "phone" else None,
                     "web_authn_credential": Jsonb({"ID": "c3VwYW1vdmU=", "PublicKey": "cGs="})
                     if kind == "webauthn" else None})
    return rows


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
        conn.execute(sql_statement("seed_sso_provider"), {"sso": SSO_PROVIDER_ID})
        users = [_user_row(conn, u, _special_created(i)) for i, u in enumerate(SEED_USERS)]
        identities = [r for i, u in enumerate(SEED_USERS) for r in _identities(u, _special_created(i))]
        factors = [r for i, u in enumerate(SEED_USERS) for r in _factors(u, _special_created(i))]
        with conn.cursor() as cur:
            cur.executemany(sql_statement("seed_user"), users)
            cur.executemany(sql_statement("seed_identity"), identities)
            cur.executemany(sql_statement("seed_factor"), factors)
        params = {"bulk": sizes.generated_users, "pool": HASH_POOL, "epoch": EPOCH,
                  "alice": user_uuid("alice"), "dana": user_uuid("dana"), "kai": user_uuid("kai")}
        conn.execute("CREATE TEMP TABLE seed_pool (i integer, hash text) ON COMMIT DROP")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO seed_pool VALUES (%s, %s)",
                            [(i, _pool_hash(i)) for i in range(min(HASH_POOL - 1, sizes.generated_users) + 1)])
        for statement in sql_statements("seed_auth"):
            conn.execute(statement, params)



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
        for statement in sql_statements("seed_app"):
            conn.execute(statement, params)



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
    rows = conn.execute(sql_statement("reading_indexes")).fetchall()
    for _create, drop in rows:
        conn.execute(drop)
    return [str(create) for create, _drop in rows]



def _insert_readings(url: str, sizes: SeedSizes, first: int, last: int) -> None:
    """Insert readings number first..last (0-based; id = number + 1)."""
    params = {"first": first, "last": last, "ns": sizes.sensors, "epoch": EPOCH}
    with connect(url) as conn:
        conn.execute("SET session_replication_role = replica")  # no FK checks: valid by construction
        conn.execute(sql_statement("seed_readings"), params)



def _finish(conn: psycopg.Connection[Any], sizes: SeedSizes) -> None:
    """Set sequences past the seeded ids, then vacuum and analyze."""
    conn.execute(
        "SELECT setval(pg_get_serial_sequence('public.readings', 'id'), greatest(%(r)s, 1), %(r)s > 0),"
        " setval(pg_get_serial_sequence('public.alerts', 'id'), greatest(%(a)s, 1), %(a)s > 0)",
        {"r": sizes.readings, "a": sizes.alerts},
    )
    conn.execute("VACUUM (ANALYZE)")
