"""Supabase user ids found by their values: counted inside PostgreSQL, one scan per table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from supamove import catalog
from supamove.catalog import Column, ForeignKey, Table, qualify

# A uuid's text form; only such text is cast, so no other text can make the cast fail.
UUID_TEXT = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# Anywhere in a JSON document: rows without one skip the walk through their keys.
UUID_INSIDE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# What each regex needs, as LIKE patterns: LIKE is 2 to 3 times cheaper, so the regex runs only on
# the text that passes it, and the result is the regex's.
UUID_TEXT_SHAPE = "________-____-____-____-____________"
# A user id in JSON is a string of its own (a value, or a key): one inside a longer string (a storage path,
# `user:<id>`) is part of that text, and stays as it is.
JSON_STRING_UUID = rf'(?<!\\)"({UUID_INSIDE})"'  # a quote escaped inside a string starts none
# A user id standing alone among the punctuation of another type's text: a composite's field, an hstore's
# value, an element of an array (of JSON documents too); one among words (free text) is part of that text.
WHOLE_UUID = rf'(?<![^"\\,(){{}}\[\]>])({UUID_INSIDE})(?![^"\\,(){{}}\[\]<])'
# Types whose text holds no user id: the count of ids left reads every other column.
NO_USER_ID_TYPES = frozenset({
    "smallint", "integer", "bigint", "numeric", "real", "double precision", "boolean", "money", "oid",
    "date", "time without time zone", "time with time zone", "timestamp without time zone",
    "timestamp with time zone", "interval", "bytea", "inet", "cidr", "macaddr", "macaddr8", "bit", "bit varying",
    "point", "line", "lseg", "box", "path", "polygon", "circle", "tsvector", "tsquery", "int4range", "int8range",
    "numrange", "tsrange", "tstzrange", "daterange", "pg_lsn", "xid", "xid8", "regclass", "regtype", "regproc",
    "regprocedure", "regoper", "regoperator", "regnamespace", "regrole", "regconfig", "regdictionary"})
UUID_INSIDE_SHAPE = "%-____-____-____-%"
USER_IDS = sql.SQL("(SELECT id FROM auth.users)")
# A table with fewer rows than a quarter of the users probes auth.users' primary key row by row
# (1 to 2 µs a value) instead of hashing every user id once per column (about 0.4 µs a user).
PROBE_SHARE = 4
FAMILIES = {"uuid": "uuid", "text": "text", "character varying": "text", "character": "text", "json": "json",
            "jsonb": "json"}  # and arrays of uuid and of the text-like types (family)
PLAIN_TEXT = {"text", "character varying"}  # read as they are; another text-like type (bpchar, citext) as ::text


@dataclass(frozen=True)
class ColumnCount:
    """How many non-null values a column holds (array elements for uuid[]) and how many are user ids."""

    schema: str
    table: str
    column: str
    type: str
    values: int
    user_ids: int

    @property
    def qualified(self) -> str:
        return qualify(self.schema, self.table, self.column)


@dataclass(frozen=True)
class JsonKeyCount:
    """User ids found under one key of a json/jsonb column (`owner`, or `review.by` one level down)."""

    schema: str
    table: str
    column: str
    key: str
    user_ids: int


@dataclass
class TableCounts:
    """One table's scan: its columns' counts, and the json/jsonb columns whose keys are worth walking."""

    columns: list[ColumnCount]
    json_to_walk: list[Column]


def family(column: Column) -> str | None:
    """"uuid", "uuid[]", "text", "text[]" or "json" for a column worth checking (domains resolved), else None.

    citext (in whatever schema its extension is) is text too, and an array of a text-like type is text[]."""
    if column.generated:
        return None
    base = column.base_type or column.type
    if base.endswith("[]"):
        return {"uuid": "uuid[]", "text": "text[]"}.get(_scalar_family(base[:-2]) or "")
    return _scalar_family(base)


def _scalar_family(base: str) -> str | None:
    return "text" if base.rsplit(".", 1)[-1] == "citext" else FAMILIES.get(base)


def left_family(column: Column) -> str | None:
    """How the count of Supabase ids left reads a column: its family, "other" for any other type whose text may
    hold one (a composite, hstore, jsonb[]), else None."""
    kind = family(column)
    if kind is not None or column.generated:
        return kind
    base = catalog.TYPMOD.sub("", (column.base_type or column.type).removesuffix("[]"))
    return None if base in NO_USER_ID_TYPES else "other"


def as_text(column: Column, col: sql.Composable) -> sql.Composable:
    """A text-family column as text: bpchar and citext compared by text's LIKE and regex, whatever search_path."""
    return col if (column.base_type or column.type) in PLAIN_TEXT else sql.SQL("{}::text").format(col)


