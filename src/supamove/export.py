"""Step 2: stream every application table and the auth users to JSON Lines, from one snapshot."""

from __future__ import annotations

import errno
import functools
import hashlib
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import psycopg
from psycopg import pq, sql

from supamove import authstate, catalog, guard, userids
from supamove.catalog import AppSchema, QualifiedName, Table
from supamove.clock import now_iso
from supamove.db import Endpoint, connect, connection, first_line
from supamove.errors import ConfigError, DataFileError, SupamoveError
from supamove.files import (
    PARTIAL,
    PRIVATE,
    atomic_writer,
    disk_error,
    partial_path,
    remove_partials,
)
from supamove.locks import LockWatch
from supamove.log import get_logger
from supamove.metadata import Metadata, SequenceState, TableEntry
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress

log = get_logger("export")
AUTH_TABLES = ("users", "identities", "mfa_factors")  # mfa_factors: the second factors to carry over
COPY_BLOCK = 1 << 20
# CSV with control characters as quote and delimiter passes each JSON line through untouched:
# the JSON text escapes every control character, so none can appear in it. A batch of lines holds
# line breaks, so it comes quoted: one QUOTE before, one before its end of line.
COPY_OPTIONS = sql.SQL("(FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')")
QUOTE = 1
BATCH_BLOCKS = 8  # the rows of this many blocks (64 kB) make one COPY message
# A table holding more than this outside its rows (TOAST) goes a row at a time: one COPY message,
# like any value, is at most 1 GB, and a batch of big values could pass it. Such tables have few rows.
# TOAST holds values compressed: pglz shrinks a run of one character about 90 times, lz4 255 times, and
# JSON writes a quote as \" and a control character as \u0001 (2 and 6 times), so 8 MB of it came to
# 1.4 GB in one batch; at 512 kB no batch can reach 1 GB (512 kB x 255 x 6 = 780 MB).
BATCH_TOAST_BYTES = 512 << 10
SPLIT_LARGER_THAN_MB = 64  # a table bigger than this is read as several block ranges at once
PARTS_PER_JOB = 4  # at most this many ranges per job: the jobs stay busy to the end, the files stay few


@dataclass
class ExportOptions:
    schemas: list[str] = field(default_factory=lambda: ["public"])
    tables: list[str] = field(default_factory=list)
    exclude_tables: list[str] = field(default_factory=list)
    user_id_columns: list[str] = field(default_factory=list)
    jobs: int = 2
    force: bool = False
    not_user_id_columns: list[str] = field(default_factory=list)
    auth_only: bool = False  # the auth tables alone, from a fresh snapshot: users ahead of the freeze
    split_larger_than_mb: int = SPLIT_LARGER_THAN_MB  # 0: never split a table
    auth_first: bool = False  # the auth tables copied first: users can migrate while the rest export
    table_format: str = "copy"  # the application tables' files: "copy" (COPY text) or "jsonl" (JSON Lines)

    def __post_init__(self) -> None:
        picked = (self.tables or self.exclude_tables or self.user_id_columns or self.not_user_id_columns
                  or self.table_format != "copy")
        if self.auth_only and (picked or self.force):
            raise ConfigError("--auth-only exports the auth tables alone: it takes no other option",
                              fix="run `supamove export --auth-only` by itself")


@dataclass
class ExportWatch:
    """What a caller running later steps alongside the export is told, from the export's threads.

    `table_done` gets the key of each table whose file is complete and recorded in metadata.json (at
    once for those an earlier run finished); `values_checked` is called once the user-id value check
    is recorded there, so every entry's user-id columns are final. `planned` gets the plan before any row
    is read: an error it raises stops the export, which has then written nothing.
    """

    table_done: Callable[[tuple[str, str]], None] = lambda key: None
    values_checked: Callable[[], None] = lambda: None
    planned: Callable[[ExportPlan], None] = lambda plan: None


@dataclass
class ValueCheck:
    """What the user-id value check found: columns of user ids, mixed columns, JSON keys of user ids."""

    found: list[userids.ColumnCount] = field(default_factory=list)
    mixed: list[userids.ColumnCount] = field(default_factory=list)
    json_keys: list[userids.JsonKeyCount] = field(default_factory=list)
    seconds: float = 0.0

    def stop_error(self) -> ConfigError | None:
        """The export cannot go on while a column holds both user ids and other values."""
        if not self.mixed:
            return None
        first = self.mixed[0].qualified
        names = ", ".join(f"{m.qualified} ({m.user_ids:,} of {m.values:,} values are user ids)" for m in self.mixed)
        return ConfigError(
            f"{len(self.mixed)} column{'s hold' if len(self.mixed) > 1 else ' holds'} both Supabase user ids and "
            f"other values: {names}",
            fix=f"decide for each: --user-id-column {first} remaps its user ids (the import then needs "
                f"--unmapped-users keep for the other values), --not-user-id-column {first} keeps every value "
                "as it is")


