"""What the source catalog says about the dumped objects: what they depend on, who they grant to."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from supamove import catalog
from supamove.schema.model import ReportItem, SecurityDefiner

Key = tuple[int, int]  # (catalog oid, object oid), as pg_dump's table of contents names an object
PG_PROC = 1255
# Every PostgreSQL has what these hold (initdb's text search configurations and collations, `english` and
# "en-x-icu", are not pinned, so a use of them is recorded): never Supabase's platform to leave out.
BUILT_IN_SCHEMAS = {"pg_catalog", "information_schema", "pg_toast"}
# Extensions that are Supabase services rather than building blocks of the application's schema.
SERVICE_EXTENSIONS = {
    "pg_net": "HTTP requests from the database (database webhooks)",
    "pg_cron": "scheduled jobs",
    "supabase_vault": "Vault secrets",
    "pgsodium": "Supabase's encryption keys",
    "pg_graphql": "Supabase's GraphQL API",
}


@dataclass(frozen=True)
class Ref:
    """An object the dumped one depends on, outside the dump: a platform object or an extension's."""

    identity: str  # pg_identify_object's identity: "auth.uid()", "auth.users", "extensions.citext"
    kind: str  # "function", "table", "type", ...
    extension: str | None  # the extension it belongs to, if any


@dataclass
class Facts:
    server_version: str
    server_major: int
    selected_tables: set[tuple[str, str]]
    partition_roots: dict[int, tuple[str, str]]
    refs: dict[Key, set[Ref]]
    grantees: dict[Key, list[str]]
    policy_roles: dict[int, list[str]]
    auth_trigger_functions: dict[int, list[str]]  # function oid: the platform triggers it only serves
    extensions: dict[str, tuple[str, str]]  # name: (schema, version)
    others: list[ReportItem] = field(default_factory=list)
    platform_bodies: dict[int, list[str]] = field(default_factory=dict)  # function oid: platform objects its body names
    # Objects of the dump that use a table pg_dump was told to leave alone (one the user may not read, left out
    # by --exclude-tables): not in the dump, so no dependency of the dump names it. Key: the table used.
    unread_refs: dict[Key, str] = field(default_factory=dict)
    # Functions and types every role may use by default, from which the source revoked that (REVOKE ... FROM PUBLIC).
    public_revoked: set[Key] = field(default_factory=set)
    # The schemas of the search_path the source's sessions start with ("$user" as such), in its order.
    search_path: list[str] = field(default_factory=list)
    # SECURITY DEFINER functions and procedures of the dumped schemas, by oid; whether their owner is a superuser
    security_definers: dict[int, tuple[SecurityDefiner, bool]] = field(default_factory=dict)


REFS_SQL = """
WITH deps AS (
    SELECT d.classid, d.objid, d.refclassid,
           coalesce(arr.typelem, d.refobjid) AS refobjid,  -- an array type stands for its element type
           CASE d.classid
               WHEN 'pg_rewrite'::regclass THEN 'pg_class'::regclass::oid
               WHEN 'pg_attrdef'::regclass THEN 'pg_class'::regclass::oid
               WHEN 'pg_constraint'::regclass THEN
                   CASE WHEN con.contypid <> 0 THEN 'pg_type'::regclass::oid ELSE 'pg_class'::regclass::oid END
               ELSE CASE WHEN ic.oid IS NOT NULL THEN 'pg_constraint'::regclass::oid ELSE d.classid END
           END AS owner_classid,
           CASE d.classid
               WHEN 'pg_rewrite'::regclass THEN rw.ev_class
               WHEN 'pg_attrdef'::regclass THEN ad.adrelid
               WHEN 'pg_constraint'::regclass THEN coalesce(nullif(con.conrelid, 0), con.contypid)
               ELSE coalesce(ic.oid, d.objid) END AS owner_objid
    FROM pg_depend d
    LEFT JOIN pg_type arr ON d.refclassid = 'pg_type'::regclass AND arr.oid = d.refobjid
                         AND arr.typcategory = 'A' AND arr.typelem <> 0
    LEFT JOIN pg_rewrite rw ON d.classid = 'pg_rewrite'::regclass AND rw.oid = d.objid
    LEFT JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
    LEFT JOIN pg_constraint con ON d.classid = 'pg_constraint'::regclass AND con.oid = d.objid
    -- The index of a key or exclusion constraint has no entry of its own: its operator classes (btree_gist's
    -- for an EXCLUDE USING gist) are the constraint's.
    LEFT JOIN pg_constraint ic ON d.classid = 'pg_class'::regclass AND ic.conindid = d.objid
                              AND ic.contype IN ('p', 'u', 'x')
    WHERE d.deptype = 'n'
      -- A partition's copy of its parent's foreign key has no entry: the parent's brings it, and is decided alone.
      AND coalesce(con.conparentid, 0) = 0
)
SELECT deps.classid::int, deps.objid::int, deps.owner_classid::int, deps.owner_objid::int,
       o.identity, o.type, e.extname
FROM deps
CROSS JOIN LATERAL pg_identify_object(deps.refclassid, deps.refobjid, 0) o
LEFT JOIN pg_depend m ON m.classid = deps.refclassid AND m.objid = deps.refobjid AND m.deptype = 'e'
LEFT JOIN pg_extension e ON e.oid = m.refobjid
WHERE e.oid IS NOT NULL OR o.schema = ANY(%(platform)s)
"""

