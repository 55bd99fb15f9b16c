"""Loading the planned groups: one transaction each, triggers off, constraints re-added, sequences, state."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import psycopg
from psycopg import sql

from supamove.db import Endpoint, connection, first_line
from supamove.errors import DataFileError
from supamove.files import export_again
from supamove.importer.convert import conversion_workers
from supamove.importer.indexes import build_indexes, drop_indexes
from supamove.importer.model import (
    ImportOptions,
    ImportPlan,
    ImportResult,
    TableImport,
    TablePlan,
    WholeLoad,
)
from supamove.importer.orphans import check_foreign_keys
from supamove.importer.plan import make_plan
from supamove.importer.ranges import RANGES_DDL, load_split, read_held, restore_held, splits
from supamove.importer.rows import copy_rows, record_loaded
from supamove.importer.schedule import Connections, plan_jobs, run_jobs
from supamove.importer.sequences import continue_free_sequences, set_sequences
from supamove.importer.setaside import (
    disable_triggers,
    drop_constraints,
    restore_constraints,
    restore_triggers,
    session_mode,
)
from supamove.importer.views import refresh_materialized_views
from supamove.locks import LockWatch
from supamove.log import get_logger
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress
from supamove.words import counted

log = get_logger("import")



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






def run_import(target: Endpoint, datadir: DataDir, options: ImportOptions,
               progress: Progress | None = None) -> ImportResult:
    """Load every planned table not loaded yet, each (or each FK cycle) in one transaction."""
    progress = progress or NullProgress()
    started = time.monotonic()
    with connection(target, autocommit=True) as conn, LockWatch(target, "import"):
        log.debug("timing: connected in %.3fs", time.monotonic() - started)
        plan = make_plan(conn, target, datadir, options)
        failure = plan.failure()
        if failure is not None:
            for problem in plan.problems[1:]:  # the first is the error shown
                log.error("%s", problem)
            raise failure
        _create_state(conn, target)
        if options.truncate_first or not all(t.done for t in plan.tables):
            datadir.set_aside_verification()  # the target changes now: the last verdict no longer holds
        if options.truncate_first:
            _truncate(conn, target, plan)
        mark = _timing("planned", started)
        results = _load_groups(conn, target, plan, progress)
        mark = _timing("loaded", mark)
        whole = _finish_whole_load(conn, target, plan, progress) if options.only is None else WholeLoad()
        _timing("foreign keys, sequences and materialized views done", mark)
    return ImportResult(plan, results, time.monotonic() - started, whole.foreign_keys, whole.refreshed)


def finish_import(target: Endpoint, datadir: DataDir, options: ImportOptions,
                  progress: Progress | None = None) -> WholeLoad:
    """What `run_import` does once every table is loaded, for a caller that loaded them in parts (`options.only`).

    Every table of the export must be loaded; then the foreign keys a --disable-fk load left unchecked are
    checked, the sequences no table uses continue from the source and the materialized views are refreshed.
    """
    with connection(target, autocommit=True) as conn, LockWatch(target, "import"):
        plan = make_plan(conn, target, datadir, replace(options, only=None, truncate_first=False))
        left = [t.qualified for t in plan.tables if not t.done]
        if plan.failure() is not None or left:
            raise plan.failure() or target.error(f"not loaded yet: {', '.join(left)}", "run `supamove import`")
        return _finish_whole_load(conn, target, plan, progress or NullProgress())


def _finish_whole_load(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan, progress: Progress) -> WholeLoad:
    """After every table is loaded: the foreign keys a --disable-fk load skipped, the sequences no table
    uses, then the materialized views, which read the tables."""
    disable_fk = plan.options.disable_fk
    with _phase(progress, "every table: foreign keys", len(plan.tables) if disable_fk else 0):
        checked = check_foreign_keys(conn, target, plan) if disable_fk else 0
    continue_free_sequences(conn, plan)
    return WholeLoad(checked, refresh_materialized_views(conn, target, plan, progress))


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
        with conversion_workers(plan):
            return run_jobs(plan_jobs(plan), plan.options.jobs, load)
    finally:
        connections.close()


def _create_state(conn: psycopg.Connection, target: Endpoint) -> None:
    """The _supamove schema recording the import's progress: the user must be allowed to create it."""
    try:
        with conn.transaction():
            # Loads beside each other (`migrate`) create it one after the other: IF NOT EXISTS alone races.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('_supamove state'))")
            conn.execute(STATE_DDL)
            conn.execute(RANGES_DDL)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise target.error(f"cannot create the _supamove schema that records the import's progress: "
                           f"{first_line(exc)}", "GRANT CREATE ON DATABASE (the target's database) to the user in "
                           "DATABASE_URL, or use the database's owner") from exc


def _truncate(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan) -> None:
    """One TRUNCATE of every planned table, and their recorded state forgotten, together."""
    tables = [p for p in plan.tables if p.target is not None]
    if not tables:
        return
    try:
        with conn.transaction():
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(p.alone for p in tables)))
            for table in tables:  # a crashed split load's indexes, foreign keys and triggers come back
                if (held := read_held(conn, table)) is not None:
                    restore_held(conn, table, held)
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
    if splits(group[0], plan, group):
        return [load_split(conn, target, plan, group[0], progress)]
    results = []
    try:
        with conn.transaction():
            session_mode(conn, target, plan.options)
            triggers = [tr for t in group for tr in disable_triggers(conn, t)]
            dropped = drop_constraints(conn, group, plan.options)
            for table in group:
                results.append(_load_table(conn, target, plan, table, progress))
            with _phase(progress, f"{', '.join(t.qualified for t in group)}: constraints", len(dropped)):
                restore_constraints(conn, dropped)
            restore_triggers(conn, triggers)
    except psycopg.errors.IntegrityError as exc:
        fix = ("correct the rows in the source and export again, or load the missing parent rows first; nothing "
               "of this table was written")
        raise target.error(f"{', '.join(t.qualified for t in group)}: {first_line(exc)}"
                           f"{': ' + exc.diag.message_detail if exc.diag.message_detail else ''}",
                           plan.parent_fix(fix) if isinstance(exc, psycopg.errors.ForeignKeyViolation)
                           else fix) from exc
    return results


def _load_table(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan, table: TablePlan,
                progress: Progress) -> TableImport:
    started = time.monotonic()
    progress.start(table.qualified, table.rows)
    indexes = drop_indexes(conn, table)
    rows = copy_rows(conn, target, plan, table, progress)
    copied = time.monotonic() - started
    progress.finish(table.qualified)
    with _phase(progress, f"{table.qualified}: indexes and constraints", len(indexes)):
        build_indexes(conn, table, indexes)
    if rows != table.rows:
        raise DataFileError(f"{table.path} has {counted(rows, 'row')}, metadata.json says {table.rows:,}",
                            fix=export_again(*table.key))
    set_sequences(conn, plan, table)
    seconds = time.monotonic() - started
    record_loaded(conn, plan, table, rows, seconds)
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