@dataclass(frozen=True)
class Part:
    """Blocks `start` to `end` (excluded; None: to the end) of a table: one of the ranges read at once."""

    number: int  # from 1
    count: int
    start: int
    end: int | None

    def condition(self) -> sql.Composable:
        """The rows of these blocks: a TID range scan (PostgreSQL 14 and later) reads only them."""
        bounds = [sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({self.start},0)"))] if self.start else []
        if self.end is not None:
            bounds.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({self.end},0)")))
        return sql.SQL(" AND ").join(bounds)


@dataclass
class ExportPlan:
    groups: list[list[Table]]
    auth_tables: list[Table]
    skipped_schemas: list[str]
    server_version: str
    schemas: list[str] = field(default_factory=list)
    unexported: list[AppSchema] = field(default_factory=list)
    free_sequences: list[tuple[str, str]] = field(default_factory=list)
    values: ValueCheck | None = None
    parts: dict[tuple[str, str], list[Part]] = field(default_factory=dict)  # the tables read as block ranges

    @property
    def tables(self) -> list[Table]:
        return [t for group in self.groups for t in group]

    @property
    def cycles(self) -> list[list[Table]]:
        return catalog.cycles(self.groups)

    @property
    def sequence_names(self) -> list[tuple[str, str]]:
        """The exported tables' sequences, and every sequence of the exported schemas no column uses."""
        used = {(s.schema, s.name) for t in self.tables for s in t.sequences + t.default_sequences}
        return sorted(used | set(self.free_sequences))

    @property
    def notes(self) -> list[str]:
        """What the operator must read: columns found by value, JSON keys of user ids, schemas left out."""
        lines = []
        found = self.values.found if self.values else []
        lines += [f"{c.qualified}: user ids found by value, {c.user_ids:,} of {c.values:,} values are user ids "
                  "(remapped by the import)" for c in found]
        for c in self.values.mixed if self.values else []:
            lines.append(f"{c.qualified}: {c.user_ids:,} of {c.values:,} values are user ids, "
                         f"{c.values - c.user_ids:,} are not")
        lines += [_json_note(column, keys) for column, keys in _by_column(
            self.values.json_keys if self.values else []).items()]
        lines += [f"warning: schema {s.name} ({s.tables} table{'s' if s.tables != 1 else ''}"
                  f"{', with foreign keys to auth.users' if s.user_ids else ''}) is not exported: "
                  f"add --schema {s.name}, or --schema all for every application schema" for s in self.unexported]
        return lines

    def failure(self) -> ConfigError | None:
        """Why the export cannot go on (a column mixing user ids and other values), or None."""
        return self.values.stop_error() if self.values else None

    def to_dict(self) -> dict[str, Any]:
        """`export --dry-run --json`: the tables in load order, the auth tables, FK cycles and notes."""
        def table(t: Table) -> dict[str, Any]:
            return {"schema": t.schema, "table": t.name, "estimatedRows": t.estimated_rows,
                    "sizeBytes": t.size_bytes, "userIdColumns": list(t.user_id_columns),
                    "parts": len(self.parts.get(t.key, [])) or 1}

        return {"schemas": self.schemas, "tables": [table(t) for t in self.tables],
                "authTables": [table(t) for t in self.auth_tables],
                "cycles": [[t.qualified for t in group] for group in self.cycles],
                "skippedSchemas": self.skipped_schemas, "notes": self.notes,
                "stop": None if self.failure() is None else str(self.failure())}


def _by_column(keys: list[userids.JsonKeyCount]) -> dict[str, list[userids.JsonKeyCount]]:
    grouped: dict[str, list[userids.JsonKeyCount]] = {}
    for k in keys:
        grouped.setdefault(f"{k.schema}.{k.table}.{k.column}", []).append(k)
    return grouped


def _json_note(column: str, keys: list[userids.JsonKeyCount]) -> str:
    listed = ", ".join(f"{'elsewhere' if k.key == userids.ELSEWHERE else k.key} ({k.user_ids:,})" for k in keys)
    return (f"{column}: user ids found inside JSON under the keys {listed} "
            "(the import rewrites each string in it that is a user id)")


@dataclass
class TableExport(QualifiedName):
    schema: str
    name: str
    rows: int
    bytes: int
    seconds: float
    resumed: bool = False


@dataclass
class ExportResult:
    plan: ExportPlan
    tables: list[TableExport]
    seconds: float
    snapshot: str
    datadir: DataDir

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


def plan_export(conn: psycopg.Connection, source: Endpoint, options: ExportOptions) -> ExportPlan:
    """Which tables, in which order, and what is left out."""
    apps = catalog.application_schemas(conn)
    schemas = catalog.selected_schemas(options.schemas, apps)
    catalog.refuse_missing_schemas(conn, schemas, apps)
    every = catalog.read_relations(conn, schemas)
    auth = [t for t in catalog.read_relations(conn, ["auth"]) if t.name in AUTH_TABLES]
    check_patterns(every, auth, options)
    tables = catalog.find_user_id_columns(
        [t for t in every if catalog.selected(t, options.tables, options.exclude_tables)],
        options.user_id_columns, options.not_user_id_columns)
    catalog.refuse_unreadable(conn, source, [*tables, *auth])
    catalog.refuse_rls_filtering(conn, source, [*tables, *auth])
    present = [r[0] for r in conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) ORDER BY 1",
        (sorted(catalog.PLATFORM_SCHEMAS - {"information_schema", "pg_catalog", "pg_toast"}),))]
    version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    unexported = [s for s in apps if s.name not in schemas]
    plan = ExportPlan(catalog.load_order(tables), auth, present, version, schemas, unexported,
                      catalog.free_sequences(conn, schemas), parts=split_tables(conn, tables, options))
    catalog.refuse_unreadable_sequences(conn, source, plan.sequence_names)
    return plan


# Each plain table's size (heap and TOAST) and heap blocks. The blocks counted now, a moment after the
# snapshot, can only be more than the snapshot sees, and the last range is open-ended anyway.
SIZES_SQL = """
SELECT n.nspname, c.relname, pg_table_size(c.oid), pg_relation_size(c.oid) / current_setting('block_size')::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN unnest(%s::text[], %s::text[]) u(s, t) ON (u.s, u.t) = (n.nspname, c.relname)
WHERE c.relkind = 'r'
"""


def split_tables(conn: psycopg.Connection, tables: list[Table], options: ExportOptions) -> dict[tuple[str, str], list[Part]]:
    """The tables larger than --split-tables-larger-than, each as block ranges of about that size.

    Partitioned tables are not split (their partitions are read as one), nor is anything on a
    server older than PostgreSQL 14, which has no TID range scan: every range would read the whole table.
    """
    limit = options.split_larger_than_mb * 1024 * 1024
    if not limit or not tables or conn.info.server_version < 140000:
        return {}
    rows = conn.execute(SIZES_SQL, ([t.schema for t in tables], [t.name for t in tables])).fetchall()
    most = PARTS_PER_JOB * max(1, options.jobs)
    split = {(schema, name): block_ranges(int(blocks), min(math.ceil(size / limit), most))
             for schema, name, size, blocks in rows if size > limit}
    return {key: parts for key, parts in split.items() if len(parts) > 1}