GRANTEES_SQL = """
SELECT classid::int, oid::int,
       ARRAY(SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END
             FROM aclexplode(acl) a WHERE a.grantee <> owner ORDER BY 1)
FROM (
    SELECT 'pg_class'::regclass::oid AS classid, c.oid, c.relowner AS owner,
           coalesce(c.relacl, '{}') || ARRAY(SELECT unnest(att.attacl) FROM pg_attribute att
                                           WHERE att.attrelid = c.oid AND att.attacl IS NOT NULL) AS acl
    FROM pg_class c WHERE c.oid = ANY(%(oids)s)
    UNION ALL SELECT 'pg_proc'::regclass, oid, proowner, proacl FROM pg_proc WHERE oid = ANY(%(oids)s)
    UNION ALL SELECT 'pg_namespace'::regclass, oid, nspowner, nspacl FROM pg_namespace WHERE oid = ANY(%(oids)s)
    UNION ALL SELECT 'pg_type'::regclass, oid, typowner, typacl FROM pg_type WHERE oid = ANY(%(oids)s)
) objects
WHERE cardinality(acl) > 0
"""

PUBLIC_REVOKED_SQL = """
SELECT 'pg_proc'::regclass::oid::int, oid::int FROM pg_proc
WHERE oid = ANY(%(oids)s) AND proacl IS NOT NULL
  AND NOT EXISTS (SELECT FROM aclexplode(proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
UNION ALL
SELECT 'pg_type'::regclass::oid::int, oid::int FROM pg_type
WHERE oid = ANY(%(oids)s) AND typacl IS NOT NULL
  AND NOT EXISTS (SELECT FROM aclexplode(typacl) a WHERE a.grantee = 0 AND a.privilege_type = 'USAGE')
"""

POLICY_ROLES_SQL = """
SELECT p.oid::int, ARRAY(SELECT CASE r WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r)::text END
                         FROM unnest(p.polroles) r ORDER BY 1)
FROM pg_policy p
"""

PARTITIONS_SQL = """
SELECT c.oid::int, rn.nspname, rc.relname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class rc ON rc.oid = pg_partition_root(c.oid)
JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE c.relispartition AND n.nspname = ANY(%(schemas)s)
"""

# Triggers on platform tables (auth.users) that run a function of the dumped schemas, and whether
# that function serves nothing else the catalog knows of.
PLATFORM_TRIGGERS_SQL = """
SELECT p.oid::int, tn.nspname, tc.relname, t.tgname, pn.nspname || '.' || p.proname,
       NOT EXISTS (SELECT 1 FROM pg_depend d
                   WHERE d.refclassid = 'pg_proc'::regclass AND d.refobjid = p.oid
                     AND NOT (d.classid = 'pg_trigger'::regclass AND d.objid IN (
                         SELECT t2.oid FROM pg_trigger t2 JOIN pg_class c2 ON c2.oid = t2.tgrelid
                         JOIN pg_namespace n2 ON n2.oid = c2.relnamespace
                         WHERE n2.nspname = ANY(%(platform)s))))
FROM pg_trigger t
JOIN pg_class tc ON tc.oid = t.tgrelid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE NOT t.tgisinternal AND tn.nspname = ANY(%(platform)s) AND pn.nspname = ANY(%(schemas)s)
ORDER BY 2, 3, 4
"""