def source(table: Table) -> sql.Composable:
    only = sql.SQL("") if table.partitioned else sql.SQL("ONLY ")
    return sql.SQL("{}{}").format(only, sql.Identifier(table.schema, table.name))


def matches(text: sql.Composable, shape: str, regex: str) -> sql.Composable:
    """True when the text matches the regex, NULL otherwise; the CASE runs the regex only past the LIKE."""
    return sql.SQL("CASE WHEN {t} LIKE {shape} THEN {t} ~* {re} END").format(
        t=text, shape=sql.Literal(shape), re=sql.Literal(regex))


def hashed(value: sql.Composable) -> sql.Composable:
    """The value is a user id: looked up in a hash of every user id, built at its first use in the query."""
    return sql.SQL("{} IN {}").format(value, USER_IDS)


def probed(value: sql.Composable) -> sql.Composable:
    """The value is a user id: looked up in auth.users' primary key, for each value."""
    return sql.SQL("EXISTS (SELECT FROM auth.users u WHERE u.id = {})").format(value)


Lookup = Callable[[sql.Composable], sql.Composable]


def is_user_id_text(text: sql.Composable, found: Lookup = hashed) -> sql.Composable:
    """True when the text is a uuid of a user, else NULL or false; it is cast only once it is a uuid.

    The lookup runs only for uuid-shaped text, so a text column holding none never builds the hash
    of the user ids (about 5 ms for 12,000 users).
    """
    return sql.SQL("CASE WHEN {m} THEN {found} END").format(
        m=matches(text, UUID_TEXT_SHAPE, UUID_TEXT), found=found(sql.SQL("{}::uuid").format(text)))


def value_counts(column: Column, found: Lookup = hashed) -> list[sql.Composable]:
    """One column's aggregates over the table `t`.

    json/jsonb: how many documents may hold a uuid (the key walk decides which do); any other family:
    the non-null values, and how many are user ids.
    """
    col = sql.Identifier("t", column.name)  # qualified: the probe's auth.users has columns of its own
    kind = family(column)
    if kind == "json":
        return [sql.SQL("count(*) FILTER (WHERE {c}::text LIKE {shape})").format(
            c=col, shape=sql.Literal(UUID_INSIDE_SHAPE))]
    if kind == "uuid[]":
        return [sql.SQL("coalesce(sum((SELECT count(e.v) FROM unnest({c}) e(v))), 0)").format(c=col),
                sql.SQL("coalesce(sum((SELECT count(*) FROM unnest({c}) e(v) WHERE {found})), 0)").format(
                    c=col, found=found(sql.SQL("e.v")))]
    if kind == "text[]":
        return [sql.SQL("coalesce(sum((SELECT count(e.v) FROM unnest({c}) e(v))), 0)").format(c=col),
                sql.SQL("coalesce(sum((SELECT count(*) FROM unnest({c}) e(v) WHERE {found})), 0)").format(
                    c=col, found=is_user_id_text(sql.SQL("e.v::text"), found))]
    if kind == "text":
        return [sql.SQL("count({c})").format(c=col),
                sql.SQL("count(*) FILTER (WHERE {})").format(is_user_id_text(as_text(column, col), found))]
    return [sql.SQL("count({c})").format(c=col), sql.SQL("count(*) FILTER (WHERE {})").format(found(col))]


def table_counts_query(table: Table, columns: list[Column], found: Lookup = hashed) -> sql.Composed:
    """One row, the aggregates of `value_counts` for each column given, in order."""
    items = [part for column in columns for part in value_counts(column, found)]
    return sql.SQL("SELECT {} FROM {} t").format(sql.SQL(", ").join(items), source(table))


