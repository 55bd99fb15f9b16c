"""Supabase user ids left in the target: counted inside PostgreSQL against the mapping's Supabase ids.

Every column of a compared table whose text may hold a user id is read in one scan of the target table (uuid,
uuid[], text-like and text[] values that are user ids, JSON strings that are, and in any other type a uuid
standing alone in its text); a row that still holds a Supabase user id of user-mapping.json fails its table,
unless the column was kept on purpose.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from supamove import userids
from supamove.verify.model import TableCheck, UserIdCount
from supamove.verify.pools import SUPABASE_IDS, Pair

# The mapping's Supabase ids, from the temporary table the target's sessions load.
MAPPED_SUPABASE_IDS = sql.SQL("(SELECT s.id FROM {} s)").format(SUPABASE_IDS)


Held = list[tuple[str, int, str | None]]  # per column counted: its name, the rows holding ids, one of those ids


def held_supabase_ids(pair: Pair) -> Held:
    """The target's rows holding Supabase user ids, per column that may hold them (its sessions hold the mapping)."""
    assert pair.plan.target is not None
    columns = [c for c in pair.plan.target.columns if userids.left_family(c) is not None]
    held: Held = []
    for group in userids.column_groups(columns):  # a query's columns are limited: a wide table takes more
        row = pair.run("target", userids.held_counts_query(pair.plan.target, group, MAPPED_SUPABASE_IDS),
                       None, _fetch_row)
        held += [(c.name, int(row[2 * i]), row[2 * i + 1]) for i, c in enumerate(group)]
    return held


def count_supabase_ids(pair: Pair, check: TableCheck, kept: set[str],
                       known: tuple[Held, float] | None = None) -> None:
    """Count the target's rows holding Supabase user ids, per column; each unkept column with any fails.
    `known`: the counts and their seconds, taken as the table was loaded (`verify.ahead`)."""
    started = time.monotonic()
    held, seconds = known if known is not None else (held_supabase_ids(pair), 0.0)
    check.supabase_ids = [UserIdCount(column, rows, example, column in kept) for column, rows, example in held]
    check.supabase_id_seconds = seconds if known is not None else time.monotonic() - started
    for count in check.supabase_ids:
        if count.rows and not count.kept:  # a kept column is listed in the report, and passes
            rows, hold = ("1 row", "holds") if count.rows == 1 else (f"{count.rows:,} rows", "hold")
            check.failures.append(f"{rows} of column {count.column} still {hold} Supabase user ids "
                                  f"(e.g. {count.example})")


def _fetch_row(cur: Any) -> Any:
    row = cur.fetchone()
    assert row is not None
    return row
