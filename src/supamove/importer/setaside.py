"""What a load sets aside while its rows go in: the application's triggers, the group's foreign keys."""

from __future__ import annotations

import psycopg
from psycopg import sql

from supamove.db import Endpoint
from supamove.importer.model import ImportOptions, ImportPlan, TablePlan
from supamove.importer.plan import replica_refused

Trigger = tuple[str, str, str, str]  # schema, table, trigger, how it was enabled
ForeignKey = tuple[str, str, str, str, str | None]  # schema, table, constraint, definition, comment


TRIGGERS_SQL = """
WITH root AS (SELECT format('%%I.%%I', %s::text, %s::text)::regclass AS oid)
SELECT n.nspname, c.relname, t.tgname, t.tgenabled
FROM (SELECT oid AS relid, 0 AS level FROM root
      UNION SELECT p.relid, p.level FROM root, pg_partition_tree(root.oid) p) p
JOIN pg_trigger t ON t.tgrelid = p.relid JOIN pg_class c ON c.oid = p.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND t.tgenabled <> 'D'
ORDER BY p.level, c.relname, t.tgname
"""


# The group's foreign keys, checked by one query each when re-added after the COPY rather than by a trigger
# per row. NOT VALID ones stay (re-adding them would check nothing), except inside a cycle, where a
# non-deferrable one cannot wait for the other table.
GROUP_FKS_SQL = """
SELECT n.nspname, c.relname, con.conname, pg_get_constraintdef(con.oid), obj_description(con.oid, 'pg_constraint')
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype = 'f' AND con.conparentid = 0
  AND con.conrelid IN (SELECT format('%%I.%%I', s, t)::regclass FROM unnest(%(s)s::text[], %(t)s::text[]) u(s, t))
  AND (con.convalidated OR (%(cycle)s AND NOT con.condeferrable AND con.confrelid IN
       (SELECT format('%%I.%%I', s, t)::regclass FROM unnest(%(s)s::text[], %(t)s::text[]) u(s, t))))
ORDER BY 1, 2, 3
"""


ENABLE = {"O": "ENABLE TRIGGER", "A": "ENABLE ALWAYS TRIGGER", "R": "ENABLE REPLICA TRIGGER"}


def session_mode(conn: psycopg.Connection, target: Endpoint, options: ImportOptions) -> None:
    if options.disable_fk:
        try:
            conn.execute("SET LOCAL session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege:
            raise replica_refused(target) from None
    conn.execute("SET CONSTRAINTS ALL DEFERRED")


def disable_triggers(conn: psycopg.Connection, table: TablePlan) -> list[Trigger]:
    """Turn the application's triggers off for this transaction; returns what to turn back on."""
    triggers = [tuple(r) for r in conn.execute(TRIGGERS_SQL, (table.schema, table.name))]
    for schema, name, trigger, _ in triggers:
        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(
            sql.Identifier(schema, name), sql.Identifier(trigger)))
    return triggers


def restore_triggers(conn: psycopg.Connection, triggers: list[Trigger]) -> None:
    for schema, name, trigger, mode in triggers:
        conn.execute(sql.SQL("ALTER TABLE {} {} {}").format(
            sql.Identifier(schema, name), sql.SQL(ENABLE[mode]), sql.Identifier(trigger)))


def drop_fks(conn: psycopg.Connection, group: list[TablePlan],
              plan: ImportPlan) -> list[ForeignKey]:
    """Drop the group's foreign keys for this transaction; re-added (and so checked) once its tables are loaded."""
    names = {"s": [t.schema for t in group], "t": [t.name for t in group], "cycle": any(group is g for g in plan.cycles)}
    fks = [tuple(r) for r in conn.execute(GROUP_FKS_SQL, names)]
    for schema, name, con, _, _ in fks:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            sql.Identifier(schema, name), sql.Identifier(con)))
    return fks


def restore_fks(conn: psycopg.Connection, fks: list[ForeignKey]) -> None:
    for schema, name, con, definition, comment in fks:
        table = sql.Identifier(schema, name)
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            table, sql.Identifier(con), sql.SQL(definition)))
        if comment is not None:
            conn.execute(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                sql.Identifier(con), table, sql.Literal(comment)))
