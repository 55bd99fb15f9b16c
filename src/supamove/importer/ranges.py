"""A big table loaded as byte ranges of its file, on several connections at once.

A transaction cannot span connections, so such a load takes three, each committed: what the COPY must
not maintain is set aside (the table's indexes and keys, foreign keys, NOT VALID checks and triggers; their
definitions kept in `_supamove.import_split`), the ranges go in (each commits with its row in
`_supamove.import_ranges`), then everything set aside comes back and the table is recorded as loaded.
A rerun after a crash loads only the ranges not recorded, then finishes; `--truncate-first` empties
the table and puts back what was set aside.
"""

from __future__ import annotations

import functools
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from supamove.db import Endpoint, connect, first_line
from supamove.errors import DataFileError
from supamove.files import export_again
from supamove.importer.indexes import Rebuilt, build_indexes, drop_indexes
from supamove.importer.model import ImportPlan, Span, TableImport, TablePlan
from supamove.importer.rows import copy_rows, record_loaded
from supamove.importer.scan import READ_BYTES, mismatch
from supamove.importer.sequences import set_sequences
from supamove.importer.setaside import (
    Constraint,
    Trigger,
    disable_triggers,
    drop_constraints,
    restore_constraints,
    restore_triggers,
    session_mode,
)
from supamove.log import get_logger
from supamove.progress import Progress
from supamove.words import counted

log = get_logger("import")

RANGES_DDL = """
CREATE TABLE IF NOT EXISTS _supamove.import_split (
    schema_name text NOT NULL,
    table_name text NOT NULL,
    snapshot text NOT NULL,
    sha256 text NOT NULL,
    ranges integer NOT NULL,
    held jsonb NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, table_name)
);
CREATE TABLE IF NOT EXISTS _supamove.import_ranges (
    schema_name text NOT NULL,
    table_name text NOT NULL,
    snapshot text NOT NULL,
    sha256 text NOT NULL,
    range integer NOT NULL,
    row_count bigint NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, table_name, snapshot, sha256, range)
)
"""


