"""Supabase user ids found by their values: counted inside PostgreSQL, one query per column family per table."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from supamove.catalog import Column, Table

# A uuid's text form; only such text is cast, so no other text can make the cast fail.
UUID_TEXT = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# Anywhere in a JSON document: rows without one skip the walk through their keys.
UUID_INSIDE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
USER_IDS = sql.SQL("(SELECT id FROM auth.users)")
FAMILIES = {"uuid": "uuid", "uuid[]": "uuid[]", "text": "text", "character varying": "text",
            "json": "json", "jsonb": "json"}


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
        return f"{self.schema}.{self.table}.{self.column}"


@dataclass(frozen=True)
class JsonKeyCount:
    """User ids found under one key of a json/jsonb column (`owner`, or `review.by` one level down)."""

    schema: str
    table: str
    column: str
    key: str
    user_ids: int


def family(column: Column) -> str | None:
    """"uuid", "uuid[]", "text" or "json" for a column worth checking (domains resolved), else None."""
    if column.generated:
        return None
    return FAMILIES.get(column.base_type or column.type)


def source(table: Table) -> sql.Composable:
    only = sql.SQL("") if table.partitioned else sql.SQL("ONLY ")
    return sql.SQL("{}{}").format(only, sql.Identifier(table.schema, table.name))


def value_counts(column: Column) -> tuple[sql.Composable, sql.Composable]:
    """Two aggregates over the table: the column's non-null values, and those that are user ids."""
    col = sql.Identifier(column.name)
    kind = family(column)
    if kind == "uuid[]":
        return (sql.SQL("coalesce(sum((SELECT count(e) FROM unnest({c}) e)), 0)").format(c=col),
                sql.SQL("coalesce(sum((SELECT count(*) FROM unnest({c}) e WHERE e IN {u})), 0)").format(
                    c=col, u=USER_IDS))
    if kind == "text":  # CASE keeps the cast away from text that is not a uuid
        return (sql.SQL("count({c})").format(c=col),
                sql.SQL("count(*) FILTER (WHERE CASE WHEN {c} ~* {re} THEN {c}::uuid END IN {u})").format(
                    c=col, re=sql.Literal(UUID_TEXT), u=USER_IDS))
    return (sql.SQL("count({c})").format(c=col),
            sql.SQL("count(*) FILTER (WHERE {c} IN {u})").format(c=col, u=USER_IDS))


def column_counts_query(table: Table, columns: list[Column]) -> sql.Composed:
    """One row: for each uuid, uuid[] or text column given, its value count then its user-id count."""
    items = [part for column in columns for part in value_counts(column)]
    return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(items), source(table))


def json_keys_query(table: Table, columns: list[Column]) -> sql.Composed:
    """Rows of (column, key, user ids): the keys, top level and one level down, whose string values are user ids."""
    docs = sql.SQL(", ").join(sql.SQL("({}, {}::text)").format(sql.Literal(c.name), sql.Identifier(c.name))
                              for c in columns)
    return sql.SQL("""
SELECT d.col, k.path, count(*) FROM (
    -- OFFSET 0 keeps this filter below the walk: only documents holding a uuid are parsed and walked
    SELECT j.col, j.doc::jsonb AS doc FROM {src} t CROSS JOIN LATERAL (VALUES {docs}) j(col, doc)
    WHERE j.doc ~* {inside} OFFSET 0
) d
CROSS JOIN LATERAL (
    SELECT e.key AS path, e.value FROM jsonb_each(CASE WHEN jsonb_typeof(d.doc) = 'object' THEN d.doc END) e
    UNION ALL
    SELECT e.key || '.' || f.key, f.value
    FROM jsonb_each(CASE WHEN jsonb_typeof(d.doc) = 'object' THEN d.doc END) e
    CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(e.value) = 'object' THEN e.value END) f
) k
WHERE jsonb_typeof(k.value) = 'string'
  AND CASE WHEN k.value #>> '{{}}' ~* {exact} THEN (k.value #>> '{{}}')::uuid END IN {u}
GROUP BY 1, 2 ORDER BY 1, 2""").format(src=source(table), docs=docs, inside=sql.Literal(UUID_INSIDE),
                                         exact=sql.Literal(UUID_TEXT), u=USER_IDS)


def count_user_ids(conn: psycopg.Connection, table: Table, skip: set[str]) -> list[ColumnCount]:
    """Each uuid, uuid[] and text column of the table (but `skip`): its values and how many are user ids."""
    columns = [c for c in table.columns if c.name not in skip and family(c) in ("uuid", "uuid[]", "text")]
    if not columns:
        return []
    row = conn.execute(column_counts_query(table, columns)).fetchone()
    assert row is not None
    return [ColumnCount(table.schema, table.name, c.name, c.type, int(row[2 * i]), int(row[2 * i + 1]))
            for i, c in enumerate(columns)]


def json_user_id_keys(conn: psycopg.Connection, table: Table, skip: set[str]) -> list[JsonKeyCount]:
    """The keys of the table's json/jsonb columns (but `skip`) that hold user ids, with their counts."""
    columns = [c for c in table.columns if c.name not in skip and family(c) == "json"]
    if not columns:
        return []
    return [JsonKeyCount(table.schema, table.name, col, key, int(n))
            for col, key, n in conn.execute(json_keys_query(table, columns))]


def held_user_id(column: Column, users: sql.Composable = USER_IDS) -> sql.Composable:
    """One of `users` that the column's value holds, as text (the smallest), else NULL.

    uuid[] looks at every element, text at a value that is a uuid, json/jsonb at every uuid in its text.
    """
    col, kind = sql.Identifier(column.name), family(column)
    if kind == "uuid[]":
        return sql.SQL("(SELECT min(e::text) FROM unnest({c}) e WHERE e IN {u})").format(c=col, u=users)
    if kind == "text":
        return sql.SQL("CASE WHEN (CASE WHEN {c} ~* {re} THEN {c}::uuid END) IN {u} THEN lower({c}) END").format(
            c=col, re=sql.Literal(UUID_TEXT), u=users)
    if kind == "json":  # the CASE spares the documents holding no uuid the set-returning walk (5x faster)
        return sql.SQL("CASE WHEN {c}::text ~* {re} THEN (SELECT min(lower(m[1])) FROM regexp_matches({c}::text, {re}, "
                       "'gi') m WHERE m[1]::uuid IN {u}) END").format(c=col, re=sql.Literal(UUID_INSIDE), u=users)
    return sql.SQL("CASE WHEN {c} IN {u} THEN {c}::text END").format(c=col, u=users)


def held_counts_query(table: Table, columns: list[Column], users: sql.Composable = USER_IDS) -> sql.Composed:
    """One row: for each column given, how many rows hold one of `users`, and the smallest such id."""
    held = sql.SQL(", ").join(sql.SQL("{} AS {}").format(held_user_id(c, users), sql.Identifier(f"_u{i}"))
                              for i, c in enumerate(columns))
    sums = sql.SQL(", ").join(sql.SQL("count({u}), min({u})").format(u=sql.Identifier(f"_u{i}"))
                              for i in range(len(columns)))
    # OFFSET 0 keeps each held id computed once per row, not once per aggregate
    return sql.SQL("SELECT {} FROM (SELECT {} FROM {} OFFSET 0) r").format(sums, held, source(table))