def block_ranges(blocks: int, count: int) -> list[Part]:
    """`count` ranges of about as many blocks each, the first from block 0, the last to the end."""
    count = max(1, min(count, blocks))
    bounds = [blocks * i // count for i in range(count + 1)]
    return [Part(i + 1, count, bounds[i], None if i == count - 1 else bounds[i + 1]) for i in range(count)]


def check_patterns(tables: list[Table], auth: list[Table], options: ExportOptions) -> None:
    """A --tables pattern that matches no table, or an --exclude-tables that leaves none, is a typo: stop."""
    if not tables:  # nothing to export would end in an import of nothing: say so now
        raise ConfigError(f"the exported schemas ({', '.join(options.schemas)}) hold no table",
                          fix="check --schema (`--schema all` exports every application schema); to move the "
                              "users alone, run `supamove export --auth-only`")
    catalog.check_patterns(tables, auth, options.tables, options.exclude_tables, "export")


def preview_export(source: Endpoint, options: ExportOptions) -> ExportPlan:
    """The plan of `export --dry-run`, with the user-id value check done: reads the source only."""
    if options.auth_only:
        raise ConfigError("--auth-only has no dry run", fix="run `supamove export --auth-only` by itself")
    with connection(source) as conn:
        plan = plan_export(conn, source, options)
        apply_value_check(plan, check_values(conn, plan, options))
    return plan


def check_values(conn: psycopg.Connection, plan: ExportPlan, options: ExportOptions) -> ValueCheck:
    """Count the Supabase user ids in every column not known to hold them, inside PostgreSQL, one scan a table."""
    started = time.monotonic()
    excluded = {tuple(catalog.parse_column_ref(r, "--not-user-id-column")) for r in options.not_user_id_columns}
    check = ValueCheck()
    none: set[tuple[str, str, str]] = set()  # the uuid columns known to hold no user id
    keyed = 0
    users = next((t.estimated_rows for t in plan.auth_tables if t.name == "users"), 0)
    few = userids.tables_of_few_rows(conn, plan.tables, users)
    for table in plan.tables:  # referenced tables first: their keys tell which foreign keys need no scan
        skip = set(table.user_id_columns) | {c for s, t, c in excluded if (s, t) == table.key}
        keyed += _check_table(conn, table, skip, check, none, table.key in few)
    check.seconds = time.monotonic() - started
    log.debug("user-id value check: %d columns found, %d mixed, %d JSON keys, %d columns without user ids by "
              "their foreign key, in %.2fs", len(check.found), len(check.mixed), len(check.json_keys), keyed,
              check.seconds)
    return check


def _check_table(conn: psycopg.Connection, table: Table, skip: set[str], check: ValueCheck,
                 none: set[tuple[str, str, str]], few_rows: bool) -> int:
    """One table's part of the value check; its uuid columns holding no user id join `none`.

    Returns how many of its columns needed no scan: a validated foreign key ties them to a column of `none`.
    """
    keyed = {name: ref for name, ref in userids.keyed_without_user_ids(table, none).items() if name not in skip}
    for name, (schema, ref_table, ref) in keyed.items():
        log.debug("%s.%s: no user ids: every value is a key of %s.%s(%s), which holds none",
                  table.qualified, name, schema, ref_table, ref)
    columns = [c for c in table.columns if c.name not in skip | keyed.keys() and userids.family(c) is not None]
    uuids = {c.name for c in columns if userids.family(c) == "uuid"}
    counts = userids.count_table(conn, table, columns, few_rows)
    for count in counts.columns:
        if count.user_ids and count.user_ids == count.values:
            check.found.append(count)
        elif count.user_ids:
            check.mixed.append(count)
    none |= {(*table.key, c.column) for c in counts.columns if not c.user_ids and c.column in uuids}
    none |= {(*table.key, name) for name in keyed}
    check.json_keys += userids.json_user_id_keys(conn, table, counts.json_to_walk)
    return len(keyed)


def apply_value_check(plan: ExportPlan, check: ValueCheck) -> None:
    """The columns found by value become user-id columns of the plan's tables."""
    plan.values = check
    found = {(c.schema, c.table): [x.column for x in check.found if (x.schema, x.table) == (c.schema, c.table)]
             for c in check.found}
    plan.groups = [[catalog.mark_user_id_columns(t, dict.fromkeys(found.get(t.key, []), "values"))
                    for t in group] for group in plan.groups]


# Types whose text form never holds a quote, a backslash or a control character: written between two
# quotes as they are, where any other text goes through to_json's escaping.
PLAIN_TEXT_TYPES = frozenset({
    "uuid", "numeric", "real", "double precision", "date", "timestamp without time zone",
    "timestamp with time zone", "time without time zone", "time with time zone", "interval", "inet", "cidr",
    "macaddr", "macaddr8", "oid"})
TYPMOD = catalog.TYPMOD
CONCAT_GROUP = 32  # terms per parenthesised group: a wide table's expression stays shallow for the parser


def row_json(table: Table) -> sql.Composable:
    """One row as a JSON object, each type in its canonical text form: concatenated from the columns'
    texts, byte for byte what `row_to_json` writes for them, in half its time (the export's largest
    cost on the server).

    A column the catalog calls NOT NULL goes without its NULL test and its quotes join the keys' text:
    fewer concatenations, a tenth less server time. Should such a column hold a NULL all the same (its
    constraint dropped since the catalog was read), that form is NULL and the full one is used."""
    full = _concatenated(_terms(table, trust_not_null=False))
    if all(col.nullable for col in table.columns):
        return full
    return sql.SQL("coalesce({}, {})").format(_concatenated(_terms(table, trust_not_null=True)), full)


def _terms(table: Table, trust_not_null: bool) -> list[str | sql.Composable]:
    """The row's text in order: literal text as str (adjacent pieces joined), values as SQL."""
    terms: list[str | sql.Composable] = []

    def add(term: str | sql.Composable) -> None:
        if isinstance(term, str) and terms and isinstance(terms[-1], str):
            terms[-1] += term
        else:
            terms.append(term)

    for i, col in enumerate(table.columns):
        add(("{" if i == 0 else ",") + orjson.dumps(col.name).decode() + ":")
        if trust_not_null and not col.nullable:
            for term in _json_value_parts(col):
                add(term)
        else:
            add(sql.SQL("coalesce({}, 'null')").format(_json_value(col)))
    add("}" if terms else "{}")  # a table of no columns: {} for each row
    return terms


def _concatenated(terms: list[str | sql.Composable]) -> sql.Composable:
    parts = [sql.Literal(t) if isinstance(t, str) else t for t in terms]
    groups = [sql.SQL("({})").format(sql.SQL(" || ").join(parts[i:i + CONCAT_GROUP]))
              for i in range(0, len(parts), CONCAT_GROUP)]
    return sql.SQL(" || ").join(groups)


def _json_value(col: catalog.Column) -> sql.Composable:
    """A column's value as JSON text, NULL for SQL NULL (see docs/files.md)."""
    ident = sql.Identifier(col.name)
    if col.encoding != "text":  # an integer or a boolean: its text is its JSON
        return sql.SQL("{}::text").format(ident)
    if _plain_text(col):
        return sql.SQL("'\"' || {}::text || '\"'").format(ident)
    if col.padded:  # ::text trims the trailing spaces a character's output keeps
        return sql.SQL("to_json({})::text").format(ident)
    return sql.SQL("to_json({}::text)::text").format(ident)


def _json_value_parts(col: catalog.Column) -> list[str | sql.Composable]:
    """A value known not to be NULL as JSON text: _json_value's pieces, a string's quotes as literal text."""
    if col.encoding == "text" and _plain_text(col):
        return ['"', sql.SQL("{}::text").format(sql.Identifier(col.name)), '"']
    return [_json_value(col)]


def _plain_text(col: catalog.Column) -> bool:
    """A type whose text needs no JSON escaping: it goes between quotes as it is."""
    return TYPMOD.sub("", col.base_type or col.type) in PLAIN_TEXT_TYPES


def _relation(table: Table) -> sql.Composable:
    only = sql.SQL("") if table.partitioned else sql.SQL("ONLY ")
    return sql.SQL("{}{}").format(only, sql.Identifier(table.schema, table.name))


def select_rows(table: Table, part: Part | None = None) -> sql.Composed:
    """A JSON line per row (of one block range, given `part`)."""
    where = sql.SQL(" WHERE {}").format(part.condition()) if part else sql.SQL("")
    return sql.SQL("SELECT {} FROM {}{}").format(row_json(table), _relation(table), where)


def select_batches(conn: psycopg.Connection, table: Table, part: Part | None = None) -> sql.Composed | None:
    """The same lines, those of each BATCH_BLOCKS blocks joined into one: COPY then sends a message per
    batch, not per row, which spares Python most of its work. None where the server cannot read a
    range of blocks alone (before PostgreSQL 14, or a partitioned table), or where values kept apart
    from the rows could make a batch too big."""
    if table.partitioned or conn.info.server_version < 140000:
        return None
    row = conn.execute(sql.SQL(
        "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int, "
        "coalesce(pg_relation_size(nullif(c.reltoastrelid, 0)), 0) FROM pg_class c WHERE c.oid = {}::regclass"
    ).format(sql.Literal(sql.Identifier(table.schema, table.name).as_string(conn)))).fetchone()
    blocks, toasted = (int(row[0]), int(row[1])) if row else (0, 0)
    if toasted > BATCH_TOAST_BYTES:  # values kept apart from the rows: a batch of them could pass 1 GB
        return None
    start, end = (part.start, part.end) if part else (0, None)
    stop = blocks if end is None else end  # to the size now: rows past it (none, in this snapshot) come after
    # Aliases no table holds: inside the batch, a column named like the block number would be taken for it.
    query = sql.SQL(
        "SELECT _supamove_g.lines FROM generate_series({start}::bigint, {stop}::bigint - 1, {n}) "
        "AS _supamove_b(first), LATERAL (SELECT string_agg({row}, E'\\n') AS lines FROM {t} AS _supamove_t "
        "WHERE ctid >= format('(%s,0)', _supamove_b.first)::tid "
        "AND ctid < format('(%s,0)', least(_supamove_b.first + {n}, {stop}))::tid) AS _supamove_g "
        "WHERE _supamove_g.lines IS NOT NULL"
    ).format(start=sql.Literal(start), stop=sql.Literal(stop), n=sql.Literal(BATCH_BLOCKS), row=row_json(table),
             t=_relation(table))
    if end is not None:
        return query
    return sql.SQL("{} UNION ALL SELECT {} FROM {} WHERE ctid >= {}::tid").format(
        query, row_json(table), _relation(table), sql.Literal(f"({stop},0)"))


def select_text(table: Table, part: Part | None = None) -> sql.Composed:
    """The rows as they are, for COPY's text format: each column by its type's own output function."""
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
    where = sql.SQL(" WHERE {}").format(part.condition()) if part else sql.SQL("")
    return sql.SQL("SELECT {} FROM {}{}").format(columns, _relation(table), where)


def copy_table(conn: psycopg.Connection, table: Table, out: IO[bytes], progress: Progress,
               part: Part | None = None, fmt: str = "copy") -> tuple[int, int, Any]:
    """Stream one table (or one range of it) into `out` in its file's format ("copy" or "jsonl");
    returns rows, bytes and the SHA-256 of them."""
    if fmt == "copy":
        query = sql.SQL("COPY ({}) TO STDOUT").format(select_text(table, part))
    else:
        select = select_batches(conn, table, part) or select_rows(table, part)
        query = sql.SQL("COPY ({}) TO STDOUT {}").format(select, COPY_OPTIONS)
    digest = hashlib.sha256()
    rows = size = 0
    block = bytearray()

    def flush() -> None:
        nonlocal rows, size
        out.write(block)
        digest.update(block)
        size += len(block)
        lines = block.count(b"\n")
        rows += lines
        progress.advance(table.qualified, lines)
        block.clear()

    # A regclass, regtype or regproc value names its object with the schema whatever the source's search_path
    # (Supabase's holds `extensions`), as pg_dump writes it: the target's search_path may find another or none.
    conn.execute("SET LOCAL search_path = pg_catalog")
    batched = fmt != "copy"  # JSON lines come a batch to a message (select_batches); COPY text a row to one
    # COPY yields one message per row (or batch): work per block of them.
    for chunk in copy_out(conn, query):
        if batched and chunk[0] == QUOTE:  # a batch of several lines: CSV quoted it for its line breaks
            block += chunk[1:-2]
            block += b"\n"
        else:
            block += chunk
        if len(block) >= COPY_BLOCK:
            flush()
    flush()
    return rows, size, digest


def copy_out(conn: psycopg.Connection, query: sql.Composable) -> Iterator[memoryview]:
    """The messages of a COPY TO STDOUT, read from libpq directly: COPY text is a message per row, and
    psycopg's Copy object spends 1.0 to 1.4 s of processor time on a million of them, this 0.5 s."""
    pgconn = conn.pgconn
    pgconn.send_query(query.as_bytes(conn))
    result = pgconn.get_result()
    if result is None or result.status != pq.ExecStatus.COPY_OUT:
        _raise_result(conn, result)
    while True:
        size, data = pgconn.get_copy_data(0)  # waits for the next row, the GIL released
        if size < 0:  # -1: the end; -2: an error, which the result holds
            break
        yield data
    while (result := pgconn.get_result()) is not None:
        if result.status != pq.ExecStatus.COMMAND_OK:
            _raise_result(conn, result)


def _raise_result(conn: psycopg.Connection, result: pq.abc.PGresult | None) -> None:
    """A failed COPY as the psycopg error it is (InsufficientPrivilege, ProgramLimitExceeded, ...)."""
    while conn.pgconn.get_result() is not None:  # the connection is ready for the next statement
        pass
    if result is None:
        raise psycopg.OperationalError(conn.pgconn.get_error_message())
    raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)


