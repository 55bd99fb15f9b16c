"""Sequences: the target's next values must neither collide with its rows nor fall behind the source's.

Every sequence a compared table uses (owned by a column, or named by a column's nextval default) is
checked with that table; every other sequence of the export is checked on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from supamove.catalog import SequenceRef, Table
from supamove.db import Endpoint, connect, first_line
from supamove.verify.model import SequenceCheck
from supamove.verify.pools import Pair

SeqKey = tuple[str, str]
State = tuple[int, int, bool]  # the value the sequence would give next, its step, whether it cycles

# Of the sequences named (two parallel text[] parameters), those that exist, with their step.
EXISTING_SQL = """
SELECT n.nspname, c.relname, s.seqincrement, s.seqcycle
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
"""


def _states_query(keys: list[tuple[str, str, int, bool]]) -> sql.Composed:
    """Each sequence's own last_value and is_called (pg_sequence_last_value is null until the first nextval,
    even after setval(..., false) or ALTER SEQUENCE ... RESTART, whose next value is last_value itself)."""
    return sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, {}, CASE WHEN is_called THEN last_value + {} ELSE last_value END, {}, {} FROM {}").format(
            sql.Literal(schema), sql.Literal(name), sql.Literal(step), sql.Literal(step), sql.Literal(cycles),
            sql.Identifier(schema, name))
        for schema, name, step, cycles in keys)


def used_sequences(table: Table) -> list[SequenceRef]:
    """The sequences behind a table's columns: owned ones, then those its defaults name."""
    return list(table.sequences + table.default_sequences)


def read_states(endpoint: Endpoint, names: Iterable[SeqKey]) -> dict[SeqKey, State]:
    """The state of each of these sequences that exists on one side."""
    keys = sorted(set(names))
    if not keys:
        return {}
    try:
        with connect(endpoint, autocommit=True) as conn:
            found = conn.execute(EXISTING_SQL, ([k[0] for k in keys], [k[1] for k in keys])).fetchall()
            rows = conn.execute(_states_query(found)).fetchall() if found else []
    except psycopg.Error as exc:
        raise endpoint.error(f"could not read the {endpoint.side}'s sequences: {first_line(exc)}",
                             "let the user of the URL read the sequences (GRANT SELECT ON ALL SEQUENCES IN "
                             "SCHEMA ...), then run `supamove verify` again") from None
    return {(r[0], r[1]): (int(r[2]), int(r[3]), bool(r[4])) for r in rows}


def behind(name: str, target: State | None, source: State | None) -> str | None:
    """Why a sequence fails when it is missing, steps otherwise or is behind the source's, else None."""
    if target is None:
        return f"sequence {name} does not exist in the target"
    if (why := _steps_otherwise(name, target, source)) is not None:
        return why
    if source is None or target[0] == source[0]:
        return None
    if target[2]:  # its values come round again: no order tells ahead from behind, the source's point stands
        return f"sequence {name} would next give {target[0]}, the source's {source[0]}"
    if (target[0] - source[0]) * target[1] < 0:  # short of the source's in its direction (down, for a step < 0)
        return f"sequence {name} would next give {target[0]}, behind the source's {source[0]}"
    return None


def sequence_problems(pair: Pair, states: dict[str, dict[SeqKey, State]]) -> list[str]:
    """A sequence of the table whose next value collides with the target's rows or falls behind the source's."""
    assert pair.plan.source and pair.plan.target
    theirs = {ref.column: ref for ref in used_sequences(pair.plan.target)}
    refs = [ref for ref in used_sequences(pair.plan.source) if ref.column in theirs]
    problems = [f"column {ref.column} has no sequence or identity in the target"
                for ref in used_sequences(pair.plan.source) if ref.column not in theirs]
    reached = _extremes(pair, [(ref.column, _step(states["target"].get(theirs[ref.column].key))) for ref in refs])
    for ref in refs:
        other = theirs[ref.column]
        state = states["target"].get(other.key)
        if (why := _steps_otherwise(other.qualified, state, states["source"].get(ref.key))) is not None:
            problems.append(why)
        elif (why := _collides(other.qualified, ref.column, state, reached[ref.column])) is not None:
            problems.append(why)
        elif (why := behind(other.qualified, state, states["source"].get(ref.key))) is not None:
            problems.append(why)
    return problems


def _step(state: State | None) -> int:
    return state[1] if state is not None else 1


def _collides(name: str, column: str, state: State | None, reached: Any) -> str | None:
    """Why the sequence's next value is one the rows hold already (at or below their max, or at or above their
    min when it counts down); a sequence that cycles is not judged by its rows."""
    if state is None or state[2] or reached is None or (state[0] - reached) * state[1] > 0:
        return None
    extreme = "max" if state[1] > 0 else "min"
    return f"sequence {name} would next give {state[0]}, which collides with existing rows ({extreme}({column}) = {reached})"


def _steps_otherwise(name: str, target: State | None, source: State | None) -> str | None:
    if target is not None and source is not None and target[1] != source[1]:
        return f"sequence {name} steps by {target[1]} in the target, by {source[1]} in the source"
    return None


def _extremes(pair: Pair, columns: list[tuple[str, int]]) -> dict[str, Any]:
    """The target's highest value of each column whose sequence counts up, the lowest of each one counting down,
    in one scan."""
    if not columns:
        return {}
    query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(
        sql.SQL("{}({})").format(sql.SQL("max" if step > 0 else "min"), sql.Identifier(c)) for c, step in columns),
        pair.tgt_rel.source)
    return dict(zip([c for c, _ in columns], pair.run("target", query, None, _fetch_row), strict=True))


def _fetch_row(cur: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    row = cur.fetchone()
    assert row is not None
    return tuple(row)


def free_sequence_checks(names: Iterable[SeqKey], states: dict[str, dict[SeqKey, State]]) -> list[SequenceCheck]:
    """The export's sequences no table uses, each checked on its own."""
    checks = []
    for key in sorted(names):
        source, target = states["source"].get(key), states["target"].get(key)
        check = SequenceCheck(key[0], key[1], source[0] if source else None, target[0] if target else None)
        if source is None:
            check.failures.append(f"sequence {key[0]}.{key[1]} does not exist in the source")
        elif (why := behind(f"{key[0]}.{key[1]}", target, source)) is not None:
            check.failures.append(why)
        checks.append(check)
    return checks
