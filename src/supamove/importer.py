"""Step 4: load the exported tables into the target, in FK order, user ids remapped, resumable."""

from __future__ import annotations

import hashlib
import multiprocessing
import operator
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
import psycopg
from psycopg import sql

from supamove import catalog
from supamove.catalog import ForeignKey, Table
from supamove.db import Endpoint, connection, first_line
from supamove.errors import DataFileError, SupamoveError
from supamove.log import get_logger
from supamove.metadata import Metadata
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress
from supamove.users.mapping import UserMapping

log = get_logger("import")
Unmapped = Literal["error", "null", "keep"]
T = TypeVar("T")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
COPY_CONTEXT = re.compile(r"COPY [^\n]*?, line (\d+)(?:, column ([^:\n]+))?")
READ_BYTES = 1 << 20  # a block of lines: Python works per block, not per row
SCAN_BYTES = 32 << 20  # a unit of work for the processes that check the files
SCAN_JOBS = min(4, os.cpu_count() or 1)
PREFETCH = 4  # converted blocks waiting for the target: memory stays flat
SHOWN_IDS = 5

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

# Whether a value of the exported type can be read by the target column's type.
COMPATIBLE_SQL = """
SELECT s.oid IS NOT NULL AND (s.oid = t.oid OR s.typcategory = t.typcategory OR t.typcategory = 'S'
       OR EXISTS (SELECT 1 FROM pg_cast c WHERE c.castsource = s.oid AND c.casttarget = t.oid
                  AND c.castcontext IN ('i', 'a')))
FROM pg_type t LEFT JOIN pg_type s ON s.oid = to_regtype(%s)
WHERE t.oid = to_regtype(%s)
"""

# Columns the target fills itself when the export has no value for them.
DEFAULTED_SQL = """
SELECT a.attname FROM pg_attribute a
WHERE a.attrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND a.attnum > 0 AND NOT a.attisdropped
  AND (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' OR NOT a.attnotnull)
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

# A trigger left that queues events until COMMIT: the table cannot be altered (indexes rebuilt) after its COPY.
DEFERRED_TRIGGERS_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = format('%%I.%%I', %s::text, %s::text)::regclass
               AND t.tgdeferrable AND t.tgenabled <> 'D')
"""

# A table's indexes, primary key and unique constraints: built once after its COPY (one sort each)
# instead of updated row by row. Those other objects use (a foreign key, a parent index, an extension),
# or whose settings the definition would not restore, are left in place.
REBUILT_SQL = """
SELECT n.nspname, ci.relname, con.conname, coalesce(pg_get_constraintdef(con.oid), pg_get_indexdef(i.indexrelid)),
       obj_description(i.indexrelid, 'pg_class'), obj_description(con.oid, 'pg_constraint')
FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ci.relnamespace
JOIN pg_class t ON t.oid = i.indrelid
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u')
WHERE i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND t.relkind = 'r' AND ci.relkind = 'i'
  AND NOT i.indisexclusion AND NOT i.indisclustered AND NOT i.indisreplident
  AND i.indisvalid AND i.indisready AND ci.reltablespace = 0
  AND (con.oid IS NOT NULL OR NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid))
  AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = i.indexrelid)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                  AND d.deptype IN ('e', 'x'))
  AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indexrelid AND coalesce(a.attstattarget, -1) >= 0)
ORDER BY ci.relname
"""

# Room to sort a rebuilt index in memory; a target configured with more keeps its own.
INDEX_MEMORY_SQL = """
SELECT set_config('maintenance_work_mem', %s, true)
WHERE (SELECT setting::bigint FROM pg_settings WHERE name = 'maintenance_work_mem') < %s
"""
INDEX_MEMORY_KB = 512 * 1024

ENABLE = {"O": "ENABLE TRIGGER", "A": "ENABLE ALWAYS TRIGGER", "R": "ENABLE REPLICA TRIGGER"}


@dataclass
class ImportOptions:
    disable_fk: bool = False
    truncate_first: bool = False
    unmapped_users: Unmapped = "error"


@dataclass
class ColumnLoad:
    """One column the import writes: its name, how the export encodes it, whether it holds user ids."""

    name: str
    encoding: str
    user_ids: bool = False
    array: bool = False


