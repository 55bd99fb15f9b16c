"""What the database holds: tables, columns, keys, user-id columns and the order to load them in."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from graphlib import TopologicalSorter
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from supamove.errors import ConfigError

if TYPE_CHECKING:
    from supamove.db import Endpoint

# Supabase's platform schemas (the Supabase CLI's internal-schema list and kin): never application data.
PLATFORM_SCHEMAS = frozenset({
    "auth", "storage", "realtime", "extensions", "graphql", "graphql_public", "vault",
    "pgsodium", "pgsodium_masks", "net", "cron", "pgmq", "pgbouncer", "supabase_functions",
    "supabase_migrations", "_realtime", "_analytics", "_supavisor", "pgtle", "repack",
    "information_schema", "pg_catalog", "pg_toast", "tiger", "tiger_data", "topology",
    "timescaledb_information", "timescaledb_experimental", "_timescaledb_cache",
    "_timescaledb_catalog", "_timescaledb_config", "_timescaledb_internal", "pgroonga",
    "_supamove",
})
# Types written as native JSON in the export files; every other value is PostgreSQL's text form.
# jsonb stays text: embedded, a jsonb 'null' could not be told from SQL NULL.
NATIVE_JSON_TYPES = {"smallint": "number", "integer": "number", "bigint": "number", "boolean": "boolean"}
USER_ID_ARRAY_NAME = re.compile(r"(^|_)user_ids$")
# A type modifier in format_type()'s text: numeric(40,20), character varying(12).
TYPMOD = re.compile(r"\(\d+(?:,\d+)?\)")
AUTH_USERS = ("auth", "users")


class QualifiedName:
    """`key` and `qualified` from a `schema` and a `name`, whether dataclass fields or properties."""

    if TYPE_CHECKING:  # read-only here, so that a subclass may give them as fields or as properties
        @property
        def schema(self) -> str: ...

        @property
        def name(self) -> str: ...

    @property
    def key(self) -> tuple[str, str]:
        return (self.schema, self.name)

    @property
    def qualified(self) -> str:
        return qualify(self.schema, self.name)


# A reg* type's values are oids written as names, qualified only where the session's search_path does not
# find them: the catalog each names its objects in, to read them with their schema whatever the search_path.
REG_CATALOGS = {"regclass": "pg_class", "regtype": "pg_type", "regproc": "pg_proc", "regprocedure": "pg_proc",
                "regoper": "pg_operator", "regoperator": "pg_operator", "regconfig": "pg_ts_config",
                "regdictionary": "pg_ts_dict", "regcollation": "pg_collation"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(), e.g. "numeric(40,20)", "public.alert_status", "uuid[]"
    nullable: bool = True
    generated: bool = False
    identity: str = ""  # "always", "by default" or ""
    base_type: str = ""  # the type a domain stands on, else the type itself
    # A generated column: the columns its expression reads; the live catalog's only (metadata.json does not keep
    # it), so not part of a column's equality with its entry there.
    reads: tuple[str, ...] = field(default=(), compare=False)

    @property
    def encoding(self) -> str:
        """How export writes it: "number", "boolean" or "text"."""
        return NATIVE_JSON_TYPES.get(self.type, "text")

    @property
    def names_in(self) -> str | None:
        """The catalog a reg* column (or a domain over one) names objects of; None for any other, arrays too."""
        return REG_CATALOGS.get(self.base_type or self.type) if not self.type.endswith("]") else None

    @property
    def padded(self) -> bool:
        """A character column, or a domain over one: its text is its output with its trailing spaces (::text
        trims them; an unbounded bpchar keeps them as written, character(n) pads to n either way)."""
        if self.type.endswith("]"):  # an array's text is its own (to_json would make it a JSON array)
            return False
        return self.type == "bpchar" or self.type.startswith("character(") or self.base_type == "character"


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    ref_schema: str
    ref_table: str
    ref_columns: tuple[str, ...]
    deferrable: bool = False
    validated: bool = False  # checked against every row (not NOT VALID); False when not known


@dataclass(frozen=True)
class SequenceRef(QualifiedName):
    """The sequence behind a serial or identity column, or named by the column's default (nextval)."""

    column: str
    schema: str
    name: str


