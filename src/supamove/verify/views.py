"""Materialized views: populated on the target wherever they are on the source (the import refreshes them)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
from psycopg import sql

from supamove import catalog
from supamove.db import Endpoint, connect, first_line
from supamove.verify.model import ViewCheck


@dataclass(frozen=True)
class Seen:
    """One side's materialized view: populated (from the catalog), and its rows when they could be counted."""

    populated: bool
    rows: int | None = None
    unread: str | None = None  # why the rows were not counted (a view the connection's role may not read)


def view_checks(source: Endpoint, target: Endpoint, schemas: list[str]) -> list[ViewCheck]:
    """Each materialized view of `schemas` on the source, checked on the target, by name."""
    if not schemas:  # verify --tables: no view is checked
        return []
    with ThreadPoolExecutor(2, thread_name_prefix="verify-views") as pool:  # both sides at once
        ours, theirs = pool.map(lambda endpoint: _seen(endpoint, schemas), (source, target))
    return [_check(key, mine, theirs.get(key)) for key, mine in sorted(ours.items())]


def _check(key: tuple[str, str], mine: Seen, theirs: Seen | None) -> ViewCheck:
    name = ".".join(key)
    check = ViewCheck(*key, source_rows=mine.rows, target_rows=theirs.rows if theirs else None)
    if not mine.populated:  # empty on the source too: nothing an application reads there yet
        return check
    if theirs is None:
        check.failures.append(f"materialized view {name} does not exist in the target")
    elif not theirs.populated:
        check.failures.append(f"materialized view {name} is not populated in the target: reading it fails")
    elif mine.unread or theirs.unread:
        side, why = ("source", mine.unread) if mine.unread else ("target", theirs.unread)
        check.warnings.append(f"materialized view {name}: rows not compared ({side}: {why})")
    elif mine.rows != theirs.rows:
        check.warnings.append(f"materialized view {name}: source {mine.rows:,} rows, target {theirs.rows:,} "
                              "(refreshed from the target's tables: a view over now() or over data that did "
                              "not move differs)")
    return check


def _seen(endpoint: Endpoint, schemas: list[str]) -> dict[tuple[str, str], Seen]:
    with connect(endpoint, autocommit=True) as conn:
        return {v.key: _count(conn, v) if v.populated else Seen(False)
                for v in catalog.materialized_views(conn, schemas)}


def _count(conn: psycopg.Connection, view: catalog.MaterializedView) -> Seen:
    try:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(view.schema, view.name))).fetchone()
    except psycopg.Error as exc:
        return Seen(True, unread=first_line(exc))
    return Seen(True, int(row[0]) if row else 0)