@dataclass
class TablePlan:
    entry: dict[str, Any]
    target: Table | None
    path: Path
    columns: list[ColumnLoad] = field(default_factory=list)
    missing_in_target: list[str] = field(default_factory=list)
    missing_in_export: list[str] = field(default_factory=list)
    user_ids: dict[str, set[str]] = field(default_factory=dict)
    unmapped: dict[str, list[str]] = field(default_factory=dict)
    done: bool = False
    has_rows: bool = False

    @property
    def schema(self) -> str:
        return str(self.entry["schema"])

    @property
    def name(self) -> str:
        return str(self.entry["name"])

    @property
    def key(self) -> tuple[str, str]:
        return (self.schema, self.name)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def rows(self) -> int:
        return int(self.entry.get("rowCount") or 0)

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def state_key(self) -> tuple[str, str, str, str]:
        return (self.schema, self.name, str(self.entry.get("snapshot") or ""), str(self.entry.get("sha256") or ""))


@dataclass
class ImportPlan:
    groups: list[list[TablePlan]]
    problems: list[SupamoveError]
    mapping: dict[str, str]
    meta: Metadata
    options: ImportOptions

    @property
    def tables(self) -> list[TablePlan]:
        return [t for group in self.groups for t in group]

    @property
    def cycles(self) -> list[list[TablePlan]]:
        return [g for g in self.groups if len(g) > 1 or (g[0].target is not None and any(
            (fk.ref_schema, fk.ref_table) == g[0].key for fk in g[0].target.foreign_keys))]

    def check(self) -> None:
        """Raise the first problem (each is logged) when the import cannot succeed."""
        for problem in self.problems[1:]:
            log.error("%s", problem)
        if self.problems:
            raise self.problems[0]


@dataclass
class TableImport:
    schema: str
    name: str
    rows: int
    seconds: float
    skipped: bool = False

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class ImportResult:
    plan: ImportPlan
    tables: list[TableImport]
    seconds: float
    fk_checked: int = 0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables if not t.skipped)


# --- planning ---------------------------------------------------------------------------------


def plan_import(target: Endpoint, datadir: DataDir, options: ImportOptions) -> ImportPlan:
    """What the import would do and every reason it cannot (--dry-run): reads the files and the target only."""
    with connection(target, autocommit=True) as conn:
        return make_plan(conn, target, datadir, options)


def make_plan(conn: psycopg.Connection, target: Endpoint, datadir: DataDir, options: ImportOptions) -> ImportPlan:
    """The plan, read on an open connection to the target."""
    meta = Metadata.load(datadir)
    entries = meta.tables
    problems: list[SupamoveError] = []
    schemas = sorted({e["schema"] for e in entries})
    targets = {t.key: t for t in catalog.read_tables(conn, schemas)} if schemas else {}
    done = set() if options.truncate_first else _read_state(conn)
    plans = [_plan_table(conn, target, datadir, e, targets.get((e["schema"], e["name"])), problems) for e in entries]
    for plan in plans:
        plan.done = plan.state_key in done
    groups = _group(plans)
    _check_files([p for p in plans if not p.done], problems, SCAN_JOBS)
    mapping, loaded = _mapping_for(plans, datadir, problems)
    _check_unmapped(target, plans, mapping, loaded, options, problems)
    if not options.truncate_first:
        _check_empty(conn, target, plans, problems)
    if options.disable_fk:
        _check_replica_role(conn, target, problems)
    return ImportPlan(groups, problems, mapping, meta, options)


