"""A table's indexes dropped for its COPY and built once after it."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from supamove.importer.model import TablePlan
from supamove.log import get_logger

log = get_logger("import")


# A trigger left that queues events until COMMIT: the table cannot be altered (indexes rebuilt) after its COPY.
DEFERRED_TRIGGERS_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = format('%%I.%%I', %s::text, %s::text)::regclass
               AND t.tgdeferrable AND t.tgenabled <> 'D')
"""


# A table's indexes, primary key and unique constraints: built once after its COPY (one sort each)
# instead of updated row by row. Those other objects use (a foreign key, a parent index, an extension),
# or whose settings the definition would not restore, are left in place.
REBUILT_SQL = """
SELECT n.nspname, ci.relname, con.conname, coalesce(pg_get_constraintdef(con.oid), pg_get_indexdef(i.indexrelid)),
       obj_description(i.indexrelid, 'pg_class'), obj_description(con.oid, 'pg_constraint')
FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ci.relnamespace
JOIN pg_class t ON t.oid = i.indrelid
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u')
WHERE i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND t.relkind = 'r' AND ci.relkind = 'i'
  AND NOT i.indisexclusion AND NOT i.indisclustered AND NOT i.indisreplident
  AND i.indisvalid AND i.indisready AND ci.reltablespace = 0
  AND (con.oid IS NOT NULL OR NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid))
  AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = i.indexrelid)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                  AND d.deptype IN ('e', 'x'))
  AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indexrelid AND coalesce(a.attstattarget, -1) >= 0)
ORDER BY ci.relname
"""


# Room to sort a rebuilt index in memory; a target configured with more keeps its own.
INDEX_MEMORY_SQL = """
SELECT set_config('maintenance_work_mem', %s, true)
WHERE (SELECT setting::bigint FROM pg_settings WHERE name = 'maintenance_work_mem') < %s
"""


INDEX_MEMORY_KB = 512 * 1024


@dataclass
class Rebuilt:
    """An index (or the primary key or unique constraint it backs) dropped for the COPY and built after it."""

    schema: str
    index: str
    constraint: str | None
    definition: str
    index_comment: str | None
    constraint_comment: str | None


def drop_indexes(conn: psycopg.Connection, table: TablePlan) -> list[Rebuilt]:
    """Drop the table's rebuildable indexes for this transaction; returns what to build after the COPY."""
    row = conn.execute(DEFERRED_TRIGGERS_SQL, (table.schema, table.name)).fetchone()
    if row and row[0] and conn.execute("SHOW session_replication_role").fetchone() == ("origin",):
        return []
    rebuilt = [Rebuilt(*r) for r in conn.execute(REBUILT_SQL, (table.schema, table.name))]
    for item in rebuilt:
        if item.constraint is not None:
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table.ident, sql.Identifier(item.constraint)))
        else:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(item.schema, item.index)))
    return rebuilt


def build_indexes(conn: psycopg.Connection, table: TablePlan, rebuilt: list[Rebuilt]) -> None:
    if rebuilt:
        conn.execute(INDEX_MEMORY_SQL, (f"{INDEX_MEMORY_KB}kB", INDEX_MEMORY_KB))
    for item in rebuilt:
        if item.constraint is not None:
            conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                table.ident, sql.Identifier(item.constraint), sql.SQL(item.definition)))
        else:
            conn.execute(sql.SQL(item.definition))
        if item.index_comment is not None:
            conn.execute(sql.SQL("COMMENT ON INDEX {} IS {}").format(
                sql.Identifier(item.schema, item.index), sql.Literal(item.index_comment)))
        if item.constraint is not None and item.constraint_comment is not None:
            conn.execute(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                sql.Identifier(item.constraint), table.ident, sql.Literal(item.constraint_comment)))
        log.debug("built index %s.%s", item.schema, item.index)