@contextmanager
def snapshot_reader(source: Endpoint, snapshot: str | None) -> Iterator[psycopg.Connection]:
    """A read-only repeatable-read transaction, on the exported snapshot when given one."""
    conn = connect(source)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if snapshot:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        yield conn
    finally:
        conn.close()


def run_export(source: Endpoint, datadir: DataDir, options: ExportOptions,
               progress: Progress | None = None, watch: ExportWatch | None = None) -> ExportResult:
    """Export the planned tables and auth users; tables finished by an interrupted run are kept.

    A finished export is exported again only with --force; tables it holds that this run does not
    select keep their files and entries. An export read from another database is not built on (see
    _of_this_source). With `auth_only`, only the auth tables, at any time.
    `watch` is told of each finished table and of the value check (see ExportWatch).
    """
    if options.auth_only:
        return run_auth_export(source, datadir, progress)
    progress, watch = progress or NullProgress(), watch or ExportWatch()
    check_options(options)
    previous = _previous_export(datadir.check_exists(), options.force)
    if previous is not None and not options.force:
        previous.refuse_rerun()
    started = time.monotonic()
    with snapshot_reader(source, None) as main, LockWatch(source, "export"):
        snapshot = str(main.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        identity = guard.server_identity(main).recorded()
        kept = _of_this_source(previous, identity, source, options)
        plan = plan_export(main, source, options)
        watch.planned(plan)
        datadir.ensure()
        meta = prepare_metadata(datadir, plan, options, source, identity, snapshot, kept)
        if xids := _snapshot_xids(main):
            meta.snapshot_xids[snapshot] = xids
        if previous is not None:  # files no entry names now: another source's export, or written again in .copy
            _remove_files(datadir, previous.entries, meta)
        tables = _export_tables(source, snapshot, plan, options, meta, progress, watch)
        _fingerprint_auth(main, meta, snapshot)
    meta.finish(now_iso())
    return ExportResult(plan, tables, time.monotonic() - started, snapshot, datadir)


def _previous_export(datadir: DataDir, force: bool) -> Metadata | None:
    """The export an earlier run left. One this supamove cannot read (written by another version, damaged) is
    not written over without --force: it was, silently, finished export and all."""
    if not datadir.metadata.exists():
        return None
    try:
        return Metadata.load(datadir, require_complete=False)
    except SupamoveError as exc:
        if not force:
            raise DataFileError(f"{exc.message}: the export there is not written over",
                                fix="run `supamove export --force` to export everything again over it, or set "
                                    "--data-dir to another directory") from None
        log.warning("%s: exporting everything again over it (--force)", exc.message)
        return None


def _of_this_source(previous: Metadata | None, identity: dict[str, Any], source: Endpoint,
                    options: ExportOptions) -> Metadata | None:
    """The earlier run's metadata this run builds on, unless it was read from another database.

    Resuming that export, or exporting some tables into it, would mix two databases' rows in one
    export: refused. `--force` alone exports every table again, from this source: nothing is kept.
    """
    if previous is None or not previous.from_other_source(identity):
        return previous
    if not options.force or options.tables:
        raise previous.other_source_error(identity, source.redacted)
    log.warning("the export in %s was read from %s: exporting everything again from this source, its files "
                "are deleted", previous.datadir.root, previous.source.get("url"))
    return None


def check_kept_export(source: Endpoint, meta: Metadata, options: ExportOptions) -> None:
    """A finished export that `migrate` keeps must have been read from this source: its tables and this
    source's users would otherwise be loaded together (the refusal `export` gives a rerun). It must hold
    what this run's options select, too."""
    with connection(source) as conn:
        identity = guard.server_identity(conn).recorded()
        if meta.from_other_source(identity):
            raise meta.other_source_error(identity, source.redacted)
        plan = plan_export(conn, source, options)
    check_kept_selection(meta, plan, options)


def check_kept_selection(meta: Metadata, plan: ExportPlan, options: ExportOptions) -> None:
    """The kept export must hold every table the plan selects, and remap the columns as the options say:
    an export made with other options would be loaded as it is, and the run end as if nothing were missing."""
    held = {e.key: set(e.table.user_id_columns) for e in meta.tables}
    problems = []
    missing = [t.qualified for t in plan.tables if t.key not in held]
    if missing:
        problems.append(f"it lacks {len(missing)} of the tables this run selects: {catalog.listed(missing)}")
    for option, refs, remapped in (("--user-id-column", options.user_id_columns, False),
                                   ("--not-user-id-column", options.not_user_id_columns, True)):
        wrong = [r for r in refs if _remapped_in(held, catalog.parse_column_ref(r, option)) is remapped]
        verb = "remaps" if remapped else "does not remap"
        if wrong:
            problems.append(f"it {verb} {catalog.listed(wrong)} ({option})")
    if problems:
        raise ConfigError(f"the finished export in {meta.datadir.root} was made with other options than this "
                          f"run's: {'; '.join(problems)}",
                          fix="give `supamove migrate` the options the export was made with, or run `supamove export "
                              "--force` with this run's options to export again")


def _remapped_in(held: dict[tuple[str, str], set[str]], ref: tuple[str, str, str]) -> bool | None:
    """Whether the export remaps the column; None when it holds no such table."""
    columns = held.get(ref[:2])
    return None if columns is None else ref[2] in columns


def _remove_files(datadir: DataDir, entries: list[TableEntry], meta: Metadata) -> None:
    """Delete the files of `entries` that `meta` (saved) no longer names: no export holds them any more."""
    named = {e.file for e in meta.entries}
    for entry in entries:
        if entry.file not in named:
            datadir.export_file(entry.file).unlink(missing_ok=True)


def check_options(options: ExportOptions) -> None:
    """A malformed option is named first, before what the data directory holds."""
    catalog.selected_schemas(options.schemas, [])
    for option, refs in (("--user-id-column", options.user_id_columns),
                         ("--not-user-id-column", options.not_user_id_columns)):
        for ref in refs:
            catalog.parse_column_ref(ref, option)


def _export_tables(source: Endpoint, snapshot: str, plan: ExportPlan, options: ExportOptions, meta: Metadata,
                   progress: Progress, watch: ExportWatch) -> list[TableExport]:
    """Copy the tables not finished yet, biggest first, while the value check runs; all of them in plan order."""
    planned = plan.tables + plan.auth_tables
    work = [t for t in planned if not meta.is_done(t.key)]
    done = [_resumed(meta.entry(*t.key)) for t in planned if t not in work]
    for item in done:
        log.info("skipping %s: exported by a previous run (use --force to export it again)", item.qualified)
        watch.table_done(item.key)
    splits = {t.key: SplitTable(t, plan.parts[t.key], meta.datadir.export_file(meta.entry(*t.key).file))
              for t in work if t.key in plan.parts}
    try:
        # The value check reads on a connection of its own, in the same snapshot, while the tables copy.
        with ThreadPoolExecutor(max_workers=max(1, options.jobs) + 1) as pool:
            check = pool.submit(_check_in_snapshot, source, snapshot, plan, options)
            copies = [pool.submit(task) for task in _copy_tasks(source, snapshot, work, splits, meta, progress,
                                                                options.auth_first)]
            for copy in copies:
                copy.add_done_callback(functools.partial(_tell_finished, watch))
            _record_value_check(meta, plan, check, copies)
            watch.values_checked()
            results = [r for r in (f.result() for f in copies) if r is not None]
    except BaseException:
        for split in splits.values():  # every copy has ended: what they left of an unfinished table goes
            split.discard()
        raise
    ordered = {t.key: i for i, t in enumerate(planned)}
    return sorted(done + results, key=lambda r: ordered[r.key])


def _tell_finished(watch: ExportWatch, copy: Future[TableExport | None]) -> None:
    """A copy that finished its table (not only a range of it) tells the watch, from the copy's thread."""
    if not copy.cancelled() and copy.exception() is None and (done := copy.result()) is not None:
        watch.table_done(done.key)


def run_auth_export(source: Endpoint, datadir: DataDir, progress: Progress | None = None) -> ExportResult:
    """`export --auth-only`: the auth tables again from a fresh snapshot; every other entry kept as it is."""
    progress = progress or NullProgress()
    datadir.ensure()
    started = time.monotonic()
    with snapshot_reader(source, None) as main, LockWatch(source, "export"):
        snapshot = str(main.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        auth = [t for t in catalog.read_relations(main, ["auth"]) if t.name in AUTH_TABLES]
        catalog.refuse_rls_filtering(main, source, auth)
        version = str(main.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        identity = guard.server_identity(main).recorded()
        meta = _auth_metadata(datadir, auth, source, _source_record(version, source, identity))
        if xids := _snapshot_xids(main):
            meta.snapshot_xids[snapshot] = xids
        results = [_export_one(source, snapshot, t, meta, progress) for t in auth]
        _fingerprint_auth(main, meta, snapshot)
    if meta.finished_at is not None:  # a finished export now holds users of a later snapshot: say so
        meta.finish(meta.finished_at)
    plan = ExportPlan([], auth, [], version)
    return ExportResult(plan, results, time.monotonic() - started, snapshot, datadir)


def _snapshot_xids(main: psycopg.Connection) -> str | None:
    """The transactions the export's snapshot sees (its transaction's: repeatable read): a row whose xmin it does
    not see was inserted or updated after the export, which verify counts. None before PostgreSQL 13 (no
    pg_snapshot type): verify then counts none."""
    if main.info.server_version < 130000:
        return None
    return str(main.execute("SELECT pg_current_snapshot()::text").fetchone()[0])  # type: ignore[index]


def _fingerprint_auth(main: psycopg.Connection, meta: Metadata, snapshot: str) -> None:
    """Each auth table this run exported, fingerprinted in its snapshot: verify compares the source's now."""
    meta.record_fingerprints({
        e.key: authstate.fingerprint(main, e.schema, e.name, authstate.fingerprint_columns(e.table))
        for e in meta.auth if e.complete and e.snapshot == snapshot})


def _source_record(version: str, source: Endpoint, identity: dict[str, Any]) -> dict[str, Any]:
    """metadata.json's `source`: the server's version, the URL (password hidden) and what tells the database
    from another (a rerun refuses to mix another database's rows into the export)."""
    return {"serverVersion": version, "url": source.redacted, **identity}


def _auth_metadata(datadir: DataDir, auth: list[Table], source: Endpoint, record: dict[str, Any]) -> Metadata:
    """metadata.json with new (unfinished) auth entries; the application tables' entries left untouched.
    Those of another source are not: the users and the tables of one export come from one database."""
    if datadir.metadata.exists():
        meta = Metadata.load(datadir, require_complete=False)
        if meta.from_other_source(record):
            raise meta.other_source_error(record, source.redacted)
    else:  # users ahead of the export: no application table yet, and import refuses an unfinished export
        meta = Metadata(datadir, source=record, started_at=now_iso(), unexported_schemas=[])
    meta.auth = [TableEntry.new(t, datadir) for t in auth]
    remove_partials(datadir.auth)  # first: a killed run's half-written files may have filled the disk
    meta.save()
    return meta


def _check_in_snapshot(source: Endpoint, snapshot: str, plan: ExportPlan, options: ExportOptions) -> ValueCheck:
    try:
        with snapshot_reader(source, snapshot) as conn:
            return check_values(conn, plan, options)
    except psycopg.Error as exc:
        raise source.error(f"the user-id value check failed: {first_line(exc)}",
                           "check the source is up and SUPABASE_DB_URL's user can read every exported table, "
                           "then run `supamove export` again: finished tables are kept") from exc


def _record_value_check(meta: Metadata, plan: ExportPlan, check: Future[ValueCheck],
                        copies: list[Future[TableExport | None]]) -> None:
    """Columns found by value join the user-id columns in metadata.json; a mixed column stops the export."""
    if check.exception() is not None:
        _raise_copy_failure(copies)
    apply_value_check(plan, check.result())
    assert plan.values is not None
    for table in plan.tables:
        meta.set_user_id_columns(table)
    try:
        meta.record_value_check(value_check_to_dict(plan.values), {t.key for t in plan.tables})
    except SupamoveError:  # a disk the copies filled: the table whose file filled it is the one to name
        _raise_copy_failure(copies)
        raise
    failure = plan.values.stop_error()
    if failure:
        for copy in copies:
            copy.cancel()  # tables already copying finish and are kept for the next run
        raise failure


def _raise_copy_failure(copies: list[Future[TableExport | None]]) -> None:
    """The first copy's failure, once every copy has ended: a copy's failure names its table."""
    for copy in copies:
        copy.result()


def value_check_to_dict(check: ValueCheck) -> dict[str, Any]:
    columns = [{"schema": c.schema, "table": c.table, "column": c.column, "type": c.type, "values": c.values,
                "userIds": c.user_ids, "decision": "user ids" if c in check.found else "undecided"}
               for c in check.found + check.mixed]
    keys = [{"schema": k.schema, "table": k.table, "column": k.column, "key": k.key, "userIds": k.user_ids}
            for k in check.json_keys]
    return {"columns": columns, "jsonKeys": keys, "seconds": round(check.seconds, 3)}


def prepare_metadata(datadir: DataDir, plan: ExportPlan, options: ExportOptions, source: Endpoint,
                     identity: dict[str, Any], snapshot: str, previous: Metadata | None = None) -> Metadata:
    """This run's metadata.json, with what an earlier run finished and this one need not write carried over."""
    meta = Metadata(
        datadir, source=_source_record(plan.server_version, source, identity), snapshot=snapshot,
        started_at=now_iso(), schemas=list(plan.schemas), skipped_schemas=plan.skipped_schemas,
        unexported_schemas=[{"name": a.name, "tables": a.tables, "userIds": a.user_ids} for a in plan.unexported],
        options={"tables": options.tables, "excludeTables": options.exclude_tables,
                 "userIdColumns": options.user_id_columns, "notUserIdColumns": options.not_user_id_columns},
        load_order=[[t.qualified for t in group] for group in plan.groups],
        tables=[TableEntry.new(t, datadir, options.table_format) for t in plan.tables],
        auth=[TableEntry.new(t, datadir) for t in plan.auth_tables])
    planned = {t.key for t in plan.tables}
    with connect(source, autocommit=True) as conn:  # what the import continues and refreshes
        meta.sequences = read_sequences(conn, plan.sequence_names)
        meta.materialized_views = read_materialized_views(conn, list(plan.schemas))
        gone = _gone_from_source(conn, previous, planned)
    meta.carry_over(previous, _forced(plan, options, previous), options.exclude_tables, {e.key for e in gone})
    for entry in meta.tables:
        if entry.key not in planned:
            log.info("keeping %s: not selected, exported by an earlier run (snapshot %s)", entry.qualified,
                     entry.snapshot)
    remove_partials(datadir.tables)  # first: a killed run's half-written files may have filled the disk
    remove_partials(datadir.auth)
    meta.save()
    _remove_files(datadir, gone, meta)
    return meta


def _gone_from_source(conn: psycopg.Connection, previous: Metadata | None,
                      planned: set[tuple[str, str]]) -> list[TableEntry]:
    """The tables of the earlier export this run does not read that the source no longer has (dropped or
    renamed since): they leave the export, or the import would load their old rows and verify fail them."""
    earlier = [e for e in previous.tables if e.key not in planned] if previous else []
    missing = set(catalog.missing_tables(conn, [e.key for e in earlier]))
    gone = [e for e in earlier if e.key in missing]
    for entry in gone:
        log.warning("%s no longer exists in the source: its file and its entry leave the export", entry.qualified)
    return gone


def _forced(plan: ExportPlan, options: ExportOptions, previous: Metadata | None) -> set[tuple[str, str]]:
    """The tables exported again: those --force selects (the auth tables unless --tables leaves them out).

    Auth files that `export --auth-only` wrote (their snapshot is not the export's) are read again too:
    the users and the application tables of one export come from one snapshot. So are they all when one
    was not finished, or has no fingerprint (a run killed before its end records none): the auth tables
    are read in one snapshot, which their fingerprint, compared by verify, is taken in.
    """
    auth_before = previous.auth if previous else []
    stale = {e.key for e in auth_before if e.snapshot != previous.snapshot} if previous else set()
    if stale or any(not e.complete or e.fingerprint is None for e in auth_before):
        stale = {e.key for e in auth_before}
    if not options.force:
        return stale
    auth = [t for t in plan.auth_tables if catalog.selected(t, options.tables, options.exclude_tables)]
    return {t.key for t in plan.tables + auth} | stale


def _resumed(entry: TableEntry) -> TableExport:
    return TableExport(entry.schema, entry.name, entry.row_count or 0, entry.bytes or 0, 0.0, resumed=True)


def _copy_tasks(source: Endpoint, snapshot: str, work: list[Table], splits: dict[tuple[str, str], SplitTable],
                meta: Metadata, progress: Progress, auth_first: bool = False) -> list[Callable[[], TableExport | None]]:
    """One copy per table, or per block range of a split table; the biggest first (`auth_first`: the auth tables)."""
    tasks: list[tuple[float, Callable[[], TableExport | None]]] = []
    for table in work:
        size = math.inf if auth_first and table.schema == "auth" else table.size_bytes
        split = splits.get(table.key)
        if split is None:
            tasks.append((size, functools.partial(_export_one, source, snapshot, table, meta, progress)))
            continue
        tasks += [(size / len(split.parts), functools.partial(_export_part, source, snapshot, split, part, meta,
                                                              progress)) for part in split.parts]
    tasks.sort(key=lambda task: -task[0])  # stable: a table's ranges stay in block order
    return [task for _, task in tasks]


def _export_one(source: Endpoint, snapshot: str, table: Table, meta: Metadata, progress: Progress) -> TableExport:
    started = time.monotonic()
    progress.start(table.qualified, table.estimated_rows or None)
    entry = meta.entry(*table.key)
    path = meta.datadir.export_file(entry.file)
    with _read_errors(source, table), snapshot_reader(source, snapshot) as conn, atomic_writer(path) as out:
        rows, size, digest = copy_table(conn, table, out, progress, fmt=entry.format)
    return _finished(table, meta, snapshot, progress, (rows, size, digest.hexdigest()), started)


def _export_part(source: Endpoint, snapshot: str, split: SplitTable, part: Part, meta: Metadata,
                 progress: Progress) -> TableExport | None:
    """One block range of a split table; the last range to finish joins the files and returns the table."""
    split.begin(progress)
    path = split.part_path(part)
    with _read_errors(source, split.table), snapshot_reader(source, snapshot) as conn, \
            _range_file(path, split.path) as out:
        copied = copy_table(conn, split.table, out, progress, part, meta.entry(*split.table.key).format)
    log.debug("exported %s range %d of %d: %d rows", split.table.qualified, part.number, part.count, copied[0])
    if not split.done(part, copied):
        return None
    return _finished(split.table, meta, snapshot, progress, split.join(), split.started)


@contextmanager
def _read_errors(source: Endpoint, table: Table) -> Iterator[None]:
    """A table the source refuses, or a lost connection, as an error that names the table and the fix."""
    try:
        yield
    except psycopg.errors.InsufficientPrivilege:  # the message says it all: the cause would repeat it
        quoted = sql.Identifier(table.schema, table.name).as_string(None)
        raise source.error(f"permission denied reading {table.qualified}",
                           f"let the user in SUPABASE_DB_URL read it (GRANT SELECT ON {quoted} TO that user), "
                           "or use the postgres user") from None
    except psycopg.errors.ProgramLimitExceeded as exc:  # a value too big for its text: every rerun would stop here
        quoted = sql.Identifier(table.schema, table.name).as_string(None)
        raise source.error(f"{table.qualified} holds a row too big to export: its line passes PostgreSQL's 1 GB "
                           f"limit ({first_line(exc)}: {exc.diag.message_detail or ''})",
                           f"leave it out with --exclude-tables {table.qualified} and copy it with "
                           f"pg_dump --data-only --table '{quoted}'") from None
    except psycopg.OperationalError as exc:
        raise source.error(f"lost the source connection while exporting {table.qualified}: {first_line(exc)}",
                           "check the source is up, then run `supamove export` again: finished tables are kept") from exc


def _finished(table: Table, meta: Metadata, snapshot: str, progress: Progress, copied: tuple[int, int, str],
              started: float) -> TableExport:
    """The table's file is whole: metadata.json says so."""
    rows, size, sha = copied
    progress.finish(table.qualified)
    meta.finish_table(table.key, rows, size, sha, snapshot, now_iso())
    seconds = time.monotonic() - started
    log.debug("exported %s: %d rows, %d bytes in %.1fs", table.qualified, rows, size, seconds)
    return TableExport(table.schema, table.name, rows, size, seconds)


class SplitTable:
    """A table read as block ranges at once, each into a file of its own, joined into the table's file in
    block order as they come: a range is appended as soon as those before it are (on a thread of its
    own, while the other ranges still export), so the last range to finish leaves little to join."""

    def __init__(self, table: Table, parts: list[Part], path: Path) -> None:
        self.table, self.parts, self.path = table, parts, path
        self.started = 0.0
        self._copied: dict[int, tuple[int, int, Any]] = {}  # rows, bytes and digest of each range written
        self._lock = threading.Lock()
        self._partial = partial_path(path)
        self._joined = 0  # ranges in the table's file so far, from the first
        self._digest: Any = None  # of the table's file so far: the first range's, going on
        self._joiner = ThreadPoolExecutor(1, thread_name_prefix="export-join")
        self._appends: list[Future[None]] = []

    def part_path(self, part: Part) -> Path:
        """`public.readings.copy.2.partial`: a killed run's ranges go with its other half-written files."""
        return self.path.with_name(f"{self.path.name}.{part.number}{PARTIAL}")

    def begin(self, progress: Progress) -> None:
        """The first range to start starts the table's progress and clock."""
        with self._lock:
            if not self.started:
                self.started = time.monotonic()
                progress.start(self.table.qualified, self.table.estimated_rows or None)

    def done(self, part: Part, copied: tuple[int, int, Any]) -> bool:
        """Record one range and join what can be joined; True for the last one."""
        with self._lock:
            self._copied[part.number] = copied
            self._appends.append(self._joiner.submit(self._append_ready))
            return len(self._copied) == len(self.parts)

    def join(self) -> tuple[int, int, str]:
        """Once every range is in the table's file (what an unsplit export writes): rows, bytes, SHA-256."""
        try:
            for append in self._appends:
                append.result()
            os.replace(self._partial, self.path)
        except OSError as exc:
            raise disk_error(self.path, exc) from exc
        finally:
            self._joiner.shutdown()
        copied = self._copied.values()
        return sum(c[0] for c in copied), sum(c[1] for c in copied), self._digest.hexdigest()

    def discard(self) -> None:
        """The export failed: the table's half-written files go, so that a full disk gets its space back
        (the next run reads every range again). An append under way ends first: it writes to them."""
        self._joiner.shutdown(cancel_futures=True)
        for part in self.parts:
            self.part_path(part).unlink(missing_ok=True)
        self._partial.unlink(missing_ok=True)

    def _append_ready(self) -> None:
        """Append every range whose turn has come, synced (on the joiner's one thread: in block order)."""
        while self._joined < len(self.parts) and (part := self.parts[self._joined]).number in self._copied:
            if not self._joined:  # the first range's file becomes the table's: its hash goes on
                self._digest = self._copied[part.number][2]
                os.replace(self.part_path(part), self._partial)
            with open(self._partial, "r+b") as out:  # not "ab": the kernel copies into no file opened to append
                if self._joined:
                    _append(self.part_path(part), out, self._digest)
                out.flush()
                os.fsync(out.fileno())
            self._joined += 1


def _append(path: Path, out: IO[bytes], digest: Any) -> None:
    """The range's bytes hashed, then copied onto the table's file by the kernel: at 1M rows, 0.2 to 0.35 s
    after the last range instead of 0.5 to 0.7 s through Python's buffers (page-cache writes slowed down
    by the export's own unwritten pages)."""
    with open(path, "rb") as source:
        while block := source.read(COPY_BLOCK * 8):
            digest.update(block)
        size, end = source.tell(), out.seek(0, os.SEEK_END)
        try:
            _kernel_copy(source, out, size, end)
        except OSError:  # no copy_file_range on this system or for these files: through Python, from the start
            out.truncate(end)
            out.seek(end)
            source.seek(0)
            shutil.copyfileobj(source, out, COPY_BLOCK * 8)
    path.unlink()


def _kernel_copy(source: IO[bytes], out: IO[bytes], size: int, end: int) -> None:
    if not hasattr(os, "copy_file_range"):
        raise OSError(errno.ENOSYS, "no copy_file_range")
    done = 0
    while done < size:
        copied = os.copy_file_range(source.fileno(), out.fileno(), size - done, done, end + done)
        if not copied:
            raise OSError(errno.EIO, f"{source.name} ended early")
        done += copied


@contextmanager
def _range_file(path: Path, table_file: Path) -> Iterator[IO[bytes]]:
    """A range's file, owner-readable only. A write that fails deletes it at once (a full disk gets its
    space back for the other ranges) and names the table's file, as an unsplit table's failure does;
    the table's other ranges go once every copy has ended (SplitTable.discard), a killed run's with
    the next run's other half-written files."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    os.fchmod(fd, PRIVATE)
    try:
        with os.fdopen(fd, "wb", buffering=COPY_BLOCK) as handle:
            yield handle
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise disk_error(table_file, exc) from exc


def read_materialized_views(conn: psycopg.Connection, schemas: list[str]) -> list[dict[str, Any]]:
    """The source's materialized views of the exported schemas, and which hold rows: the import refreshes
    those, as pg_restore does (it restores the data of populated ones only)."""
    return [{"schema": v.schema, "name": v.name, "populated": v.populated}
            for v in sorted(catalog.materialized_views(conn, schemas), key=lambda v: v.key)]


def read_sequences(conn: psycopg.Connection, names: list[tuple[str, str]]) -> list[SequenceState]:
    """Each sequence's state, so the target continues where the source was."""
    states = []
    for schema, name in names:
        row = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
            sql.Identifier(schema, name))).fetchone()
        assert row is not None
        states.append(SequenceState(schema, name, int(row[0]), bool(row[1])))
    return states