def _plan_table(conn: psycopg.Connection, endpoint: Endpoint, datadir: DataDir, entry: dict[str, Any],
                target: Table | None, problems: list[SupamoveError]) -> TablePlan:
    plan = TablePlan(entry, target, datadir.root / entry["file"])
    where = f"{plan.qualified}"
    if not entry.get("complete"):
        problems.append(DataFileError(f"the export of {where} is not finished",
                                      fix="run `supamove export` again to complete it"))
    if target is None:
        problems.append(endpoint.error(f"table {where} does not exist in the target",
                                      "create the application schema on the target first (run your migrations)"))
        return plan
    exported = {c["name"]: c for c in entry["columns"]}
    user_cols = set(entry.get("userIdColumns", []))
    defaulted = {r[0] for r in conn.execute(DEFAULTED_SQL, (target.schema, target.name))}
    for col in target.columns:
        source = exported.get(col.name)
        if source is None:
            if col.name not in defaulted:
                plan.missing_in_export.append(col.name)
                problems.append(endpoint.error(
                    f"column {where}.{col.name} is NOT NULL without a default in the target but not in the export",
                    "give it a default or make it nullable on the target, or export it from the source"))
            else:
                plan.missing_in_export.append(col.name)
            continue
        if col.generated:
            continue
        if not _compatible(conn, source, col.type):
            problems.append(endpoint.error(
                f"column {where}.{col.name} is {col.type} in the target but {source['type']} in the export",
                f"change the target column to {source['type']} (or a type that accepts its values)"))
        array = source["type"].endswith("[]") or source.get("baseType", "").endswith("[]")
        plan.columns.append(ColumnLoad(col.name, source["encoding"], col.name in user_cols, array))
    for name, source in exported.items():
        if target.column(name) is None:
            plan.missing_in_target.append(name)
            if not source.get("generated"):
                problems.append(endpoint.error(
                    f"column {where}.{name} ({source['type']}) is in the export but not in the target",
                    f"add the column to {where} on the target (the import never drops data)"))
    return plan


def _compatible(conn: psycopg.Connection, source: dict[str, Any], target_type: str) -> bool:
    if source["type"] == target_type:
        return True
    key = (source.get("baseType") or source["type"], target_type)
    row = conn.execute(COMPATIBLE_SQL, key).fetchone()
    return bool(row and row[0])


def _read_state(conn: psycopg.Connection) -> set[tuple[str, str, str, str]]:
    exists = conn.execute("SELECT to_regclass('_supamove.import_state') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set()
    rows = conn.execute("SELECT schema_name, table_name, snapshot, sha256 FROM _supamove.import_state")
    return {tuple(r) for r in rows}  # type: ignore[misc]


def _group(plans: list[TablePlan]) -> list[list[TablePlan]]:
    """The target's FK order: parents first, a cycle's tables in one group; unmatched tables last."""
    by_key = {p.key: p for p in plans}
    matched = [p.target for p in plans if p.target is not None]
    groups = [[by_key[t.key] for t in g] for g in catalog.load_order(matched)]
    return groups + [[p] for p in plans if p.target is None]


def _check_files(plans: list[TablePlan], problems: list[SupamoveError], jobs: int) -> None:
    """Each file is the one the export wrote: size, SHA-256, rows, JSON; its user ids are collected."""
    present = [p for p in plans if _file_present(p, problems)]
    scans = _scan_files(present, jobs)
    for plan, (sha, rows, bad_line) in zip(present, scans, strict=True):
        path, entry = plan.path, plan.entry
        if sha != entry.get("sha256"):
            problems.append(DataFileError(
                f"{path} does not match metadata.json: SHA-256 {sha[:12]}… instead of {str(entry.get('sha256'))[:12]}…",
                fix="the file was changed or damaged: run `supamove export --force` to write it again"))
        elif bad_line is not None:  # found now, before any table is loaded: the target stays unchanged
            problems.append(bad_line)
        elif rows != plan.rows:
            problems.append(DataFileError(f"{path} has {rows} rows, metadata.json says {plan.rows}",
                                          fix="run `supamove export --force` to write it again"))


def _file_present(plan: TablePlan, problems: list[SupamoveError]) -> bool:
    path, entry = plan.path, plan.entry
    if not path.exists():
        problems.append(DataFileError(f"{path} not found (table {plan.qualified})",
                                      fix="run `supamove export` again to write it"))
        return False
    size = path.stat().st_size
    if size < int(entry.get("bytes") or 0):
        problems.append(DataFileError(
            f"{path} is truncated: {size} of {entry['bytes']} bytes (table {plan.qualified})",
            fix="run `supamove export --force` to write it again"))
        return False
    return True


@dataclass
class RangeScan:
    """What one byte range of a file holds: its lines, the first bad one, the user ids of each column."""

    lines: int = 0
    bad_index: int | None = None
    bad_line: bytes = b""
    user_ids: dict[str, set[str]] = field(default_factory=dict)


def _scan_files(plans: list[TablePlan], jobs: int) -> list[tuple[str, int, DataFileError | None]]:
    """Hash, count and parse the files: JSON parsed in byte ranges on `jobs` processes, while this one hashes."""
    tasks = [(p.path, start, min(start + SCAN_BYTES, p.path.stat().st_size),
              [(c.name, c.array) for c in p.columns if c.user_ids])
             for p in plans for start in range(0, max(p.path.stat().st_size, 1), SCAN_BYTES)]
    if sum(end - start for _, start, end, _ in tasks) > SCAN_BYTES and jobs > 1:  # worth a process or more
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            scans = pool.map(_scan_range, *zip(*tasks, strict=True))
            digests = [_sha256(p.path) for p in plans]
            ranges = list(scans)
    else:
        digests = [_sha256(p.path) for p in plans]
        ranges = [_scan_range(*task) for task in tasks]
    results = []
    for plan, digest in zip(plans, digests, strict=True):
        mine = [r for task, r in zip(tasks, ranges, strict=True) if task[0] == plan.path]
        results.append((digest, *_combine(plan, mine)))
    return results


def _combine(plan: TablePlan, ranges: list[RangeScan]) -> tuple[int, DataFileError | None]:
    """One file's rows and first bad line from its ranges, in order; its user ids go to the plan."""
    rows, bad_line = 0, None
    plan.user_ids = {c.name: set() for c in plan.columns if c.user_ids}
    for part in ranges:
        if bad_line is None and part.bad_index is not None:
            try:
                parse_line(part.bad_line, plan.path, rows + part.bad_index + 1)
            except DataFileError as exc:
                bad_line = exc
        for name, ids in part.user_ids.items():
            plan.user_ids[name] |= ids
        rows += part.lines
    return rows, bad_line


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_BYTES):
            digest.update(chunk)  # hashlib lets other threads run meanwhile
    return digest.hexdigest()


