"""Foreign keys checked after a --disable-fk load."""

from __future__ import annotations

import psycopg
from psycopg import sql

from supamove.catalog import ForeignKey
from supamove.db import Endpoint
from supamove.importer.model import ImportPlan
from supamove.log import get_logger
from supamove.words import counted

log = get_logger("import")


def check_foreign_keys(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan) -> int:
    """Count the rows of every planned table's FKs that match no parent; fail naming them. A NOT VALID one
    is left alone: it vouches for no row the load wrote, as on the source, where old rows may break it."""
    orphans = []
    checked = 0
    for table in plan.tables:
        for fk in table.target.foreign_keys if table.target else ():
            if not fk.validated:
                continue
            checked += 1
            row = conn.execute(_orphans_query(table.alone, fk)).fetchone()
            count = int(row[0]) if row else 0
            if count:
                orphans.append(f"{fk.name} on {table.qualified}: {counted(count, 'row')} without a match in "
                               f"{fk.ref_schema}.{fk.ref_table}")
                log.error("foreign key %s on %s: %d orphan rows", fk.name, table.qualified, count)
    if orphans:
        raise target.error(f"foreign keys violated after the load: {'; '.join(orphans)}",
                           plan.parent_fix("the loaded rows stay for inspection; correct the source data, export it "
                                           "again (`supamove export --force`), then run `supamove import "
                                           "--truncate-first`, or load without --disable-fk to stop at the first "
                                           "bad row"))
    log.info("checked %d foreign keys: no orphan rows", checked)
    return checked


def _orphans_query(table: sql.Composable, fk: ForeignKey) -> sql.Composed:
    """The rows of `table` that `fk` refuses. A table inheriting from it has none of its foreign keys, so its
    rows are not read with the parent's (`ONLY`); a partitioned table's partitions are."""
    child = [sql.SQL("c.{}").format(sql.Identifier(c)) for c in fk.columns]
    parent = [sql.SQL("p.{}").format(sql.Identifier(c)) for c in fk.ref_columns]
    not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in child)
    match = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(p, c) for p, c in zip(parent, child, strict=True))
    return sql.SQL("SELECT count(*) FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})").format(
        table, not_null, sql.Identifier(fk.ref_schema, fk.ref_table), match)
