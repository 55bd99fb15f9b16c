"""Materialized views refreshed once every table is loaded, as pg_restore's MATERIALIZED VIEW DATA entries do.

`supamove schema` creates them as pg_dump defines them, WITH NO DATA: reading one fails until it is
refreshed. One created any other way holds what its query read before the load. Either way the
application would see nothing, so the import refreshes each one the source had populated (as
metadata.json records) from the loaded tables, a view after the views it reads.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from supamove.db import Endpoint, first_line
from supamove.importer.model import ImportPlan
from supamove.log import get_logger
from supamove.progress import Progress

log = get_logger("import")
LABEL = "materialized views"


def refresh_materialized_views(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan,
                               progress: Progress) -> list[str]:
    """Refresh the materialized views the plan lists (those the source had populated), in its order;
    returns their names."""
    views = plan.views
    if views:
        progress.start(LABEL, len(views))
    for view in views:
        try:  # each in a transaction of its own (autocommit): one that fails keeps those refreshed before it
            conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.Identifier(view.schema, view.name)))
        except psycopg.Error as exc:
            raise target.error(f"could not refresh materialized view {view.qualified}: {first_line(exc)}",
                               "every table is loaded: correct what its query needs on the target, then run "
                               "`supamove import` again (it refreshes the materialized views again)") from exc
        log.info("refreshed materialized view %s", view.qualified)
        progress.advance(LABEL)
    if views:
        progress.finish(LABEL)
    return [v.qualified for v in views]