def _scan_range(path: Path, start: int, end: int, columns: list[tuple[str, bool]]) -> RangeScan:
    """Parse the lines that start in [start, end) of the file, collecting user ids (runs in a worker process)."""
    scan = RangeScan(user_ids={name: set() for name, _ in columns})
    with open(path, "rb") as handle:
        if start:
            handle.seek(start - 1)
            handle.readline()  # the line under way at `start` belongs to the range before
        position = handle.tell()
        while position < end and (data := handle.read(min(READ_BYTES, end - position))):
            if not data.endswith(b"\n"):
                data += handle.readline()  # the rest of the last line, which starts in this range
            position += len(data)
            lines = data.split(b"\n")
            if not lines[-1]:
                lines.pop()
            if scan.bad_index is None:
                _check_block(lines, scan, columns)
            scan.lines += len(lines)
    return scan


def _check_block(lines: list[bytes], scan: RangeScan, columns: list[tuple[str, bool]]) -> None:
    """Note the block's first bad line, or collect its user ids."""
    try:
        records = list(map(orjson.loads, lines))
        if set(map(type, records)) - {dict}:
            raise TypeError
    except (orjson.JSONDecodeError, TypeError):
        records = []
        for index, line in enumerate(lines):
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                records.append(None)
            if not isinstance(records[-1], dict):
                scan.bad_index, scan.bad_line = scan.lines + index, line
                return
    for name, array in columns:
        ids = scan.user_ids[name]
        values = [v for v in (r.get(name) for r in records) if isinstance(v, str)]
        if array:
            ids.update(m.lower() for v in values for m in UUID.findall(v))
        else:
            ids.update(v.lower() for v in values)


def line_blocks(path: Path) -> Iterator[list[bytes]]:
    """The file's lines (without the newline), in blocks."""
    with open(path, "rb") as handle:
        while data := handle.read(READ_BYTES):
            lines = (data + handle.readline()).split(b"\n")
            if not lines[-1]:
                lines.pop()
            yield lines


