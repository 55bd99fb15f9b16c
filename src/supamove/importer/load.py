"""Loading the planned groups: one transaction each, triggers off, FKs re-added, sequences, state."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import psycopg
from psycopg import sql

from supamove.db import Endpoint, connection, first_line
from supamove.errors import DataFileError, SupamoveError
from supamove.files import export_again
from supamove.importer.convert import copy_blocks, prefetched
from supamove.importer.indexes import build_indexes, drop_indexes
from supamove.importer.model import ImportOptions, ImportPlan, ImportResult, TableImport, TablePlan
from supamove.importer.orphans import check_foreign_keys
from supamove.importer.plan import make_plan, replica_refused
from supamove.importer.scan import file_sha256, mismatch
from supamove.importer.schedule import Connections, plan_jobs, run_jobs
from supamove.log import get_logger
from supamove.metadata import SequenceState
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress

log = get_logger("import")


COPY_CONTEXT = re.compile(r"COPY [^\n]*?, line (\d+)(?:, column ([^:\n]+))?")


STATE_DDL = """
CREATE SCHEMA IF NOT EXISTS _supamove;
CREATE TABLE IF NOT EXISTS _supamove.import_state (
    schema_name text NOT NULL,
    table_name text NOT NULL,
    snapshot text NOT NULL,
    sha256 text NOT NULL,
    row_count bigint NOT NULL,
    fk_mode text NOT NULL,
    seconds double precision NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, table_name, snapshot, sha256)
)
"""


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


# The group's foreign keys, checked by one query each when re-added after the COPY rather than by a trigger
# per row. NOT VALID ones stay (re-adding them would check nothing), except inside a cycle, where a
# non-deferrable one cannot wait for the other table.
GROUP_FKS_SQL = """
SELECT n.nspname, c.relname, con.conname, pg_get_constraintdef(con.oid), obj_description(con.oid, 'pg_constraint')
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype = 'f' AND con.conparentid = 0
  AND con.conrelid IN (SELECT format('%%I.%%I', s, t)::regclass FROM unnest(%(s)s::text[], %(t)s::text[]) u(s, t))
  AND (con.convalidated OR (%(cycle)s AND NOT con.condeferrable AND con.confrelid IN
       (SELECT format('%%I.%%I', s, t)::regclass FROM unnest(%(s)s::text[], %(t)s::text[]) u(s, t))))
