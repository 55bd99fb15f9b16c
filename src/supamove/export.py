"""Step 2: stream every application table and the auth users to JSON Lines, from one snapshot."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from supamove import catalog
from supamove.catalog import QualifiedName, Table
from supamove.clock import now_iso
from supamove.db import Endpoint, connect, first_line
from supamove.errors import SupamoveError
from supamove.files import atomic_writer, remove_partials
from supamove.log import get_logger
from supamove.metadata import Metadata, table_to_dict
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress

log = get_logger("export")
AUTH_TABLES = ("users", "identities", "mfa_factors")  # mfa_factors: the second factors to carry over
COPY_BLOCK = 1 << 20
# CSV with control characters as quote and delimiter passes each JSON line through untouched:
# row_to_json escapes every control character, so none can appear in its output.
COPY_OPTIONS = sql.SQL("(FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')")


@dataclass
class ExportOptions:
    schemas: list[str] = field(default_factory=lambda: ["public"])
    tables: list[str] = field(default_factory=list)
    exclude_tables: list[str] = field(default_factory=list)
    user_id_columns: list[str] = field(default_factory=list)
    jobs: int = 2
    force: bool = False


@dataclass
class ExportPlan:
    groups: list[list[Table]]
    auth_tables: list[Table]
    skipped_schemas: list[str]
    server_version: str

    @property
    def tables(self) -> list[Table]:
        return [t for group in self.groups for t in group]

    @property
    def cycles(self) -> list[list[Table]]:
        return catalog.cycles(self.groups)


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


def plan_export(conn: psycopg.Connection, options: ExportOptions) -> ExportPlan:
    """Which tables, in which order, and what is left out."""
    schemas = catalog.schemas_to_read(options.schemas)
    tables = catalog.read_tables(conn, schemas, options.tables, options.exclude_tables,
                                 options.user_id_columns)
    missing = [s for s in schemas if not conn.execute(
        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (s,)).fetchone()]
    if missing:
        raise SupamoveError(f"schema {missing[0]} does not exist in the source",
                            fix="check --schema; `supamove export --dry-run` lists what would be exported")
    present = [r[0] for r in conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) ORDER BY 1",
        (sorted(catalog.PLATFORM_SCHEMAS - {"information_schema", "pg_catalog", "pg_toast"}),))]
    auth = [t for t in catalog.read_relations(conn, ["auth"]) if t.name in AUTH_TABLES]
    version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    return ExportPlan(catalog.load_order(tables), auth, present, version)


def select_rows(table: Table) -> sql.Composed:
    """One JSON object per row, encoded by PostgreSQL in the canonical text form of each type."""
    items: list[sql.Composable] = []
    for col in table.columns:
        ident = sql.Identifier(col.name)
        if col.encoding == "text":
            items.append(sql.SQL("{}::text AS {}").format(ident, ident))
        else:
            items.append(ident)
    only = sql.SQL("") if table.partitioned else sql.SQL("ONLY ")
    inner = sql.SQL("SELECT {} FROM {}{}").format(
        sql.SQL(", ").join(items), only, sql.Identifier(table.schema, table.name))
    return sql.SQL("SELECT row_to_json(r.*)::text FROM ({}) r").format(inner)


def copy_table(conn: psycopg.Connection, table: Table, path: Path, progress: Progress) -> tuple[int, int, str]:
    """Stream one table into `path`; returns rows, bytes and SHA-256."""
    query = sql.SQL("COPY ({}) TO STDOUT {}").format(select_rows(table), COPY_OPTIONS)
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

    # COPY yields one message per row: work per block of rows, not per row.
    with atomic_writer(path) as out, conn.cursor() as cur, cur.copy(query) as copy:
        for chunk in copy:
            block += chunk
            if len(block) >= COPY_BLOCK:
                flush()
        flush()
    return rows, size, digest.hexdigest()


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
               progress: Progress | None = None) -> ExportResult:
    """Export the planned tables and auth users; tables finished by an earlier run are kept."""
    progress = progress or NullProgress()
    datadir.ensure()
    started = time.monotonic()
    with snapshot_reader(source, None) as main:
        snapshot = str(main.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        plan = plan_export(main, options)
        meta = prepare_metadata(datadir, plan, options, source, snapshot)
        work = [t for t in plan.tables + plan.auth_tables if not _is_done(meta, datadir, t)]
        done = [_resumed(meta, t) for t in plan.tables + plan.auth_tables if t not in work]
        for item in done:
            log.info("skipping %s: exported by a previous run (use --force to export it again)", item.qualified)
        work.sort(key=lambda t: -t.size_bytes)
        with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
            results = list(pool.map(lambda t: _export_one(source, snapshot, t, datadir, meta, progress), work))
    meta.data["finishedAt"] = now_iso()
    meta.save()
    elapsed = time.monotonic() - started
    ordered = {t.key: i for i, t in enumerate(plan.tables + plan.auth_tables)}
    all_results = sorted(done + results, key=lambda r: ordered[(r.schema, r.name)])
    return ExportResult(plan, all_results, elapsed, snapshot, datadir)


def prepare_metadata(datadir: DataDir, plan: ExportPlan, options: ExportOptions,
                     source: Endpoint, snapshot: str) -> Metadata:
    """A new metadata.json that keeps the completed entries of an earlier run (unless --force)."""
    previous = _previous_entries(datadir) if not options.force else {}
    meta = Metadata.new(
        datadir,
        source={"serverVersion": plan.server_version, "url": source.redacted},
        snapshot=snapshot,
        startedAt=now_iso(),
        finishedAt=None,
        schemas=list(options.schemas),
        skippedSchemas=plan.skipped_schemas,
        loadOrder=[[t.qualified for t in group] for group in plan.groups],
        sequences=[],
        tables=[_keep(previous, table_to_dict(t, datadir)) for t in plan.tables],
        auth=[_keep(previous, table_to_dict(t, datadir)) for t in plan.auth_tables],
    )
    meta.data["sequences"] = read_sequences(_sequence_names(plan), source)
    meta.save()
    remove_partials(datadir.tables)
    remove_partials(datadir.auth)
    return meta


def _previous_entries(datadir: DataDir) -> dict[tuple[str, str], dict[str, Any]]:
    try:
        old = Metadata.load(datadir, require_complete=False)
    except SupamoveError:
        return {}
    return {(e["schema"], e["name"]): e for e in old.tables + old.auth_tables if e.get("complete")}


def _keep(previous: dict[tuple[str, str], dict[str, Any]], entry: dict[str, Any]) -> dict[str, Any]:
    old = previous.get((entry["schema"], entry["name"]))
    if old and old["columns"] == entry["columns"]:
        return old
    return entry


def _is_done(meta: Metadata, datadir: DataDir, table: Table) -> bool:
    entry = meta.entry(table.schema, table.name)
    path = datadir.root / entry["file"]
    return bool(entry["complete"]) and path.exists() and path.stat().st_size == entry["bytes"]


def _resumed(meta: Metadata, table: Table) -> TableExport:
    entry = meta.entry(table.schema, table.name)
    return TableExport(table.schema, table.name, entry["rowCount"], entry["bytes"], 0.0, resumed=True)


def _export_one(source: Endpoint, snapshot: str, table: Table, datadir: DataDir,
                meta: Metadata, progress: Progress) -> TableExport:
    started = time.monotonic()
    progress.start(table.qualified, table.estimated_rows or None)
    path = datadir.table_file(table.schema, table.name)
    try:
        with snapshot_reader(source, snapshot) as conn:
            rows, size, sha = copy_table(conn, table, path, progress)
    except psycopg.errors.InsufficientPrivilege:
        quoted = sql.Identifier(table.schema, table.name).as_string(None)
        raise source.error(f"permission denied reading {table.qualified}",
                           f"let the user in SUPABASE_DB_URL read it (GRANT SELECT ON {quoted} TO that user), "
                           "or use the postgres user") from None
    except psycopg.OperationalError as exc:
        raise source.error(f"lost the source connection while exporting {table.qualified}: {first_line(exc)}",
                           "check the source is up, then run `supamove export` again: finished tables are kept") from None
    progress.finish(table.qualified)
    meta.update(table.schema, table.name, complete=True, rowCount=rows, bytes=size, sha256=sha,
                snapshot=snapshot, exportedAt=now_iso())
    seconds = time.monotonic() - started
    log.debug("exported %s: %d rows, %d bytes in %.1fs", table.qualified, rows, size, seconds)
    return TableExport(table.schema, table.name, rows, size, seconds)


def _sequence_names(plan: ExportPlan) -> list[tuple[str, str]]:
    return sorted({(s.schema, s.name) for t in plan.tables for s in t.sequences})


def read_sequences(names: list[tuple[str, str]], source: Endpoint) -> list[dict[str, Any]]:
    """Each sequence's state, so the target continues where the source was."""
    states = []
    with connect(source, autocommit=True) as conn:
        for schema, name in names:
            row = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
                sql.Identifier(schema, name))).fetchone()
            assert row is not None
            states.append({"schema": schema, "name": name, "lastValue": int(row[0]),
                           "isCalled": bool(row[1])})
    return states