def parse_line(line: bytes, path: Path, number: int) -> dict[str, Any]:
    """One exported row, or a DataFileError naming the file and line."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise DataFileError(f"{path} line {number} is not valid JSON ({exc.msg})",
                            fix="restore the file or run `supamove export --force` to write it again") from None
    if not isinstance(record, dict):
        raise DataFileError(f"{path} line {number} is not a JSON object",
                            fix="restore the file or run `supamove export --force` to write it again")
    return record


def _mapping_for(plans: list[TablePlan], datadir: DataDir,
                 problems: list[SupamoveError]) -> tuple[dict[str, str], bool]:
    """Supabase id to Stack Auth id; required only when some user-id column holds ids."""
    if not any(ids for p in plans for ids in p.user_ids.values()):
        return {}, False
    path = datadir.user_mapping
    if not path.exists():
        problems.append(DataFileError(f"{path} not found: the exported tables hold user ids to remap",
                                      fix="run `supamove migrate-users` first"))
        return {}, False
    try:
        return load_mapping(path), True
    except DataFileError as exc:
        problems.append(exc)
        return {}, False


def load_mapping(path: Path) -> dict[str, str]:
    """The user mapping as Supabase id (lowercase) to Stack Auth id; an id listed twice in any case is refused."""
    mapping: dict[str, str] = {}
    for sid, entry in UserMapping.load(path).entries.items():
        if sid.lower() in mapping:  # uuids ignore case: one of the two would silently win
            raise DataFileError(f"{path} lists Supabase user {sid.lower()} twice",
                                fix=f"restore {path.name} from a backup, or move it away and run "
                                    "`supamove map-users` to rebuild it")
        mapping[sid.lower()] = entry["stackAuthUserId"]
    return mapping


def _check_unmapped(target: Endpoint, plans: list[TablePlan], mapping: dict[str, str], loaded: bool, options: ImportOptions,
                    problems: list[SupamoveError]) -> None:
    if not loaded:
        return
    for plan in plans:
        for name, ids in plan.user_ids.items():
            missing = sorted(i for i in ids if i not in mapping)
            if not missing:
                continue
            plan.unmapped[name] = missing
            column = next(c for c in plan.columns if c.name == name)
            where = f"{plan.qualified}.{name}"
            shown = ", ".join(missing[:SHOWN_IDS]) + (f" and {len(missing) - SHOWN_IDS} more" if len(missing) > SHOWN_IDS else "")
            if options.unmapped_users == "error":
                problems.append(DataFileError(
                    f"{len(missing)} user ids in {where} have no Stack Auth mapping: {shown}",
                    fix="run `supamove migrate-users` to migrate these users, or rerun with "
                        "--unmapped-users null (or keep)"))
            elif options.unmapped_users == "null" and not column.array and not _nullable(plan, name):
                problems.append(target.error(
                    f"{where} is NOT NULL in the target: --unmapped-users null cannot clear its "
                    f"{len(missing)} unmapped user ids ({shown})",
                    "run `supamove migrate-users` to migrate these users, or use --unmapped-users keep"))


def _nullable(plan: TablePlan, name: str) -> bool:
    col = plan.target.column(name) if plan.target else None
    return bool(col and col.nullable)


def _check_empty(conn: psycopg.Connection, target: Endpoint, plans: list[TablePlan], problems: list[SupamoveError]) -> None:
    for plan in plans:
        if plan.target is not None and not plan.done:
            row = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(plan.ident)).fetchone()
            plan.has_rows = bool(row and row[0])
    full = [p.qualified for p in plans if p.has_rows]
    if full:
        problems.append(target.error(
            f"target tables already hold rows: {', '.join(full)}",
            "empty them, or rerun with --truncate-first to replace their contents"))


def _check_replica_role(conn: psycopg.Connection, target: Endpoint, problems: list[SupamoveError]) -> None:
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL session_replication_role = replica")
    except psycopg.errors.InsufficientPrivilege:
        problems.append(_replica_refused(target))


def _replica_refused(target: Endpoint) -> SupamoveError:
    return target.error(
        "--disable-fk needs to SET session_replication_role, which this user may not do",
        "run without --disable-fk (constraints are then checked before each table commits), "
        "or use a superuser in DATABASE_URL")


# --- loading ----------------------------------------------------------------------------------


def run_import(target: Endpoint, datadir: DataDir, options: ImportOptions,
               progress: Progress | None = None) -> ImportResult:
    """Load every planned table not loaded yet, each (or each FK cycle) in one transaction."""
    progress = progress or NullProgress()
    started = time.monotonic()
    with connection(target, autocommit=True) as conn:
        plan = make_plan(conn, target, datadir, options)
        plan.check()
        conn.execute(STATE_DDL)
        if options.truncate_first:
            _truncate(conn, target, plan)
        results: list[TableImport] = []
        for group in plan.groups:
            results += _load_group(conn, target, plan, group, progress)
        checked = _check_foreign_keys(conn, target, plan) if options.disable_fk else 0
    return ImportResult(plan, results, time.monotonic() - started, checked)


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
                           "empty the referencing table yourself, or add it to the export") from None
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
            _restore_fks(conn, dropped)
            _restore_triggers(conn, triggers)
    except psycopg.errors.IntegrityError as exc:
        raise target.error(f"{', '.join(t.qualified for t in group)}: {first_line(exc)}"
                           f"{': ' + exc.diag.message_detail if exc.diag.message_detail else ''}",
                           "correct the rows in the source and export again, or load the missing "
                           "parent rows first; nothing of this table was written") from None
    return results


def _session_mode(conn: psycopg.Connection, target: Endpoint, options: ImportOptions) -> None:
    if options.disable_fk:
        try:
            conn.execute("SET LOCAL session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege:
            raise _replica_refused(target) from None
    conn.execute("SET CONSTRAINTS ALL DEFERRED")


def _disable_triggers(conn: psycopg.Connection, table: TablePlan) -> list[tuple[str, str, str, str]]:
    """Turn the application's triggers off for this transaction; returns what to turn back on."""
    triggers = [tuple(r) for r in conn.execute(TRIGGERS_SQL, (table.schema, table.name))]
    for schema, name, trigger, _ in triggers:
        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(
            sql.Identifier(schema, name), sql.Identifier(trigger)))
    return triggers  # type: ignore[return-value]


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
    return fks  # type: ignore[return-value]


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
    indexes = _drop_indexes(conn, table)
    try:
        with conn.cursor() as cur, cur.copy(query) as copy, _prefetched(_copy_blocks(table, plan)) as blocks:
            rows = 0
            for block, count in blocks:
                copy.write(block)
                rows += count
                progress.advance(table.qualified, count)
    except psycopg.errors.DataError as exc:
        raise _rejected(target, table, exc) from None
    except psycopg.errors.IntegrityError as exc:
        raise _rejected(target, table, exc) from None
    _build_indexes(conn, table, indexes)
    if rows != table.rows:
        raise DataFileError(f"{table.path} has {rows} rows, metadata.json says {table.rows}",
                            fix="run `supamove export --force` to write it again")
    _set_sequences(conn, plan, table)
    seconds = time.monotonic() - started
    conn.execute("INSERT INTO _supamove.import_state (schema_name, table_name, snapshot, sha256, row_count, "
                 "fk_mode, seconds) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                 (*table.state_key, rows, "checked after load" if plan.options.disable_fk else "enforced", seconds))
    progress.finish(table.qualified)
    log.debug("loaded %s: %d rows in %.1fs", table.qualified, rows, seconds)
    return TableImport(table.schema, table.name, rows, seconds)


@contextmanager
def _prefetched(items: Iterator[T], depth: int = PREFETCH) -> Iterator[Iterator[T]]:
    """`items`, made on a thread of their own up to `depth` ahead: Python converts while the target ingests."""
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _offer(ready, (True, item), stop):
                    return
            _offer(ready, (False, None), stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the consuming thread
            _offer(ready, (False, exc), stop)

    def consume() -> Iterator[T]:
        while True:
            more, item = ready.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item

    worker = threading.Thread(target=produce, name="supamove-convert", daemon=True)
    worker.start()
    try:
        yield consume()
    finally:
        stop.set()
        worker.join()


def _offer(ready: queue.Queue[tuple[bool, Any]], item: tuple[bool, Any], stop: threading.Event) -> bool:
    """Put `item` once there is room, unless the consumer has stopped."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


@dataclass
class Rebuilt:
    """An index (or the primary key or unique constraint it backs) dropped for the COPY and built after it."""

    schema: str
    index: str
    constraint: str | None
    definition: str
    index_comment: str | None
    constraint_comment: str | None


def _drop_indexes(conn: psycopg.Connection, table: TablePlan) -> list[Rebuilt]:
    """Drop the table's rebuildable indexes for this transaction; returns what to build after the COPY."""
    row = conn.execute(DEFERRED_TRIGGERS_SQL, (table.schema, table.name)).fetchone()
    if row and row[0] and conn.execute("SHOW session_replication_role").fetchone() == ("origin",):
        return []
    rebuilt = [Rebuilt(*r) for r in conn.execute(REBUILT_SQL, (table.schema, table.name))]
    for item in rebuilt:
        if item.constraint is not None:
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table.ident, sql.Identifier(item.constraint)))
        else:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(item.schema, item.index)))
    return rebuilt