# Functions whose body (a string pg_depend does not read) names a platform schema's object: auth.users,
# storage.objects. Supabase's `extensions` schema is created on the target too, and the shim's auth.uid()
# and kin exist there: neither is named.
BODIES_SQL = """
SELECT p.oid::int, array_agg(DISTINCT m[1] ORDER BY m[1])
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
CROSS JOIN LATERAL regexp_matches(p.prosrc, %(pattern)s, 'gi') m
WHERE n.nspname = ANY(%(schemas)s) AND lower(m[1]) NOT IN ('auth.uid', 'auth.jwt', 'auth.role', 'auth.email')
GROUP BY p.oid
"""


def platform_bodies(conn: psycopg.Connection, schemas: list[str], platform: list[str]) -> dict[int, list[str]]:
    named = [re.escape(s) for s in platform if s != "extensions" and s not in BUILT_IN_SCHEMAS]
    pattern = r"\m((?:" + "|".join(named) + r")\.[a-z_][a-z0-9_]*)"
    return {oid: list(found) for oid, found in conn.execute(BODIES_SQL, {"schemas": schemas, "pattern": pattern})}


# Functions whose body (a string pg_depend does not read) names a function or type of an extension by its schema:
# extensions.crypt(), extensions.unaccent(); or calls one of its functions by name alone, found through the source's
# search_path (Supabase's holds `extensions`: uuid_generate_v4(), gen_random_bytes()) or the function's own, unless
# pg_catalog has a function of that name (gen_random_uuid()), which a call finds first. The extension is then needed
# on the target as much as for a column's type. Supabase's services (pg_net's net.http_post) are not: platform_bodies
# names them.
BODY_EXTENSIONS_SQL = r"""
WITH members AS (
    SELECT e.extname, n.nspname, coalesce(p.proname, t.typname) AS name,
           n.nspname || '.' || coalesce(p.proname, t.typname) AS identity,
           CASE WHEN p.oid IS NULL THEN 'type' ELSE 'function' END AS kind,
           p.oid IS NOT NULL AND NOT EXISTS (SELECT FROM pg_proc b WHERE b.proname = p.proname
                                             AND b.pronamespace = 'pg_catalog'::regnamespace) AS by_name
    FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
    LEFT JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid
    JOIN pg_namespace n ON n.oid = coalesce(p.pronamespace, t.typnamespace)
    WHERE d.deptype = 'e' AND d.refclassid = 'pg_extension'::regclass AND NOT e.extname = ANY(%(skip)s)
)
SELECT DISTINCT p.oid::int, m.identity, m.kind, m.extname
FROM pg_proc p JOIN pg_namespace pn ON pn.oid = p.pronamespace
JOIN members m ON (strpos(lower(p.prosrc), lower(m.identity)) > 0
                   AND p.prosrc ~* ('\m' || regexp_replace(m.identity, '([^a-zA-Z0-9_])', '\\\1', 'g') || '\M'))
               OR (m.by_name AND strpos(lower(p.prosrc), lower(m.name)) > 0
                   AND p.prosrc ~* ('(^|[^.a-zA-Z0-9_$"])' || regexp_replace(m.name, '([^a-zA-Z0-9_])', '\\\1', 'g')
                                    || '\s*\(')
                   AND (m.nspname = ANY(%(path)s) OR EXISTS (
                       SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%%'
                       AND m.nspname IN (SELECT btrim(x, ' "') FROM regexp_split_to_table(substr(c, 13), ',') x))))
WHERE pn.nspname = ANY(%(schemas)s)
"""


def body_extensions(conn: psycopg.Connection, schemas: list[str], path: list[str]) -> dict[Key, set[Ref]]:
    """The extensions' functions and types each function of `schemas` names in its body (see BODY_EXTENSIONS_SQL);
    `path`, the schemas of the source's search_path."""
    refs: dict[Key, set[Ref]] = defaultdict(set)
    skip = sorted(SERVICE_EXTENSIONS) + ["plpgsql"]
    for oid, identity, kind, ext in conn.execute(BODY_EXTENSIONS_SQL, {"schemas": schemas, "skip": skip,
                                                                       "path": path}):
        refs[(PG_PROC, oid)].add(Ref(identity, kind, ext))
    return dict(refs)