@dataclass(frozen=True)
class Table(QualifiedName):
    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    partitioned: bool = False
    estimated_rows: int = 0
    size_bytes: int = 0
    user_id_columns: tuple[str, ...] = ()
    sequences: tuple[SequenceRef, ...] = ()
    unique_keys: tuple[tuple[str, ...], ...] = field(default=())
    # How each user-id column was found: "foreign key", "name", "option" or "values".
    user_id_found_by: tuple[tuple[str, str], ...] = ()
    # Sequences no column owns, named by a column's default (nextval('billing.invoice_number_seq')).
    default_sequences: tuple[SequenceRef, ...] = ()

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def row_key(self) -> tuple[str, ...]:
        """Columns that identify a row: the primary key, else the first NOT NULL unique key."""
        return self.primary_key or next(iter(self.unique_keys), ())


TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind = 'p',
       GREATEST(CASE WHEN c.relkind = 'p'
            THEN (SELECT sum(GREATEST(p.reltuples, 0)) FROM pg_partition_tree(c.oid) t
                  JOIN pg_class p ON p.oid = t.relid WHERE t.isleaf)
            ELSE c.reltuples END, 0)::bigint,
       CASE WHEN c.relkind = 'p'
            THEN (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t)
            ELSE pg_total_relation_size(c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = ANY(%s)
  AND (%s::text[] IS NULL OR (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[])))
ORDER BY n.nspname, c.relname
"""

COLUMNS_SQL = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       a.attgenerated <> '', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' ELSE '' END,
       format_type(coalesce(nullif(t.typbasetype, 0), a.atttypid), NULL),
       (SELECT ARRAY[sn.nspname, sc.relname] FROM pg_class sc
        JOIN pg_namespace sn ON sn.oid = sc.relnamespace
        WHERE sc.oid = pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                                              a.attname)::regclass),
       -- a sequence no column owns that the default uses: nextval('billing.invoice_number_seq')
       (SELECT ARRAY[sn.nspname, sc.relname] FROM pg_attrdef ad
        JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
             AND d.refclassid = 'pg_class'::regclass
        JOIN pg_class sc ON sc.oid = d.refobjid AND sc.relkind = 'S'
        JOIN pg_namespace sn ON sn.oid = sc.relnamespace
        WHERE ad.adrelid = a.attrelid AND ad.adnum = a.attnum AND NOT EXISTS (
            SELECT 1 FROM pg_depend o WHERE o.classid = 'pg_class'::regclass AND o.objid = sc.oid
            AND o.refclassid = 'pg_class'::regclass AND o.deptype IN ('a', 'i'))
        ORDER BY sc.oid LIMIT 1),
       -- a generated column's expression: the columns it reads
       CASE WHEN a.attgenerated <> '' THEN ARRAY(
           SELECT r.attname::text FROM pg_attrdef ad
           JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                AND d.refclassid = 'pg_class'::regclass AND d.refobjid = a.attrelid AND d.refobjsubid <> a.attnum
           JOIN pg_attribute r ON r.attrelid = d.refobjid AND r.attnum = d.refobjsubid
           WHERE ad.adrelid = a.attrelid AND ad.adnum = a.attnum ORDER BY 1) END
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

CONSTRAINTS_SQL = """
SELECT con.conrelid, con.contype, con.conname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       rn.nspname, rc.relname,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i),
       con.condeferrable,
       (SELECT bool_and(a.attnotnull) FROM pg_attribute a
        WHERE a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey)),
       con.convalidated
FROM pg_constraint con
LEFT JOIN pg_class rc ON rc.oid = con.confrelid
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE con.conrelid = ANY(%s) AND con.contype IN ('p', 'f', 'u') AND con.conparentid = 0
ORDER BY con.conrelid, con.contype, con.conname
"""


# Every schema holding tables, but the platform's and PostgreSQL's own: how many, and whether a FK reaches auth.users.
APP_SCHEMAS_SQL = """
SELECT n.nspname, count(*),
       bool_or(EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conrelid = c.oid AND con.contype = 'f'
                       AND con.confrelid = to_regclass('auth.users')))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND NOT n.nspname = ANY(%s)
  AND n.nspname !~ '^pg_(temp|toast_temp)_'
