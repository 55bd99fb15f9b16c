"""Sequences: the target's next values must neither collide with its rows nor fall behind the source's."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from supamove.verify.pools import Pair, fetch_value

# The sequence behind a column (serial, identity or a free-standing one named by pg_get_serial_sequence),
# the value it would give next, and its step.
NEXT_VALUE_SQL = sql.SQL("""
SELECT s.seqrelid::regclass::text, coalesce(pg_sequence_last_value(s.seqrelid) + s.seqincrement, s.seqstart),
       s.seqincrement
FROM pg_sequence s WHERE s.seqrelid = pg_get_serial_sequence(format('%%I.%%I', %s::text, %s::text), %s)::regclass
""")


def sequence_problems(pair: Pair) -> list[str]:
    """A target sequence whose next value collides with existing rows or falls behind the source's."""
    assert pair.plan.source and pair.plan.target
    problems = []
    for ref in pair.plan.source.sequences:
        ours = pair.run("source", NEXT_VALUE_SQL, (pair.plan.source.schema, pair.plan.source.name, ref.column),
                        _fetch_row)
        theirs = pair.run("target", NEXT_VALUE_SQL, (pair.plan.target.schema, pair.plan.target.name, ref.column),
                          _fetch_row)
        if theirs is None:
            problems.append(f"column {ref.column} has no sequence or identity in the target")
            continue
        name, upcoming, step = theirs
        if step < 0:  # both checks below assume an ascending sequence
            continue
        highest = pair.run("target", sql.SQL("SELECT max({}) FROM {}").format(
            sql.Identifier(ref.column), pair.tgt_rel.source), None, fetch_value)
        if highest is not None and upcoming <= highest:
            problems.append(f"sequence {name} would next give {upcoming}, which collides with existing rows "
                            f"(max({ref.column}) = {highest})")
        elif ours is not None and upcoming < ours[1]:
            problems.append(f"sequence {name} would next give {upcoming}, behind the source's {ours[1]}")
    return problems


def _fetch_row(cur: psycopg.Cursor[Any]) -> Any:
    return cur.fetchone()