def tables_of_few_rows(conn: psycopg.Connection, tables: list[Table], users: int) -> set[tuple[str, str]]:
    """The tables holding fewer rows than a PROBE_SHARE of the users: each counted up to that, in one query."""
    limit = users // PROBE_SHARE
    if limit < 1 or not tables:
        return set()
    counts = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, count(*) FROM (SELECT FROM {} LIMIT {}) s").format(sql.Literal(i), source(t),
                                                                                sql.Literal(limit))
        for i, t in enumerate(tables))
    return {tables[i].key for i, n in conn.execute(counts) if n < limit}


# A query returns at most 1664 columns and these count two a column: a table of more columns (up to 1600
# text columns) is read in a scan per group of them.
COLUMNS_PER_SCAN = 800


def column_groups(columns: list[Column]) -> list[list[Column]]:
    """The columns in groups of COLUMNS_PER_SCAN, each counted in one query."""
    return [columns[i:i + COLUMNS_PER_SCAN] for i in range(0, len(columns), COLUMNS_PER_SCAN)]


def count_table(conn: psycopg.Connection, table: Table, columns: list[Column], few_rows: bool = False) -> TableCounts:
    """The given columns of the table (of a family worth checking), in one scan (one per COLUMNS_PER_SCAN).

    `few_rows`: the table holds few rows next to the users (see PROBE_SHARE): each value is probed.
    """
    counts, walk = [], []
    for group in column_groups(columns):
        found = _count_columns(conn, table, group, few_rows)
        counts += found.columns
        walk += found.json_to_walk
    return TableCounts(counts, walk)


def _count_columns(conn: psycopg.Connection, table: Table, columns: list[Column], few_rows: bool) -> TableCounts:
    row = list(conn.execute(table_counts_query(table, columns, probed if few_rows else hashed)).fetchone() or ())
    counts, walk = [], []
    for c in columns:
        if family(c) == "json":
            if row.pop(0):
                walk.append(c)
        else:
            values, found = int(row.pop(0)), int(row.pop(0))
            counts.append(ColumnCount(table.schema, table.name, c.name, c.type, values, found))
    return TableCounts(counts, walk)


ELSEWHERE = "**"  # the key of the user ids a document holds elsewhere: in arrays, deeper down, as keys
KEYS_WALK = sql.SQL("""
    SELECT e.key AS path, e.value FROM jsonb_each(CASE WHEN jsonb_typeof(d.doc) = 'object' THEN d.doc END) e
    UNION ALL
    SELECT e.key || '.' || f.key, f.value
    FROM jsonb_each(CASE WHEN jsonb_typeof(d.doc) = 'object' THEN d.doc END) e
    CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(e.value) = 'object' THEN e.value END) f
""")
ELSEWHERE_WALK = sql.SQL("""
    SELECT {elsewhere} AS path, v AS value FROM jsonb_path_query(d.doc, 'strict $.**') v
    UNION ALL
    SELECT {elsewhere}, v FROM jsonb_path_query(d.doc, 'strict $.** ? (@.type() == "object").keyvalue().key') v
""").format(elsewhere=sql.Literal(ELSEWHERE))


def json_keys_query(table: Table, columns: list[Column], elsewhere: bool = False) -> sql.Composed:
    """Rows of (column, key, user ids): the keys, top level and one level down, whose string values are user ids;
    or, `elsewhere`, ELSEWHERE with every user id of the documents, at any depth, in arrays and as keys."""
    docs = sql.SQL(", ").join(sql.SQL("({}, {}::text)").format(sql.Literal(c.name), sql.Identifier(c.name))
                              for c in columns)
    return sql.SQL("""
SELECT d.col, k.path, count(*) FROM (
    -- OFFSET 0 keeps this filter below the walk: only documents holding a uuid are parsed and walked
    SELECT j.col, j.doc::jsonb AS doc FROM {src} t CROSS JOIN LATERAL (VALUES {docs}) j(col, doc)
    WHERE {inside} OFFSET 0
) d
CROSS JOIN LATERAL ({walk}) k
WHERE jsonb_typeof(k.value) = 'string' AND {user_id}
GROUP BY 1, 2 ORDER BY 1, 2""").format(src=source(table), docs=docs, walk=ELSEWHERE_WALK if elsewhere else KEYS_WALK,
                                       inside=matches(sql.SQL("j.doc"), UUID_INSIDE_SHAPE, UUID_INSIDE),
                                       user_id=is_user_id_text(sql.SQL("(k.value #>> '{}')")))