ORDER BY 1, 2, 3
"""


# Sequences shared by tables loading at once: each read-then-setval happens alone (setval is not transactional).
SEQUENCES = threading.Lock()


ENABLE = {"O": "ENABLE TRIGGER", "A": "ENABLE ALWAYS TRIGGER", "R": "ENABLE REPLICA TRIGGER"}


def run_import(target: Endpoint, datadir: DataDir, options: ImportOptions,
               progress: Progress | None = None) -> ImportResult:
    """Load every planned table not loaded yet, each (or each FK cycle) in one transaction."""
    progress = progress or NullProgress()
    started = time.monotonic()
    with connection(target, autocommit=True) as conn:
        log.debug("timing: connected in %.3fs", time.monotonic() - started)
        plan = make_plan(conn, target, datadir, options)
        failure = plan.failure()
        if failure is not None:
            for problem in plan.problems[1:]:  # the first is the error shown
                log.error("%s", problem)
            raise failure
        conn.execute(STATE_DDL)
        if options.truncate_first:
            _truncate(conn, target, plan)
        mark = _timing("planned", started)
        results = _load_groups(conn, target, plan, progress)
        mark = _timing("loaded", mark)
        checked = _check_whole_load(conn, target, plan, progress) if options.only is None else 0
        _timing("foreign keys and sequences checked", mark)
    return ImportResult(plan, results, time.monotonic() - started, checked)


def finish_import(target: Endpoint, datadir: DataDir, options: ImportOptions, progress: Progress | None = None) -> int:
    """What `run_import` does once every table is loaded, for a caller that loaded them in parts (`options.only`).

    Every table of the export must be loaded; then the foreign keys a --disable-fk load left unchecked are
    checked and the sequences no table uses continue from the source. Returns the foreign keys checked.
    """
    with connection(target, autocommit=True) as conn:
        plan = make_plan(conn, target, datadir, replace(options, only=None, truncate_first=False))
        left = [t.qualified for t in plan.tables if not t.done]
        if plan.failure() is not None or left:
            raise plan.failure() or target.error(f"not loaded yet: {', '.join(left)}", "run `supamove import`")
        return _check_whole_load(conn, target, plan, progress or NullProgress())


def _check_whole_load(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan, progress: Progress) -> int:
    """After every table is loaded: the foreign keys a --disable-fk load skipped, the sequences no table uses."""
    disable_fk = plan.options.disable_fk
    with _phase(progress, "every table: foreign keys", len(plan.tables) if disable_fk else 0):
        checked = check_foreign_keys(conn, target, plan) if disable_fk else 0
    _continue_free_sequences(conn, plan)
    return checked


def _timing(what: str, since: float) -> float:
    """Log how long a phase took (the bench reads these lines); returns now."""
    now = time.monotonic()
    log.debug("timing: %s in %.3fs", what, now - since)
    return now


def _load_groups(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan, progress: Progress) -> list[TableImport]:
    """Every group, up to --jobs at once, each on a connection of its own (this one among them)."""
    connections = Connections(target, conn)

    def load(group: list[TablePlan]) -> list[TableImport]:
        with connections.lent() as mine:
            return _load_group(mine, target, plan, group, progress)

    try:
        return run_jobs(plan_jobs(plan), plan.options.jobs, load)
    finally:
        connections.close()


def _truncate(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan) -> None:
    """One TRUNCATE of every planned table, and their recorded state forgotten, together."""
    tables = [p for p in plan.tables if p.target is not None]
    try:
        with conn.transaction():
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(p.ident for p in tables)))
            conn.execute("DELETE FROM _supamove.import_state WHERE (schema_name, table_name) IN "
                         "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                         ([p.schema for p in tables], [p.name for p in tables]))
    except psycopg.errors.FeatureNotSupported as exc:
        raise target.error(f"cannot truncate the planned tables: {first_line(exc)} "
                           f"{exc.diag.message_detail or ''}".strip(),
                           "empty the referencing table yourself, or add it to the export") from exc
    log.info("truncated %d tables", len(tables))


def _load_group(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan, group: list[TablePlan],
                progress: Progress) -> list[TableImport]:
    done = [t for t in group if t.done]
    for t in done:
        log.info("skipping %s: loaded by a previous run", t.qualified)
    if len(done) == len(group):
        return [TableImport(t.schema, t.name, t.rows, 0.0, skipped=True) for t in group]
    results = []
    try:
        with conn.transaction():
            _session_mode(conn, target, plan.options)
            triggers = [tr for t in group for tr in _disable_triggers(conn, t)]
            dropped = [] if plan.options.disable_fk else _drop_fks(conn, group, plan)
            for table in group:
                results.append(_load_table(conn, target, plan, table, progress))
            with _phase(progress, f"{', '.join(t.qualified for t in group)}: foreign keys", len(dropped)):
                _restore_fks(conn, dropped)
            _restore_triggers(conn, triggers)
    except psycopg.errors.IntegrityError as exc:
        raise target.error(f"{', '.join(t.qualified for t in group)}: {first_line(exc)}"
                           f"{': ' + exc.diag.message_detail if exc.diag.message_detail else ''}",
                           "correct the rows in the source and export again, or load the missing "
                           "parent rows first; nothing of this table was written") from exc
    return results


def _session_mode(conn: psycopg.Connection, target: Endpoint, options: ImportOptions) -> None:
    if options.disable_fk:
        try:
            conn.execute("SET LOCAL session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege:
            raise replica_refused(target) from None
    conn.execute("SET CONSTRAINTS ALL DEFERRED")


def _disable_triggers(conn: psycopg.Connection, table: TablePlan) -> list[tuple[str, str, str, str]]:
    """Turn the application's triggers off for this transaction; returns what to turn back on."""
    triggers = [tuple(r) for r in conn.execute(TRIGGERS_SQL, (table.schema, table.name))]
    for schema, name, trigger, _ in triggers:
        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(
            sql.Identifier(schema, name), sql.Identifier(trigger)))
    return triggers


def _restore_triggers(conn: psycopg.Connection, triggers: list[tuple[str, str, str, str]]) -> None:
    for schema, name, trigger, mode in triggers:
        conn.execute(sql.SQL("ALTER TABLE {} {} {}").format(
            sql.Identifier(schema, name), sql.SQL(ENABLE[mode]), sql.Identifier(trigger)))


def _drop_fks(conn: psycopg.Connection, group: list[TablePlan],
              plan: ImportPlan) -> list[tuple[str, str, str, str, str | None]]:
    """Drop the group's foreign keys for this transaction; re-added (and so checked) once its tables are loaded."""
    names = {"s": [t.schema for t in group], "t": [t.name for t in group], "cycle": any(group is g for g in plan.cycles)}
    fks = [tuple(r) for r in conn.execute(GROUP_FKS_SQL, names)]
    for schema, name, con, _, _ in fks:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            sql.Identifier(schema, name), sql.Identifier(con)))
    return fks