GROUP BY n.nspname ORDER BY n.nspname
"""

# Sequences of the schemas that no table column owns or names in its default: those continue on their own.
FREE_SEQUENCES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND n.nspname = ANY(%s)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_attrdef'::regclass
                  AND d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid)
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class AppSchema:
    """A non-platform schema holding tables."""

    name: str
    tables: int
    user_ids: bool  # a table of it has a foreign key to auth.users


def application_schemas(conn: psycopg.Connection) -> list[AppSchema]:
    """Every schema holding tables that is not a platform schema, by name."""
    return [AppSchema(name, int(count), bool(users))
            for name, count, users in conn.execute(APP_SCHEMAS_SQL, (sorted(PLATFORM_SCHEMAS),))]


# The tables row-level security filters for the session's user: it is no superuser, has no BYPASSRLS,
# and does not own the table (or the owner is forced under its policies too). Reading them would give
# fewer rows than they hold, and no error.
FILTERED_SQL = """
SELECT format('%%I.%%I', n.nspname, c.relname), c.relforcerowsecurity
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN unnest(%s::text[], %s::text[]) u(s, t) ON (u.s, u.t) = (n.nspname, c.relname)
JOIN pg_roles r ON r.rolname = current_user
WHERE c.relrowsecurity AND NOT r.rolsuper AND NOT r.rolbypassrls
  AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
ORDER BY 1
"""


def filtered_by_rls(conn: psycopg.Connection, keys: Sequence[tuple[str, str]]) -> list[str]:
    """Of the given tables (schema, name), those whose rows row-level security hides from this session's user."""
    return [name for name, _ in _filtered(conn, keys)]


def _filtered(conn: psycopg.Connection, keys: Sequence[tuple[str, str]]) -> list[tuple[str, bool]]:
    """The same, each with whether it forces row-level security (FORCE holds its owner to the policies too)."""
    if not keys:
        return []
    return [(r[0], r[1]) for r in conn.execute(FILTERED_SQL, ([k[0] for k in keys], [k[1] for k in keys]))]


def refuse_rls_filtering(conn: psycopg.Connection, endpoint: Endpoint, tables: Iterable[Table]) -> None:
    """Stop when row-level security would hide rows of the given tables from this session's user."""
    hidden = _filtered(conn, [t.key for t in tables])
    if hidden:
        raise endpoint.error(f"row-level security hides rows of {listed([name for name, _ in hidden])} from the user in "
                             f"{endpoint.setting} (it has no BYPASSRLS): reading them would miss rows without an "
                             "error", _rls_fix(conn, endpoint, [name for name, forced in hidden if forced]))


def _rls_fix(conn: psycopg.Connection, endpoint: Endpoint, forced: list[str]) -> str:
    """Supabase's postgres user bypasses every policy; on the target, the tables' owner does, unless a table
    forces row-level security: then only BYPASSRLS, or lifting FORCE while supamove works, lets it through."""
    if endpoint.side == "source":
        return f"use the postgres user (Supabase's has BYPASSRLS) in {endpoint.setting}, or ALTER ROLE ... BYPASSRLS"
    if not forced:
        return f"use the tables' owner in {endpoint.setting}, or ALTER ROLE ... BYPASSRLS"
    user = str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
    return (f"FORCE ROW LEVEL SECURITY on {listed(forced)} holds the table's owner to the policies "
            f"too: ALTER ROLE {sql.Identifier(user).as_string(conn)} BYPASSRLS, or ALTER TABLE {forced[0]} NO FORCE "
            "ROW LEVEL SECURITY for the migration (FORCE it again after)")


def refuse_unreadable(conn: psycopg.Connection, endpoint: Endpoint, tables: Iterable[Table]) -> None:
    """Stop, before anything is read, when this session's user may not read some of the given tables (or only
    some of their columns): the export would stop at the first of them, the plan's checks unexpectedly."""
    _refuse(endpoint, _unreadable(conn, [t.key for t in tables], "has_table_privilege"), "",
            "; or leave them out with --exclude-tables")


def refuse_unreadable_sequences(conn: psycopg.Connection, endpoint: Endpoint, names: Sequence[tuple[str, str]]) -> None:
    """The same for the sequences whose state the export records (a serial or identity column's among them)."""
    _refuse(endpoint, _unreadable(conn, names, "has_sequence_privilege"), "SEQUENCE ", "")


# By oid: a name in a schema the user may not use cannot even be looked up (the check itself would fail).
UNREADABLE_SQL = """
SELECT n.nspname, c.relname FROM unnest(%s::text[], %s::text[]) u(s, t)
JOIN pg_namespace n ON n.nspname = u.s JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.t
WHERE NOT (has_schema_privilege(n.oid, 'USAGE') AND {}(c.oid, 'SELECT'))
ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"
"""