def _build_indexes(conn: psycopg.Connection, table: TablePlan, rebuilt: list[Rebuilt]) -> None:
    if rebuilt:
        conn.execute(INDEX_MEMORY_SQL, (f"{INDEX_MEMORY_KB}kB", INDEX_MEMORY_KB))
    for item in rebuilt:
        if item.constraint is not None:
            conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                table.ident, sql.Identifier(item.constraint), sql.SQL(item.definition)))
        else:
            conn.execute(sql.SQL(item.definition))
        if item.index_comment is not None:
            conn.execute(sql.SQL("COMMENT ON INDEX {} IS {}").format(
                sql.Identifier(item.schema, item.index), sql.Literal(item.index_comment)))
        if item.constraint is not None and item.constraint_comment is not None:
            conn.execute(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                sql.Identifier(item.constraint), table.ident, sql.Literal(item.constraint_comment)))
        log.debug("built index %s.%s", item.schema, item.index)


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


def _copy_blocks(table: TablePlan, plan: ImportPlan) -> Iterator[tuple[bytes, int]]:
    """The file as COPY text format, in blocks of rows."""
    convert = _block_converter(table, plan)
    rows = 0
    for lines in line_blocks(table.path):
        yield convert(lines, rows), len(lines)
        rows += len(lines)