# The foreign keys referencing the given tables, and the views reading them (through their rewrite rule).
UNREAD_REFS_SQL = """
WITH unread AS (SELECT format('%%I.%%I', s, t)::regclass AS oid FROM unnest(%s::text[], %s::text[]) u(s, t))
SELECT 'pg_constraint'::regclass::oid, con.oid, con.confrelid::regclass::text
FROM pg_constraint con JOIN unread ON unread.oid = con.confrelid WHERE con.contype = 'f'
UNION
SELECT 'pg_class'::regclass::oid, r.ev_class, d.refobjid::regclass::text
FROM pg_depend d JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
JOIN unread ON unread.oid = d.refobjid
WHERE d.refclassid = 'pg_class'::regclass AND r.ev_class <> d.refobjid
"""


def read_unread_refs(conn: psycopg.Connection, tables: list[tuple[str, str]]) -> dict[Key, str]:
    """What of the dump uses these tables, which pg_dump left alone (see Facts.unread_refs)."""
    if not tables:
        return {}
    rows = conn.execute(UNREAD_REFS_SQL, ([t[0] for t in tables], [t[1] for t in tables]))
    return {(int(c), int(o)): str(name) for c, o, name in rows}


# The SECURITY DEFINER functions and procedures of the dumped schemas, as ALTER FUNCTION names them, and their owner.
SECURITY_DEFINERS_SQL = """
SELECT p.oid::int, CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
       format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)), r.rolname, r.rolsuper
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles r ON r.oid = p.proowner
WHERE p.prosecdef AND n.nspname = ANY(%(schemas)s)
"""


def security_definers(conn: psycopg.Connection, schemas: list[str]) -> dict[int, tuple[SecurityDefiner, bool]]:
    with catalog.qualified_names(conn):  # an argument's type with its schema: the statement works on the target
        rows = conn.execute(SECURITY_DEFINERS_SQL, {"schemas": schemas}).fetchall()
    return {oid: (SecurityDefiner(kind, name, owner), bool(superuser)) for oid, kind, name, owner, superuser in rows}


# One schema of a search_path setting: a quoted name ("$user", "My Schema") or a bare one (public, extensions).
PATH_SCHEMA = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([^,\s]+))\s*(?:,|$)')


def search_path(conn: psycopg.Connection) -> list[str]:
    """The search_path a new session of the source's user has (its role's, its database's or the server's setting:
    Supabase's is `"$user", public, extensions`), whatever this session set since: the one the application's
    queries and functions find unqualified names by."""
    row = conn.execute("SELECT reset_val FROM pg_settings WHERE name = 'search_path'").fetchone()
    value = str(row[0]) if row else ""
    return [quoted.replace('""', '"') if quoted else bare.lower() for quoted, bare in PATH_SCHEMA.findall(value)]


def read_facts(conn: psycopg.Connection, schemas: list[str], selected: set[tuple[str, str]],
               toc_keys: set[Key]) -> Facts:
    """The catalog facts `select` decides by, for the dump of `schemas` whose entries are `toc_keys`."""
    oids = sorted({objid for _, objid in toc_keys if objid})
    platform = sorted(catalog.PLATFORM_SCHEMAS)
    version, number = conn.execute("SELECT current_setting('server_version'), "
                                   "current_setting('server_version_num')::int").fetchone() or ("", 0)
    facts = Facts(
        server_version=str(version), server_major=int(number) // 10000,
        selected_tables=selected,
        partition_roots={oid: (s, n) for oid, s, n in conn.execute(PARTITIONS_SQL, {"schemas": schemas})},
        refs=read_refs(conn, [s for s in platform if s not in BUILT_IN_SCHEMAS], toc_keys),
        grantees={(c, o): list(g) for c, o, g in conn.execute(GRANTEES_SQL, {"oids": oids})},
        policy_roles={oid: list(roles) for oid, roles in conn.execute(POLICY_ROLES_SQL)},
        auth_trigger_functions={}, extensions=read_extensions(conn),
        public_revoked={(c, o) for c, o in conn.execute(PUBLIC_REVOKED_SQL, {"oids": oids})},
    )
    facts.search_path = search_path(conn)
    for key, found in body_extensions(conn, schemas, facts.search_path).items():
        facts.refs[key] = facts.refs.get(key, set()) | found
    triggers, facts.auth_trigger_functions = platform_triggers(conn, schemas, platform)
    facts.platform_bodies = platform_bodies(conn, schemas, platform)
    facts.security_definers = security_definers(conn, schemas)
    facts.others = triggers + publications(conn) + event_triggers(conn) + cron_jobs(conn) + service_extensions(conn)
    return facts