def _unreadable(conn: psycopg.Connection, keys: Sequence[tuple[str, str]], check: str) -> list[tuple[str, str]]:
    query = sql.SQL(UNREADABLE_SQL).format(sql.Identifier(check))
    return [(r[0], r[1]) for r in conn.execute(query, ([k[0] for k in keys], [k[1] for k in keys]))]


def _refuse(endpoint: Endpoint, rows: list[tuple[str, str]], kind: str, leave_out: str) -> None:
    if rows:
        quoted = ", ".join(sql.Identifier(*r).as_string(None) for r in rows[:5])
        raise endpoint.error(f"the user in {endpoint.setting} may not read {kind.lower()}"
                             f"{listed([qualify(*r) for r in rows])}",
                             f"on the source, GRANT SELECT ON {kind}{quoted} TO that user (and USAGE on its schema); "
                             f"or use the postgres user{leave_out}")


# Every table and partition of the schemas this session's user may not read, with the table a partition belongs
# to (pg_dump locks each table it dumps, partitions too, and stops at the first it may not lock).
UNREADABLE_IN_SCHEMAS_SQL = """
SELECT n.nspname, c.relname, rn.nspname, r.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class r ON r.oid = COALESCE(pg_partition_root(c.oid), c.oid) JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)
  AND NOT (has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'))
ORDER BY 1, 2
"""


def unreadable_left_out(conn: psycopg.Connection, schemas: Sequence[str],
                        tables: Iterable[Table]) -> list[tuple[str, str]]:
    """(schema, name) of each table or partition of `schemas` this session's user may not read whose table is
    not among `tables` (those the run selected)."""
    chosen = {t.key for t in tables}
    return [(r[0], r[1]) for r in conn.execute(UNREADABLE_IN_SCHEMAS_SQL, (list(schemas),))
            if (r[2], r[3]) not in chosen]


# The tables by name, as TABLES_SQL finds them: a partition, a view or a sequence of that name is no table.
EXISTING_TABLES_SQL = """
SELECT n.nspname, c.relname FROM unnest(%s::text[], %s::text[]) u(s, t)
JOIN pg_namespace n ON n.nspname = u.s JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.t
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
"""


