"""Materialized views refreshed once every table is loaded, as pg_restore's MATERIALIZED VIEW DATA entries do.

`supamove schema` creates them as pg_dump defines them, WITH NO DATA: reading one fails until it is
refreshed. One created any other way holds what its query read before the load. Either way the
application would see nothing, so the import refreshes each one the source had populated (as
metadata.json records) from the loaded tables, a view after the views it reads.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from supamove.catalog import MaterializedView
from supamove.db import Endpoint, first_line, own_settings
from supamove.importer.model import ImportPlan
from supamove.log import get_logger
from supamove.progress import Progress

log = get_logger("import")
LABEL = "materialized views"


def refresh_materialized_views(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan,
                               progress: Progress) -> list[str]:
    """Refresh the materialized views the plan lists (those the source had populated), in its order;
    returns their names, in the order refreshed.

    A view whose refresh finds another not populated yet reads it where pg_depend does not look (in a
    function's body): it is tried again after the others, for as long as a round refreshes any.
    """
    if plan.views:
        progress.start(LABEL, len(plan.views))
        # In the target's own time zone and formats, as pg_restore and the application's next refresh: a view
        # of readings per day counted UTC days where the application's are local ones.
        with own_settings(conn):
            refreshed = _refresh(conn, target, plan.views, progress)
        progress.finish(LABEL)
        return refreshed
    return []


def _refresh(conn: psycopg.Connection, target: Endpoint, views: list[MaterializedView],
             progress: Progress) -> list[str]:
    refreshed: list[str] = []
    while views:
        waiting: list[tuple[MaterializedView, psycopg.Error]] = []
        for view in views:
            try:  # each in a transaction of its own (autocommit): one that fails keeps those refreshed before it
                conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.Identifier(view.schema, view.name)))
            except psycopg.errors.ObjectNotInPrerequisiteState as exc:
                waiting.append((view, exc))
                continue
            except psycopg.Error as exc:
                raise _refused(target, view, exc) from exc
            log.info("refreshed materialized view %s", view.qualified)
            refreshed.append(view.qualified)
            progress.advance(LABEL)
        if len(waiting) == len(views):  # none could be refreshed: no order of them helps
            raise _refused(target, *waiting[0]) from waiting[0][1]
        views = [view for view, _ in waiting]
    return refreshed


def _refused(target: Endpoint, view: MaterializedView, exc: psycopg.Error) -> Exception:
    return target.error(f"could not refresh materialized view {view.qualified}: {first_line(exc)}",
                        "every table is loaded: correct what its query needs on the target, then run "
                        "`supamove import` again (it refreshes the materialized views again)")
