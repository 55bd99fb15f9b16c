"""A table's rows into the target: one COPY of its file (or of a range of it), and the state row that
records a table as loaded."""

from __future__ import annotations

import hashlib
import itertools
import re

import psycopg
from psycopg import sql

from supamove.db import Endpoint, first_line
from supamove.errors import DataFileError, SupamoveError
from supamove.files import copy_fields, file_sha256, restore_or_export_again
from supamove.importer.convert import copy_blocks, prefetched
from supamove.importer.model import ImportPlan, Span, TablePlan
from supamove.importer.scan import mismatch
from supamove.progress import Progress

COPY_CONTEXT = re.compile(r"COPY [^\n]*?, line (\d+)(?:, column ([^:\n]+))?")


def copy_rows(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan, table: TablePlan, progress: Progress,
              span: Span | None = None) -> int:
    """COPY the file (or `span` of it) into the table; returns the rows sent. The whole file is checked
    against its SHA-256 inside the COPY; a range's file is checked beside its ranges (ranges.FileScan)."""
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
    # A table of no columns takes no list: each empty line is a row.
    listed = sql.SQL(" ({})").format(columns) if table.columns else sql.SQL("")
    query = sql.SQL("COPY {}{} FROM STDIN").format(table.ident, listed)
    digest = hashlib.sha256() if span is None else None
    rows = 0
    try:
        with conn.cursor() as cur, cur.copy(query) as copy, \
                prefetched(copy_blocks(table, plan, digest, span)) as blocks:
            for block, count in blocks:
                copy.write(block)
                rows += count
                progress.advance(table.qualified, count)
            if digest is not None and (damaged := mismatch(table, digest.hexdigest())) is not None:
                raise damaged  # inside the COPY: the server drops what it received
    # The server's CONTEXT quotes the row's value: the message names its line and column, the log stays free of data.
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError, DataFileError) as exc:
        # A file changed since the export explains a bad line or value best.
        changed = mismatch(table, file_sha256(table.path)) if table.path.exists() else None
        if changed is not None or isinstance(exc, DataFileError):
            raise changed or exc from None
        raise damaged_line(table, exc, span) or rejected(target, table, exc, span) from None
    except UNKNOWN_NAME as exc:  # a regrole, regtype or regclass value naming what the target lacks
        match = COPY_CONTEXT.search(exc.diag.context or "")
        if match is None or not match.group(2):
            raise
        raise rejected(target, table, exc, span) from None
    return rows


# A value of a reg* type names a role, type, table or function by name: one the target lacks is refused so.
UNKNOWN_NAME = (psycopg.errors.UndefinedObject, psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction)


def damaged_line(table: TablePlan, exc: psycopg.Error, span: Span | None) -> DataFileError | None:
    """A COPY text line of another width than the table's columns, named as the check before the load names it
    (a file loaded as it is reaches the target unread, which may refuse its first field before counting them)."""
    match = COPY_CONTEXT.search(exc.diag.context or "")
    if table.entry.format != "copy" or match is None:
        return None
    number = int(match.group(1)) + (span.lines_before() if span else 0)
    with open(table.path, "rb") as handle:
        line = next(itertools.islice(handle, number - 1, None), b"").rstrip(b"\n")
    try:
        copy_fields(line, len(table.file_columns), table.path, number, restore_or_export_again(*table.key))
    except DataFileError as error:
        return error
    return None


def rejected(target: Endpoint, table: TablePlan, exc: psycopg.Error, span: Span | None = None) -> SupamoveError:
    """Name the file line and column the target refused (COPY reports them, counted from the range's start)."""
    match = COPY_CONTEXT.search(exc.diag.context or "")
    where = ""
    if match:
        where = f" at line {int(match.group(1)) + (span.lines_before() if span else 0)} of {table.path.name}"
        if match.group(2):
            where += f", column {match.group(2)}"
    detail = f" ({exc.diag.message_detail})" if exc.diag.message_detail else ""
    written = (f"the ranges of {table.qualified} loaded so far stay, and the rerun loads the others" if span
               else f"nothing of {table.qualified} was written")
    message = exc.diag.message_primary or first_line(exc)
    fix = ("create on the target the partition this row belongs in (`supamove schema` makes the source's, each in "
           "its schema: select that with --schema)" if message.startswith("no partition of relation")
           else "correct the value or the target column type")
    return target.error(f"the target rejected a row of {table.qualified}{where}: {message}{detail}", f"{fix}; {written}")


def record_loaded(conn: psycopg.Connection, plan: ImportPlan, table: TablePlan, rows: int, seconds: float) -> None:
    """The table's row in _supamove.import_state: a rerun skips it (committed with its rows)."""
    conn.execute("INSERT INTO _supamove.import_state (schema_name, table_name, snapshot, sha256, row_count, "
                 "fk_mode, seconds) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                 (*table.state_key, rows, "checked after load" if plan.options.disable_fk else "enforced", seconds))