def _block_converter(table: TablePlan, plan: ImportPlan) -> Callable[[list[bytes], int], bytes]:
    """Lines to COPY text a column at a time; any doubt about a line goes through the per-row converter."""
    getters = [operator.itemgetter(c.name) for c in table.columns]
    encoders = [_column_encoder(c, plan) for c in table.columns]
    convert_row = _row_converter(table, plan)

    def convert(lines: list[bytes], before: int) -> bytes:
        try:
            records = list(map(orjson.loads, lines))
            columns = [enc(list(map(get, records))) for get, enc in zip(getters, encoders, strict=True)]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
            # The per-row converter names the line and the problem.
            text = [convert_row(line, number) for number, line in enumerate(lines, before + 1)]
        else:
            text = list(map("\t".join, zip(*columns, strict=True))) if columns else [""] * len(records)
        text.append("")
        return "\n".join(text).encode()

    return convert


def _row_converter(table: TablePlan, plan: ImportPlan) -> Callable[[bytes, int], str]:
    encoders = [(c.name, _encoder(c, plan)) for c in table.columns]
    path = table.path

    def convert(line: bytes, number: int) -> str:
        record = parse_line(line, path, number)
        try:
            return "\t".join([enc(record[name]) for name, enc in encoders])
        except KeyError as exc:
            raise DataFileError(f"{path} line {number} has no value for column {exc.args[0]}",
                                fix="restore the file or run `supamove export --force` to write it again") from None
        except (TypeError, AttributeError):
            raise DataFileError(f"{path} line {number} has a value of the wrong JSON type",
                                fix="restore the file or run `supamove export --force` to write it again") from None

    return convert


def _column_encoder(column: ColumnLoad, plan: ImportPlan) -> Callable[[list[Any]], list[str]]:
    """A column's exported values to COPY text, the same as _encoder gives one value at a time."""
    if column.user_ids:
        one = _encoder(column, plan)
        return lambda values: list(map(one, values))
    if column.encoding == "number":
        return lambda values: ["\\N" if v is None else str(int(v)) for v in values]
    if column.encoding == "boolean":
        return lambda values: ["\\N" if v is None else ("t" if v else "f") for v in values]
    return _text_column


def _text_column(values: list[Any]) -> list[str]:
    joined = "".join([v for v in values if v is not None])  # TypeError on a value that is not a string
    if "\\" in joined or "\n" in joined or "\r" in joined or "\t" in joined:
        return ["\\N" if v is None else _escape(v) for v in values]
    return ["\\N" if v is None else v for v in values]


