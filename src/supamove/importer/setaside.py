"""What a load sets aside while its rows go in: the application's triggers, the group's foreign keys and
NOT VALID constraints."""

from __future__ import annotations

import psycopg
from psycopg import sql

from supamove.db import Endpoint
from supamove.importer.model import ImportOptions, TablePlan
from supamove.importer.plan import replica_refused

Trigger = tuple[str, str, str, str]  # schema, table, trigger, how it was enabled
Constraint = tuple[str, str, str, str, str | None]  # schema, table, constraint, definition, comment


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


# The group's constraints dropped for the load and re-added once its tables are loaded:
# - its foreign keys (--disable-fk turns their triggers off instead): each then checked by one query rather
#   than by a trigger per row, and a cycle's once both tables are loaded;
# - the CHECK constraints NOT VALID on its tables and their partitions, which would check each row the COPY
#   writes though the source never checked its old rows (one inherited from a parent cannot be dropped alone).
# A NOT VALID one (a foreign key too) comes back NOT VALID, its definition says so: it checks no loaded row,
# as pg_restore adds it after the rows.
GROUP_CONSTRAINTS_SQL = """
WITH planned AS (SELECT format('%%I.%%I', s, t)::regclass AS oid FROM unnest(%(s)s::text[], %(t)s::text[]) u(s, t)),
tree AS (SELECT oid FROM planned UNION SELECT p.relid FROM planned, pg_partition_tree(planned.oid) p)
SELECT n.nspname, c.relname, con.conname, pg_get_constraintdef(con.oid), obj_description(con.oid, 'pg_constraint')
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (con.contype = 'f' AND NOT %(disable_fk)s AND con.conparentid = 0 AND con.conrelid IN (SELECT oid FROM planned))
   OR (con.contype = 'c' AND NOT con.convalidated AND con.coninhcount = 0 AND con.conrelid IN (SELECT oid FROM tree))
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


def drop_constraints(conn: psycopg.Connection, group: list[TablePlan], options: ImportOptions) -> list[Constraint]:
    """Drop the group's foreign keys and NOT VALID checks for this transaction; returns what to re-add."""
    names = {"s": [t.schema for t in group], "t": [t.name for t in group], "disable_fk": options.disable_fk}
    dropped = [tuple(r) for r in conn.execute(GROUP_CONSTRAINTS_SQL, names)]
    for schema, name, con, _, _ in dropped:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            sql.Identifier(schema, name), sql.Identifier(con)))
    return dropped


def restore_constraints(conn: psycopg.Connection, dropped: list[Constraint]) -> None:
    """Re-add what `drop_constraints` dropped: a foreign key checks every row then, a NOT VALID one none."""
    for schema, name, con, definition, comment in dropped:
        table = sql.Identifier(schema, name)
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            table, sql.Identifier(con), sql.SQL(definition)))
        if comment is not None:
            conn.execute(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                sql.Identifier(con), table, sql.Literal(comment)))
