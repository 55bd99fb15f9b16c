"""Each sequence continued on the target from the source's state, never behind the rows loaded."""

from __future__ import annotations

import threading

import psycopg
from psycopg import sql

from supamove.importer.model import ImportPlan, TablePlan
from supamove.metadata import SequenceState

# Sequences shared by tables loading at once: each read-then-setval happens alone (setval is not transactional).
SEQUENCES = threading.Lock()


def set_sequences(conn: psycopg.Connection, plan: ImportPlan, table: TablePlan) -> None:
    """Each of the target's sequences continues from the source's state, never below the loaded max."""
    assert table.target is not None
    states = {s.key: s for s in plan.meta.sequences}
    sources = {s.column: states.get(s.key) for s in table.entry.table.sequences}
    for seq in table.target.sequences + table.target.default_sequences:
        step, cycles = shape(conn, seq.schema, seq.name)
        state = sources.get(seq.column) or states.get((seq.schema, seq.name))
        # A sequence counting down hands out values below the rows' least; one that cycles goes back to its start,
        # so the rows loaded say nothing of where it stands: the source's state alone does.
        loaded = None if cycles and state else _extreme(conn, table, seq.column, step)
        with SEQUENCES:
            move_forward(conn, seq.schema, seq.name, *next_value(state, loaded, step), step=step, cycles=cycles)


def shape(conn: psycopg.Connection, schema: str, name: str) -> tuple[int, bool]:
    """The sequence's step and whether it cycles, as the target has it."""
    row = conn.execute("SELECT seqincrement, seqcycle FROM pg_sequence WHERE seqrelid = "
                       "format('%%I.%%I', %s::text, %s::text)::regclass", (schema, name)).fetchone()
    return (int(row[0]), bool(row[1])) if row else (1, False)


def _extreme(conn: psycopg.Connection, table: TablePlan, column: str, step: int) -> int | None:
    """The loaded value the sequence must go past: the highest, or the lowest for one counting down."""
    row = conn.execute(sql.SQL("SELECT {}({})::bigint FROM {}").format(
        sql.SQL("max" if step > 0 else "min"), sql.Identifier(column), table.ident)).fetchone()
    return row[0] if row else None


def continue_free_sequences(conn: psycopg.Connection, plan: ImportPlan) -> None:
    """Sequences no loaded column uses (a counter the application calls itself) continue from the source's state."""
    used = {(s.schema, s.name) for t in plan.tables if t.target is not None
            for s in t.target.sequences + t.target.default_sequences}
    for state in plan.meta.sequences:
        key = state.key
        exists = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL", key).fetchone()
        if key not in used and exists and exists[0]:
            step, cycles = shape(conn, *key)
            move_forward(conn, *key, *next_value(state, None, step), step=step, cycles=cycles)


def move_forward(conn: psycopg.Connection, schema: str, name: str, value: int | None, called: bool,
                 step: int = 1, cycles: bool = False) -> None:
    """setval, unless the target's sequence is already at or past that point in its direction (a sequence shared
    by tables); one that cycles is set to the point, since its values come round again."""
    if value is None:
        return
    row = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name))).fetchone()
    sign = 1 if step > 0 else -1
    if not cycles and row is not None and sign * int(row[0]) + bool(row[1]) >= sign * value + called:
        return  # the next values it would hand out are already past that point
    conn.execute("SELECT setval(format('%%I.%%I', %s::text, %s::text)::regclass, %s, %s)",
                 (schema, name, value, called))


def next_value(state: SequenceState | None, loaded: int | None, step: int = 1) -> tuple[int | None, bool]:
    """Where the sequence continues: the source's state, or the loaded extreme when the rows are past it."""
    value, called = (state.last_value, state.is_called) if state else (None, True)
    past = loaded is not None and value is not None and (loaded > value if step > 0 else loaded < value)
    if loaded is not None and (value is None or past or (loaded == value and not called)):
        return loaded, True
    return value, called