def _restore_fks(conn: psycopg.Connection, fks: list[tuple[str, str, str, str, str | None]]) -> None:
    for schema, name, con, definition, comment in fks:
        table = sql.Identifier(schema, name)
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            table, sql.Identifier(con), sql.SQL(definition)))
        if comment is not None:
            conn.execute(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                sql.Identifier(con), table, sql.Literal(comment)))


def _load_table(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan, table: TablePlan,
                progress: Progress) -> TableImport:
    started = time.monotonic()
    progress.start(table.qualified, table.rows)
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
    query = sql.SQL("COPY {} ({}) FROM STDIN").format(table.ident, columns)
    indexes = drop_indexes(conn, table)
    digest = hashlib.sha256()
    try:
        with conn.cursor() as cur, cur.copy(query) as copy, prefetched(copy_blocks(table, plan, digest)) as blocks:
            rows = 0
            for block, count in blocks:
                copy.write(block)
                rows += count
                progress.advance(table.qualified, count)
            if (damaged := mismatch(table, digest.hexdigest())) is not None:
                raise damaged  # inside the COPY: the server drops what it received
    # The server's CONTEXT quotes the row's value: the message names its line and column, the log stays free of data.
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError, DataFileError) as exc:
        # A file changed since the export explains a bad line or value best.
        changed = mismatch(table, file_sha256(table.path)) if table.path.exists() else None
        if changed is not None or isinstance(exc, DataFileError):
            raise changed or exc from None
        raise _rejected(target, table, exc) from None
    copied = time.monotonic() - started
    progress.finish(table.qualified)
    with _phase(progress, f"{table.qualified}: indexes and constraints", len(indexes)):
        build_indexes(conn, table, indexes)
    if rows != table.rows:
        raise DataFileError(f"{table.path} has {rows} rows, metadata.json says {table.rows}",
                            fix=export_again(*table.key))
    _set_sequences(conn, plan, table)
    seconds = time.monotonic() - started
    conn.execute("INSERT INTO _supamove.import_state (schema_name, table_name, snapshot, sha256, row_count, "
                 "fk_mode, seconds) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                 (*table.state_key, rows, "checked after load" if plan.options.disable_fk else "enforced", seconds))
    log.debug("loaded %s: %d rows in %.1fs", table.qualified, rows, seconds)
    return TableImport(table.schema, table.name, rows, seconds, copy_seconds=copied)


@contextmanager
def _phase(progress: Progress, label: str, steps: int) -> Iterator[None]:
    """The work after a table's rows (its indexes, its foreign keys) as a bar of its own, when there is any."""
    if steps:
        progress.start(label, steps)
    yield
    if steps:
        progress.advance(label, steps)
        progress.finish(label)


def _rejected(target: Endpoint, table: TablePlan, exc: psycopg.Error) -> SupamoveError:
    """Name the file line and column the target refused (COPY reports them)."""
    match = COPY_CONTEXT.search(exc.diag.context or "")
    where = ""
    if match:
        where = f" at line {match.group(1)} of {table.path.name}"
        if match.group(2):
            where += f", column {match.group(2)}"
    detail = f" ({exc.diag.message_detail})" if exc.diag.message_detail else ""
    return target.error(f"the target rejected a row of {table.qualified}{where}: "
                        f"{exc.diag.message_primary or first_line(exc)}{detail}",
                        f"correct the value or the target column type; nothing of {table.qualified} was written")


def _set_sequences(conn: psycopg.Connection, plan: ImportPlan, table: TablePlan) -> None:
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
            _move_forward(conn, seq.schema, seq.name, *_next_value(state, loaded))


def _continue_free_sequences(conn: psycopg.Connection, plan: ImportPlan) -> None:
    """Sequences no loaded column uses (a counter the application calls itself) continue from the source's state."""
    used = {(s.schema, s.name) for t in plan.tables if t.target is not None
            for s in t.target.sequences + t.target.default_sequences}
    for state in plan.meta.sequences:
        key = state.key
        exists = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL", key).fetchone()
        if key not in used and exists and exists[0]:
            _move_forward(conn, *key, *_next_value(state, None))


def _move_forward(conn: psycopg.Connection, schema: str, name: str, value: int | None, called: bool) -> None:
    """setval, unless the target's sequence is already at or past that point (a sequence shared by tables)."""
    if value is None:
        return
    row = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name))).fetchone()
    if row is not None and int(row[0]) + bool(row[1]) >= value + called:  # the next values it would hand out
        return
    conn.execute("SELECT setval(format('%%I.%%I', %s::text, %s::text)::regclass, %s, %s)",
                 (schema, name, value, called))


def _next_value(state: SequenceState | None, loaded: int | None) -> tuple[int | None, bool]:
    value, called = (state.last_value, state.is_called) if state else (None, True)
    if loaded is not None and (value is None or loaded > value or (loaded == value and not called)):
        return loaded, True
    return value, called