def read_refs(conn: psycopg.Connection, platform: list[str], toc_keys: set[Key]) -> dict[Key, set[Ref]]:
    """For each entry of the dump, what it uses outside it: a platform object or an extension's.

    What has no entry of its own (a column default, a CHECK constraint, a view's rule) is written
    inside its table's, view's or domain's entry, so counts as that one's.
    """
    refs: dict[Key, set[Ref]] = defaultdict(set)
    for classid, objid, owner_classid, owner_objid, identity, kind, ext in conn.execute(
            REFS_SQL, {"platform": platform}):
        key = (classid, objid) if (classid, objid) in toc_keys else (owner_classid, owner_objid)
        refs[key].add(Ref(identity, kind, ext))
    return dict(refs)


def read_extensions(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    rows = conn.execute("SELECT e.extname, n.nspname, e.extversion FROM pg_extension e "
                        "JOIN pg_namespace n ON n.oid = e.extnamespace")
    return {name: (schema, version) for name, schema, version in rows}


def platform_triggers(conn: psycopg.Connection, schemas: list[str],
                      platform: list[str]) -> tuple[list[ReportItem], dict[int, list[str]]]:
    """Triggers on Supabase's tables (the handle_new_user pattern), each left out; the functions only they use."""
    items: list[ReportItem] = []
    serving: dict[int, list[str]] = {}
    for func_oid, schema, table, trigger, function, only in conn.execute(
            PLATFORM_TRIGGERS_SQL, {"platform": platform, "schemas": schemas}):
        if only:
            serving.setdefault(func_oid, []).append(f"{trigger} on {schema}.{table}")
        items.append(ReportItem("TRIGGER", schema, f"{table} {trigger}", "left-out",
                                f"runs {function}() on Supabase's {schema}.{table}, which the target does "
                                "not have (sign-ups go through Stack Auth)"))
    return items, serving


def publications(conn: psycopg.Connection) -> list[ReportItem]:
    rows = conn.execute("SELECT p.pubname, coalesce(string_agg(t.schemaname || '.' || t.tablename, ', ' "
                        "ORDER BY t.schemaname, t.tablename), '') FROM pg_publication p "
                        "LEFT JOIN pg_publication_tables t ON t.pubname = p.pubname GROUP BY 1 ORDER BY 1")
    return [ReportItem("PUBLICATION", "-", name, "left-out",
                       f"logical replication for Realtime ({tables or 'no tables'}): not moved")
            for name, tables in rows]


def event_triggers(conn: psycopg.Connection) -> list[ReportItem]:
    rows = conn.execute("SELECT evtname, evtevent, evtfoid::regproc::text FROM pg_event_trigger ORDER BY 1")
    return [ReportItem("EVENT TRIGGER", "-", name, "left-out",
                       f"runs {function}() on {event} (a Supabase service hook): not moved")
            for name, event, function in rows]


def cron_jobs(conn: psycopg.Connection) -> list[ReportItem]:
    if conn.execute("SELECT to_regclass('cron.job')").fetchone() in (None, (None,)):
        return []
    query = sql.SQL("SELECT jobid, coalesce(jobname, ''), schedule, command FROM {} ORDER BY jobid").format(
        sql.Identifier("cron", "job"))
    return [ReportItem("CRON JOB", "cron", name or str(jobid), "left-out",
                       f"pg_cron job ({schedule}: {command[:80]}): schedule it on the target by hand")
            for jobid, name, schedule, command in conn.execute(query)]


def service_extensions(conn: psycopg.Connection) -> list[ReportItem]:
    return [ReportItem("EXTENSION", schema, name, "left-out", f"{SERVICE_EXTENSIONS[name]}: not moved")
            for name, (schema, _) in sorted(read_extensions(conn).items()) if name in SERVICE_EXTENSIONS]