def json_user_id_keys(conn: psycopg.Connection, table: Table, columns: list[Column]) -> list[JsonKeyCount]:
    """The keys of the given json/jsonb columns of the table that hold user ids, with their counts."""
    if not columns:
        return []
    found = [JsonKeyCount(table.schema, table.name, col, key, int(n))
             for col, key, n in conn.execute(json_keys_query(table, columns))]
    # A column with user ids under those keys is rewritten whole (every string that is one): the walk through
    # every level, twice the time, is for the columns without (user ids in arrays, deeper down, as keys).
    rest = [c for c in columns if c.name not in {k.column for k in found}]
    if rest:
        found += [JsonKeyCount(table.schema, table.name, col, key, int(n))
                  for col, key, n in conn.execute(json_keys_query(table, rest, elsewhere=True))]
    return found


def keyed_without_user_ids(table: Table, none: set[tuple[str, str, str]]) -> dict[str, tuple[str, str, str]]:
    """The table's uuid columns whose every value is a key of a uuid column known to hold no user id.

    `none` holds such columns (schema, table, column). Only a validated single-column foreign key
    proves it: a NOT VALID one may have rows it never checked.
    """
    return {fk.columns[0]: ref for fk in table.foreign_keys
            if (ref := _single_reference(fk)) in none and _is_uuid(table, fk.columns[0])}


def _single_reference(fk: ForeignKey) -> tuple[str, str, str] | None:
    if not fk.validated or len(fk.columns) != 1:
        return None
    return fk.ref_schema, fk.ref_table, fk.ref_columns[0]


def _is_uuid(table: Table, name: str) -> bool:
    column = table.column(name)
    return column is not None and family(column) == "uuid"


def held_user_id(column: Column, users: sql.Composable = USER_IDS) -> sql.Composable:
    """One of `users` that the column's value holds, as text (the smallest), else NULL.

    uuid[] looks at every element, text at a value that is a uuid, json/jsonb at every string that is a uuid,
    another type at every uuid standing alone in its text (left_family); text, json and the others pass a LIKE
    on a uuid's shape before the regex, as the export's check does.
    """
    col, kind = sql.Identifier(column.name), left_family(column)

    def found(value: sql.Composable) -> sql.Composable:
        return sql.SQL("{} IN {}").format(value, users)

    if kind == "uuid[]":
        return sql.SQL("(SELECT min(e::text) FROM unnest({c}) e WHERE {f})").format(c=col, f=found(sql.SQL("e")))
    if kind == "text[]":
        return sql.SQL("(SELECT min(lower(e::text)) FROM unnest({c}) e WHERE {f})").format(
            c=col, f=is_user_id_text(sql.SQL("e::text"), found))
    if kind == "text":
        text = as_text(column, col)
        return sql.SQL("CASE WHEN {} THEN lower({}) END").format(is_user_id_text(text, found), text)
    if kind in ("json", "other"):  # the CASE spares the values holding no uuid the set-returning walk (5x faster)
        doc, inside = sql.SQL("{}::text").format(col), JSON_STRING_UUID if kind == "json" else WHOLE_UUID
        return sql.SQL("CASE WHEN {m} THEN (SELECT min(lower(m[1])) FROM regexp_matches({d}, {re}, 'gi') m "
                       "WHERE {f}) END").format(m=matches(doc, UUID_INSIDE_SHAPE, UUID_INSIDE), d=doc,
                                                re=sql.Literal(inside), f=found(sql.SQL("m[1]::uuid")))
    return sql.SQL("CASE WHEN {} THEN {}::text END").format(found(col), col)


def held_counts_query(table: Table, columns: list[Column], users: sql.Composable = USER_IDS) -> sql.Composed:
    """One row: for each column given, how many rows hold one of `users`, and the smallest such id."""
    held = sql.SQL(", ").join(sql.SQL("{} AS {}").format(held_user_id(c, users), sql.Identifier(f"_u{i}"))
                              for i, c in enumerate(columns))
    sums = sql.SQL(", ").join(sql.SQL("count({u}), min({u})").format(u=sql.Identifier(f"_u{i}"))
                              for i in range(len(columns)))
    # OFFSET 0 keeps each held id computed once per row, not once per aggregate
    return sql.SQL("SELECT {} FROM (SELECT {} FROM {} OFFSET 0) r").format(sums, held, source(table))