def missing_tables(conn: psycopg.Connection, keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Those of the tables (schema, name) the database does not have (any more)."""
    if not keys:
        return []
    found = {(r[0], r[1]) for r in conn.execute(EXISTING_TABLES_SQL, ([k[0] for k in keys], [k[1] for k in keys]))}
    return [k for k in keys if k not in found]


def free_sequences(conn: psycopg.Connection, schemas: Sequence[str]) -> list[tuple[str, str]]:
    """(schema, name) of each sequence in `schemas` that no column owns or uses in its default."""
    return [(r[0], r[1]) for r in conn.execute(FREE_SEQUENCES_SQL, (list(schemas),))]


# Materialized views of the schemas, and the other materialized views each one's query reads, directly or
# through plain views (pg_depend records a view's reads on its rewrite rule).
MATERIALIZED_VIEWS_SQL = """
WITH RECURSIVE direct AS (
    SELECT DISTINCT r.ev_class AS reader, d.refobjid AS read
    FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
    WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
), reach AS (
    SELECT d.reader AS matview, d.read FROM direct d JOIN pg_class v ON v.oid = d.reader AND v.relkind = 'm'
    UNION
    SELECT reach.matview, d.read FROM reach JOIN pg_class c ON c.oid = reach.read AND c.relkind = 'v'
    JOIN direct d ON d.reader = c.oid
)
SELECT n.nspname, v.relname, v.relispopulated,
       coalesce(array_agg(rn.nspname ORDER BY rn.nspname, rc.relname) FILTER (WHERE rc.oid IS NOT NULL), '{}'),
       coalesce(array_agg(rc.relname ORDER BY rn.nspname, rc.relname) FILTER (WHERE rc.oid IS NOT NULL), '{}')
FROM pg_class v JOIN pg_namespace n ON n.oid = v.relnamespace
LEFT JOIN reach ON reach.matview = v.oid
LEFT JOIN pg_class rc ON rc.oid = reach.read AND rc.relkind = 'm' AND rc.oid <> v.oid
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE v.relkind = 'm' AND n.nspname = ANY(%s)
GROUP BY n.nspname, v.relname, v.relispopulated
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class MaterializedView(QualifiedName):
    """A materialized view: whether it holds rows yet (REFRESH fills it), and the ones its query reads."""

    schema: str
    name: str
    populated: bool
    reads: tuple[tuple[str, str], ...] = ()


def materialized_views(conn: psycopg.Connection, schemas: Sequence[str]) -> list[MaterializedView]:
    """The materialized views of `schemas`, in an order to refresh them in: each after those it reads."""
    views = {(s, n): MaterializedView(s, n, bool(p), tuple(zip(rs, rn, strict=True)))
             for s, n, p, rs, rn in conn.execute(MATERIALIZED_VIEWS_SQL, (list(schemas),))}
    order = TopologicalSorter({k: [r for r in v.reads if r in views] for k, v in views.items()})
    return [views[key] for key in order.static_order()]


ALL_SCHEMAS = "all"  # --schema all: every application schema


def selected_schemas(schemas: Sequence[str], apps: Sequence[AppSchema]) -> list[str]:
    """The schemas --schema names, `all` standing for every one of `apps` (the application schemas): export,
    migrate and schema read the same option alike. Without `apps` (no connection yet), the check of the names."""
    wanted = [s for s in schemas if s != ALL_SCHEMAS]
    if ALL_SCHEMAS in schemas:
        wanted += [s.name for s in apps]
    return schemas_to_read(wanted)


def schemas_to_read(schemas: Sequence[str] | None) -> list[str]:
    """`public` plus what the operator asked for; platform schemas are refused by name."""
    wanted = list(dict.fromkeys(schemas or ["public"]))
    platform = [s for s in wanted if s in PLATFORM_SCHEMAS]
    if platform:
        raise ConfigError(f"schema {platform[0]} is a Supabase platform schema, not application data",
                          fix=f"remove --schema {platform[0]}; auth users are exported on their own")
    return wanted


@contextmanager
def qualified_names(conn: psycopg.Connection) -> Iterator[None]:
    """While it lasts, format_type() writes every type outside pg_catalog with its schema, whatever search_path
    the role or the database sets (Supabase gives its postgres role `"$user", public, extensions`): a type
    reads the same in the export's metadata and in the target, `extensions.citext` on both sides."""
    previous = conn.execute("SELECT current_setting('search_path'), set_config('search_path', 'pg_catalog', false)")
    row = previous.fetchone()
    try:
        yield
    finally:  # a failed transaction takes the setting back itself, and takes no statement
        if row is not None and conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("SELECT set_config('search_path', %s, false)", (row[0],))


def check_patterns(tables: list[Table], auth: list[Table], include: Sequence[str], exclude: Sequence[str],
                   verb: str) -> None:
    """A --tables or --exclude-tables pattern that matches none of `tables` (nor of `auth`, chosen only by name),
    or an --exclude-tables that leaves none, is a typo: a ConfigError listing the tables there are."""
    names = listed([t.qualified for t in tables], 30)
    where = f"the tables of {', '.join(sorted({t.schema for t in tables}))} are: {names}"
    _check_each(tables + auth, "--tables", include, where)
    candidates = tables + (auth if include else [])
    if exclude and not any(selected(t, include, exclude) for t in candidates):
        raise ConfigError(f"--exclude-tables {' '.join(exclude)} leaves no table to {verb}; {where}",
                          fix="exclude fewer tables")
    _check_each(tables + auth, "--exclude-tables", exclude, where)  # a typo takes along what it was to leave out


def _check_each(tables: list[Table], option: str, patterns: Sequence[str], where: str) -> None:
    for pattern in patterns:
        if not any(selected(t, [pattern]) for t in tables):
            raise ConfigError(f"{option} {pattern} matches no table; {where}",
                              fix="check the pattern (name or schema.name, shell patterns such as 'readings*')")


def listed(names: Sequence[str], shown: int = 5) -> str:
    """The first `shown` names, then how many more: a message naming what may be thousands of things."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def qualify(*parts: str) -> str:
    """schema.table as shown and matched; a part holding a dot or a double quote is double-quoted, as SQL
    writes it, so two tables never read alike (x."y.z" and "x.y".z)."""
    return ".".join('"' + p.replace('"', '""') + '"' if "." in p or '"' in p else p for p in parts)


def owner_fix(user: str) -> str:
    """The fix for target tables the loading user does not own (the load makes their keys and indexes again)."""
    return ("use the user that applied the schema (`supamove schema --apply`), or ALTER TABLE ... OWNER TO "
            f"{sql.Identifier(user).as_string(None)}")


# A _supamove schema (the import's progress) another user made, as `schema --apply` run by a superuser does:
# the import's user may create in the database yet not use it ("unexpected InsufficientPrivilege").
PROGRESS_SCHEMA_SQL = """
SELECT s.oid IS NULL OR (has_schema_privilege(s.oid, 'USAGE') AND has_schema_privilege(s.oid, 'CREATE')
       AND NOT EXISTS (SELECT FROM pg_class c WHERE c.relnamespace = s.oid AND c.relkind = 'r' AND NOT (
           has_table_privilege(c.oid, 'SELECT') AND has_table_privilege(c.oid, 'INSERT')
           AND has_table_privilege(c.oid, 'DELETE')))),
       current_user
FROM (SELECT to_regnamespace('_supamove') AS oid) s
"""
PROGRESS_SCHEMA_CLOSED = "may not use the _supamove schema that records the import's progress, which another user made"


def progress_schema_fix(conn: psycopg.Connection) -> str | None:
    """The grants that let this user record the import's progress in the _supamove schema; None when it may
    already, or there is no such schema yet (the import then creates it, its own)."""
    usable, user = conn.execute(PROGRESS_SCHEMA_SQL).fetchone() or (True, "")
    if usable:
        return None
    role = sql.Identifier(user).as_string(None)
    return (f"as its owner or a superuser: GRANT USAGE, CREATE ON SCHEMA _supamove TO {role}; "
            f"GRANT SELECT, INSERT, DELETE ON ALL TABLES IN SCHEMA _supamove TO {role}")


def refuse_missing_schemas(conn: psycopg.Connection, schemas: Sequence[str], apps: Sequence[AppSchema]) -> None:
    """A --schema the source lacks: a wrong option (exit 2), named with the application schemas it has."""
    if missing := missing_schemas(conn, schemas):
        raise ConfigError(f"schema {missing[0]} does not exist in the source; its application schemas are: "
                          f"{', '.join(s.name for s in apps) or 'none'}",
                          fix="correct --schema (`--schema all` takes every application schema)")


def missing_schemas(conn: psycopg.Connection, schemas: Sequence[str]) -> list[str]:
    """Those of `schemas` the database does not have."""
    found = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (list(schemas),))}
    return [s for s in schemas if s not in found]


def read_tables(conn: psycopg.Connection, schemas: Sequence[str], include: Sequence[str] = (),
                exclude: Sequence[str] = (), user_id_columns: Sequence[str] = (),
                not_user_id_columns: Sequence[str] = ()) -> list[Table]:
    """The application tables in `schemas`, narrowed by name patterns, with user-id columns found."""
    tables = read_relations(conn, list(schemas))
    tables = [t for t in tables if selected(t, include, exclude)]
    return find_user_id_columns(tables, user_id_columns, not_user_id_columns)


def read_relations(conn: psycopg.Connection, schemas: list[str],
                   only: Collection[tuple[str, str]] | None = None) -> list[Table]:
    """The tables of `schemas` (only those named by `only`, when given: the size of any other is not asked for,
    which would wait for a load beside this one holding it locked)."""
    names = [[schema for schema, _ in only], [name for _, name in only]] if only is not None else [None, None]
    rows = conn.execute(TABLES_SQL, (schemas, names[1], *names)).fetchall()
    oids = [r[0] for r in rows]
    columns: dict[int, list[Column]] = {oid: [] for oid in oids}
    sequences: dict[int, list[SequenceRef]] = {oid: [] for oid in oids}
    defaults: dict[int, list[SequenceRef]] = {oid: [] for oid in oids}
    with qualified_names(conn):
        found = conn.execute(COLUMNS_SQL, (oids,)).fetchall()
    for oid, name, typ, nullable, generated, identity, base, seq, free, reads in found:
        columns[oid].append(Column(name, typ, nullable, generated, identity, base, tuple(reads or ())))
        if seq:
            sequences[oid].append(SequenceRef(name, seq[0], seq[1]))
        if free:
            defaults[oid].append(SequenceRef(name, free[0], free[1]))
    pks: dict[int, tuple[str, ...]] = {}
    fks: dict[int, list[ForeignKey]] = {oid: [] for oid in oids}
    uniques: dict[int, list[tuple[str, ...]]] = {oid: [] for oid in oids}
    for oid, kind, name, cols, rschema, rtable, rcols, deferrable, notnull, validated in conn.execute(
            CONSTRAINTS_SQL, (oids,)):
        if kind == "p":
            pks[oid] = tuple(cols)
        elif kind == "u" and notnull:
            uniques[oid].append(tuple(cols))
        elif kind == "f":
            fks[oid].append(ForeignKey(name, tuple(cols), rschema, rtable, tuple(rcols), deferrable, validated))
    return [
        Table(schema, name, tuple(columns[oid]), pks.get(oid, ()), tuple(fks[oid]), partitioned,
              int(est), int(size or 0), (), tuple(sequences[oid]), tuple(uniques[oid]),
              default_sequences=tuple(defaults[oid]))
        for oid, schema, name, partitioned, est, size in rows
    ]


def selected(table: Table, include: Sequence[str], exclude: Sequence[str] = ()) -> bool:
    """Whether a table matches an include pattern (any table, when there is none) and no exclude pattern.

    A pattern with a dot is matched against schema.name, one without against the name alone; a part holding a
    dot goes in double quotes, as for --user-id-column ("Odd Schema"."My.Table", or "My.Table" alone).
    """

    def matches(pattern: str) -> bool:
        parts = _pattern_parts(pattern)
        if parts is not None and len(parts) == 1:
            return fnmatchcase(table.name, parts[0])
        if parts is not None and fnmatchcase(table.schema, parts[0]) and fnmatchcase(table.name, parts[1]):
            return True
        if "." not in pattern:
            return fnmatchcase(table.name, pattern)
        return fnmatchcase(table.qualified, pattern) or fnmatchcase(f"{table.schema}.{table.name}", pattern)

    if include and not any(matches(p) for p in include):
        return False
    return not any(matches(p) for p in exclude)


NAME_PART = r'(?:"((?:[^"]|"")+)"|([^."]+))'  # a quoted name (its quotes doubled) or a plain one
COLUMN_REF = re.compile(rf"{NAME_PART}\.{NAME_PART}\.{NAME_PART}")
PATTERN_REF = re.compile(rf"{NAME_PART}(?:\.{NAME_PART})?")


def _pattern_parts(pattern: str) -> list[str] | None:
    """[name] or [schema, name] of a pattern written in parts, quoted where they hold a dot; None for another."""
    found = PATTERN_REF.fullmatch(pattern)
    if found is None:
        return None
    groups = found.groups()
    parts = [quoted.replace('""', '"') if quoted is not None else plain
             for quoted, plain in zip(groups[::2], groups[1::2], strict=True)]
    return [p for p in parts if p is not None]


def parse_column_ref(ref: str, option: str = "--user-id-column") -> tuple[str, str, str]:
    """schema.table.column; a part holding a dot is double-quoted, as `qualify` shows it ("a.b"."c.d".owner)."""
    found = COLUMN_REF.fullmatch(ref)
    parts = [] if found is None else [quoted.replace('""', '"') if quoted is not None else plain
                                      for quoted, plain in zip(found.groups()[::2], found.groups()[1::2], strict=True)]
    if len(parts) != 3:
        raise ConfigError(f"{option} {ref!r} is not schema.table.column",
                          fix="write it as schema.table.column, e.g. public.orders.created_by (a name holding a dot "
                              'in double quotes: "a.b".orders.created_by)')
    return parts[0], parts[1], parts[2]


def find_user_id_columns(tables: list[Table], named: Sequence[str] = (),
                         not_named: Sequence[str] = ()) -> list[Table]:
    """Mark columns that hold Supabase user ids: FKs to auth.users, FKs to such columns, named ones."""
    found: dict[tuple[str, str, str], str] = dict.fromkeys(_named_columns(tables, named), "option")
    excluded = _named_columns(tables, not_named, "--not-user-id-column")
    both = sorted(found.keys() & excluded)
    if both:
        ref = ".".join(both[0])
        raise ConfigError(f"{ref} is named by both --user-id-column and --not-user-id-column",
                          fix="keep only one of the two for it")
    for t in tables:
        for c in t.columns:
            key = (t.schema, t.name, c.name)
            if c.type == "uuid[]" and USER_ID_ARRAY_NAME.search(c.name) and key not in excluded:
                found.setdefault(key, "name")
    _follow_foreign_keys(tables, found)
    refused = sorted(excluded & {k for k, how in found.items() if how == "foreign key"})
    if refused:
        raise ConfigError(f"--not-user-id-column {'.'.join(refused[0])}: its foreign key shows it holds user ids",
                          fix="remove --not-user-id-column for it; the import must remap it")
    return [mark_user_id_columns(t, {c: how for (s, n, c), how in found.items() if (s, n) == t.key})
            for t in tables]


def mark_user_id_columns(table: Table, found: dict[str, str]) -> Table:
    """The table with these columns (name to how they were found) added to its user-id columns."""
    how = dict(table.user_id_found_by) | {c: h for c, h in found.items() if c not in table.user_id_columns}
    names = tuple(c.name for c in table.columns if c.name in how)
    return replace(table, user_id_columns=names, user_id_found_by=tuple((n, how[n]) for n in names))


def _named_columns(tables: list[Table], named: Sequence[str],
                   option: str = "--user-id-column") -> set[tuple[str, str, str]]:
    found = set()
    for schema, table, column in (parse_column_ref(ref, option) for ref in named):
        match = next((t for t in tables if t.key == (schema, table)), None)
        col = match.column(column) if match is not None else None
        if col is None:
            raise ConfigError(f"{option} {schema}.{table}.{column}: no such exported column",
                              fix="check the name, or add its schema with --schema")
        if option == "--user-id-column":
            _refuse_no_id_type(qualify(schema, table, column), col)
        found.add((schema, table, column))
    return found


def _refuse_no_id_type(ref: str, column: Column) -> None:
    """The import swaps a user-id column's values, or its arrays' elements, whole: a JSON document, a composite
    or a generated column would be taken for one id (and --unmapped-users null would empty it)."""
    from supamove import userids  # over this module: it reads the catalog

    if userids.family(column) not in ("uuid", "uuid[]", "text", "text[]"):
        kind = "generated " if column.generated else ""
        raise ConfigError(f"--user-id-column {ref}: its values are not user ids ({kind}type {column.type})",
                          fix="name a uuid, text-like or uuid[]/text[] column; user ids inside JSON are found and "
                              "rewritten without it, and those in another type are rewritten on the target after "
                              "the import (verify counts those left)")


def _follow_foreign_keys(tables: list[Table], found: dict[tuple[str, str, str], str]) -> None:
    """A column referencing auth.users(id), or a column already found, holds user ids too."""
    changed = True
    while changed:
        changed = False
        for t in tables:
            for fk in t.foreign_keys:
                for name, ref in zip(fk.columns, fk.ref_columns, strict=True):
                    refs_user = (fk.ref_schema, fk.ref_table) == AUTH_USERS and ref == "id"
                    column = (t.schema, t.name, name)
                    if (refs_user or (fk.ref_schema, fk.ref_table, ref) in found) and found.get(column) in (
                            None, "name"):
                        found[column] = "foreign key"
                        changed = True


def load_order(tables: Iterable[Table]) -> list[list[Table]]:
    """Groups of tables, parents before children; tables in an FK cycle share a group."""
    tables = list(tables)
    by_key = {t.key: t for t in tables}
    edges = {t.key: sorted({(fk.ref_schema, fk.ref_table) for fk in t.foreign_keys
                            if (fk.ref_schema, fk.ref_table) in by_key}) for t in tables}
    return [[by_key[k] for k in sorted(group)] for group in _strongly_connected(edges)]


def _strongly_connected(edges: dict[tuple[str, str], list[tuple[str, str]]]) -> list[list[tuple[str, str]]]:
    """Tarjan's algorithm, iterative; emits components with referenced tables first."""
    index: dict[tuple[str, str], int] = {}
    low: dict[tuple[str, str], int] = {}
    stack: list[tuple[str, str]] = []
    on_stack: set[tuple[str, str]] = set()
    result: list[list[tuple[str, str]]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            children = edges[node]
            if i < len(children):
                work.append((node, i + 1))
                child = children[i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                result.append(group)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result


def cycles(groups: list[list[Table]]) -> list[list[Table]]:
    """The groups that are FK cycles: several tables, or one that references itself."""
    return [g for g in groups if len(g) > 1 or any(
        (fk.ref_schema, fk.ref_table) == g[0].key for fk in g[0].foreign_keys)]
