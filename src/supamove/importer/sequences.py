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
        row = conn.execute(sql.SQL("SELECT max({})::bigint FROM {}").format(
            sql.Identifier(seq.column), table.ident)).fetchone()
        loaded = row[0] if row else None
        state = sources.get(seq.column) or states.get((seq.schema, seq.name))
        with SEQUENCES:
            move_forward(conn, seq.schema, seq.name, *next_value(state, loaded))


def continue_free_sequences(conn: psycopg.Connection, plan: ImportPlan) -> None:
    """Sequences no loaded column uses (a counter the application calls itself) continue from the source's state."""
    used = {(s.schema, s.name) for t in plan.tables if t.target is not None
            for s in t.target.sequences + t.target.default_sequences}
    for state in plan.meta.sequences:
        key = state.key
        exists = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL", key).fetchone()
        if key not in used and exists and exists[0]:
            move_forward(conn, *key, *next_value(state, None))


def move_forward(conn: psycopg.Connection, schema: str, name: str, value: int | None, called: bool) -> None:
    """setval, unless the target's sequence is already at or past that point (a sequence shared by tables)."""
    if value is None:
        return
    row = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name))).fetchone()
    if row is not None and int(row[0]) + bool(row[1]) >= value + called:  # the next values it would hand out
        return
    conn.execute("SELECT setval(format('%%I.%%I', %s::text, %s::text)::regclass, %s, %s)",
                 (schema, name, value, called))


def next_value(state: SequenceState | None, loaded: int | None) -> tuple[int | None, bool]:
    value, called = (state.last_value, state.is_called) if state else (None, True)
    if loaded is not None and (value is None or loaded > value or (loaded == value and not called)):
        return loaded, True
    return value, called