@dataclass
class Held:
    """What a split load set aside, to put back once its ranges are in."""

    ranges: int
    indexes: list[Rebuilt]
    constraints: list[Constraint]  # as "foreignKeys", the key a crashed load of an earlier version wrote
    triggers: list[Trigger]

    def to_dict(self) -> dict[str, Any]:
        return {"ranges": self.ranges, "indexes": [asdict(i) for i in self.indexes],
                "foreignKeys": [list(c) for c in self.constraints], "triggers": [list(t) for t in self.triggers]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Held:
        return cls(int(data["ranges"]), [Rebuilt(**i) for i in data["indexes"]],
                   [tuple(c) for c in data["foreignKeys"]], [tuple(t) for t in data["triggers"]])


def splits(table: TablePlan, plan: ImportPlan, group: list[TablePlan]) -> bool:
    """A table alone in its group whose file is big, with --jobs to spare: or one a crashed run split."""
    if table.resume_split:
        return True
    limit = plan.options.split_larger_than_mb * 1024 * 1024
    return len(group) == 1 and plan.options.jobs > 1 and bool(limit) and (table.entry.bytes or 0) > limit


def load_split(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan, table: TablePlan,
               progress: Progress) -> TableImport:
    """Set aside, load the ranges not loaded yet (each on a connection of its own), put back, record."""
    started = time.monotonic()
    held = read_held(conn, table) or _set_aside(conn, target, plan, table)
    loaded = _loaded_ranges(conn, table)
    progress.start(table.qualified, table.rows)
    progress.advance(table.qualified, sum(loaded.values()))
    with ThreadPoolExecutor(held.ranges + 1, thread_name_prefix="import-range") as pool:
        scan = FileScan(table, _cuts(table, held.ranges), pool)
        todo = [(number, span) for number, span in enumerate(scan.spans, 1) if number not in loaded]
        if loaded:
            log.info("resuming %s: %d of %d ranges loaded by a previous run", table.qualified, len(loaded),
                     len(scan.spans))
        counts = list(pool.map(lambda job: _load_range(target, plan, table, job, scan, progress), todo))
        scan.check()  # also when a previous run loaded every range
    rows = sum(loaded.values()) + sum(counts)
    copied = time.monotonic() - started
    progress.finish(table.qualified)
    if rows != table.rows:
        raise DataFileError(f"{table.path} has {counted(rows, 'row')}, metadata.json says {table.rows:,}",
                            fix=export_again(*table.key))
    _put_back(conn, target, plan, table, held, rows, started)
    seconds = time.monotonic() - started
    log.debug("loaded %s as %d ranges: %d rows in %.1fs", table.qualified, len(scan.spans), rows, seconds)
    return TableImport(table.schema, table.name, rows, seconds, copy_seconds=copied)


def _cuts(table: TablePlan, count: int) -> list[int]:
    """`count` ranges of the file of about equal bytes, each from a line's start: their offsets, and the end."""
    size = table.path.stat().st_size
    with open(table.path, "rb") as handle:
        cuts = [0]
        for i in range(1, count):
            handle.seek(max(size * i // count - 1, cuts[-1]))
            handle.readline()  # to the start of the next line
            cuts.append(handle.tell())
    return [*cuts, size]


class FileScan:
    """The file read once beside the ranges' loads: its SHA-256, checked before any range commits, and the
    lines before each range, counted to name a line in an error. The ranges do not wait for it to start."""

    def __init__(self, table: TablePlan, cuts: list[int], pool: ThreadPoolExecutor) -> None:
        self.table = table
        self._result = pool.submit(self._scan, cuts)
        self.spans = [Span(start, end, functools.partial(self._lines_before, i))
                      for i, (start, end) in enumerate(pairwise(cuts))]

    def check(self) -> None:
        """Raise when the file is not the one the export wrote."""
        if (damaged := mismatch(self.table, self._result.result()[0])) is not None:
            raise damaged

    def _lines_before(self, number: int) -> int:
        return sum(self._result.result()[1][:number])

    def _scan(self, cuts: list[int]) -> tuple[str, list[int]]:
        digest, lines = hashlib.sha256(), []
        with open(self.table.path, "rb") as handle:
            for start, end in pairwise(cuts):
                lines.append(_read(handle, end - start, digest))
        return digest.hexdigest(), lines


def _read(handle: Any, size: int, digest: Any) -> int:
    """Read `size` bytes into `digest`; the lines they hold."""
    lines = 0
    while size > 0 and (data := handle.read(min(READ_BYTES * 8, size))):
        digest.update(data)
        lines += data.count(b"\n")
        size -= len(data)
    return lines


def read_held(conn: psycopg.Connection, table: TablePlan) -> Held | None:
    """What a crashed split load of this table set aside, if one did."""
    row = conn.execute("SELECT held FROM _supamove.import_split WHERE schema_name = %s AND table_name = %s",
                       table.key).fetchone()
    return Held.from_dict(row[0]) if row else None


def _set_aside(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan, table: TablePlan) -> Held:
    """Triggers off, foreign keys, NOT VALID checks and indexes dropped, all recorded: committed before the
    ranges start."""
    with conn.transaction():
        session_mode(conn, target, plan.options)
        triggers = disable_triggers(conn, table)
        constraints = drop_constraints(conn, [table], plan.options)
        held = Held(plan.options.jobs, drop_indexes(conn, table), constraints, triggers)
        conn.execute("INSERT INTO _supamove.import_split (schema_name, table_name, snapshot, sha256, ranges, held) "
                     "VALUES (%s, %s, %s, %s, %s, %s)", (*table.state_key, held.ranges, Jsonb(held.to_dict())))
    return held


def _loaded_ranges(conn: psycopg.Connection, table: TablePlan) -> dict[int, int]:
    rows = conn.execute("SELECT range, row_count FROM _supamove.import_ranges WHERE schema_name = %s "
                        "AND table_name = %s AND snapshot = %s AND sha256 = %s", table.state_key)
    return {int(number): int(count) for number, count in rows}


def _load_range(target: Endpoint, plan: ImportPlan, table: TablePlan, job: tuple[int, Span], scan: FileScan,
                progress: Progress) -> int:
    """One range in one transaction, committed with its row in _supamove.import_ranges once the file is
    known to be the export's."""
    number, span = job
    with connect(target) as conn, conn.transaction():
        session_mode(conn, target, plan.options)
        rows = copy_rows(conn, target, plan, table, progress, span)
        scan.check()
        conn.execute("INSERT INTO _supamove.import_ranges (schema_name, table_name, snapshot, sha256, range, "
                     "row_count) VALUES (%s, %s, %s, %s, %s, %s)", (*table.state_key, number, rows))
    log.debug("loaded %s range %d: %d rows", table.qualified, number, rows)
    return rows


def _put_back(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan, table: TablePlan, held: Held,
              rows: int, started: float) -> None:
    """Indexes built, constraints re-added (a foreign key checked, a NOT VALID one not), triggers on, sequences
    moved, state recorded."""
    try:
        with conn.transaction():
            session_mode(conn, target, plan.options)
            restore_held(conn, table, held)
            set_sequences(conn, plan, table)
            record_loaded(conn, plan, table, rows, time.monotonic() - started)
    except psycopg.errors.IntegrityError as exc:  # a duplicate key, a row without its parent
        detail = f": {exc.diag.message_detail}" if exc.diag.message_detail else ""
        fix = ("correct the rows in the source, export the table again, then run `supamove import --truncate-first` "
               "(its ranges stay loaded, without its indexes, until then)")
        raise target.error(f"{table.qualified}: {first_line(exc)}{detail}",
                           plan.parent_fix(fix) if isinstance(exc, psycopg.errors.ForeignKeyViolation)
                           else fix) from exc


def restore_held(conn: psycopg.Connection, table: TablePlan, held: Held) -> None:
    """Put back what a split load set aside, and forget its ranges (in the caller's transaction)."""
    build_indexes(conn, table, held.indexes)
    restore_constraints(conn, held.constraints)
    restore_triggers(conn, held.triggers)
    for name in ("import_split", "import_ranges"):
        conn.execute(sql.SQL("DELETE FROM {} WHERE schema_name = %s AND table_name = %s").format(
            sql.Identifier("_supamove", name)), table.key)