def _escape(text: str) -> str:
    if "\\" in text or "\n" in text or "\r" in text or "\t" in text:
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return text


def _encoder(column: ColumnLoad, plan: ImportPlan) -> Callable[[Any], str]:
    """Exported JSON value to COPY text: PostgreSQL's own text form, user ids swapped."""
    if column.user_ids:
        remap = _remapper(plan.mapping, plan.options.unmapped_users, column.array)
        return lambda v: "\\N" if v is None else _null_or(remap(v))
    if column.encoding == "number":
        return lambda v: "\\N" if v is None else str(int(v))
    if column.encoding == "boolean":
        return lambda v: "\\N" if v is None else ("t" if v else "f")
    return lambda v: "\\N" if v is None else _escape(v)


def _null_or(value: str | None) -> str:
    return "\\N" if value is None else _escape(value)


def _remapper(mapping: dict[str, str], unmapped: Unmapped, array: bool) -> Callable[[str], str | None]:
    def one(old: str) -> str | None:
        new = mapping.get(old.lower())
        if new is not None:
            return new
        return old if unmapped != "null" else None

    if not array:
        return one
    return lambda v: UUID.sub(lambda m: one(m.group()) or "NULL", v)


def _set_sequences(conn: psycopg.Connection, plan: ImportPlan, table: TablePlan) -> None:
    """Each of the target's sequences continues from the source's state, never below the loaded max."""
    assert table.target is not None
    states = {(s["schema"], s["name"]): s for s in plan.meta.data.get("sequences", [])}
    sources = {s["column"]: states.get((s["schema"], s["name"])) for s in table.entry.get("sequences", [])}
    for seq in table.target.sequences:
        row = conn.execute(sql.SQL("SELECT max({})::bigint FROM {}").format(
            sql.Identifier(seq.column), table.ident)).fetchone()
        loaded = row[0] if row else None
        value, called = _next_value(sources.get(seq.column), loaded)
        if value is None:
            continue
        conn.execute("SELECT setval(format('%%I.%%I', %s::text, %s::text)::regclass, %s, %s)",
                     (seq.schema, seq.name, value, called))


def _next_value(state: dict[str, Any] | None, loaded: int | None) -> tuple[int | None, bool]:
    value, called = (int(state["lastValue"]), bool(state["isCalled"])) if state else (None, True)
    if loaded is not None and (value is None or loaded > value or (loaded == value and not called)):
        return loaded, True
    return value, called


# --- foreign keys checked after a --disable-fk load ---------------------------------------------


def _check_foreign_keys(conn: psycopg.Connection, target: Endpoint, plan: ImportPlan) -> int:
    """Count the rows of every planned table's FKs that match no parent; fail naming them."""
    orphans = []
    checked = 0
    for table in plan.tables:
        for fk in table.target.foreign_keys if table.target else ():
            checked += 1
            row = conn.execute(_orphans_query(table.target, fk)).fetchone()  # type: ignore[arg-type]
            count = int(row[0]) if row else 0
            if count:
                orphans.append(f"{fk.name} on {table.qualified}: {count} rows without a match in "
                               f"{fk.ref_schema}.{fk.ref_table}")
                log.error("foreign key %s on %s: %d orphan rows", fk.name, table.qualified, count)
    if orphans:
        raise target.error(f"foreign keys violated after the load: {'; '.join(orphans)}",
                           "the loaded rows stay for inspection; correct the source data and rerun with "
                           "--truncate-first, or run without --disable-fk to stop at the first bad row")
    log.info("checked %d foreign keys: no orphan rows", checked)
    return checked


def _orphans_query(table: Table, fk: ForeignKey) -> sql.Composed:
    child = [sql.SQL("c.{}").format(sql.Identifier(c)) for c in fk.columns]
    parent = [sql.SQL("p.{}").format(sql.Identifier(c)) for c in fk.ref_columns]
    not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in child)
    match = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(p, c) for p, c in zip(parent, child, strict=True))
    return sql.SQL("SELECT count(*) FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})").format(
        sql.Identifier(table.schema, table.name), not_null, sql.Identifier(fk.ref_schema, fk.ref_table), match)
