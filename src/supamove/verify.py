"""Step 5: compare the source and the target, table by table, and locate the rows that differ."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import psycopg
from psycopg import sql

from supamove import catalog, checksum
from supamove.catalog import Column, Table
from supamove.checksum import Bound, Checksum, Relation
from supamove.db import Endpoint, connect, first_line
from supamove.errors import ConfigError
from supamove.files import write_json
from supamove.log import get_logger
from supamove.metadata import Metadata, now_iso, table_from_dict
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress
from supamove.users.mapping import UserMapping

log = get_logger("verify")
T = TypeVar("T")
CHUNK_BLOCKS = 4096  # a table larger than twice this many blocks (32 MB) is checksummed in pieces
SEGMENTS = 32  # pieces a differing key range is cut into
LEAF_ROWS = 5000  # a range this small is compared row by row
MAX_BUCKET_DEPTH = 4  # hex digits of the row hash that bucket a table without a key
SHOWN_CHARS = 200  # a value longer than this is cut in the report
EMPTY_TARGET = "target table is empty: run `supamove import`"
PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass
class VerifyOptions:
    skip_checksum: bool = False
    max_diffs: int = 10
    jobs: int = 2
    tables: list[str] = field(default_factory=list)


@dataclass
class TableCheck:
    """One table's verdict, with the reasons for anything less than pass."""

    schema: str
    table: str
    source_rows: int | None = None
    target_rows: int | None = None
    source_checksum: str | None = None
    target_checksum: str | None = None
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    differences: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def status(self) -> str:
        return FAIL if self.failures else WARN if self.warnings else PASS

    @property
    def reason(self) -> str | None:
        return "; ".join(self.failures + self.warnings) or None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "table": self.table, "sourceRows": self.source_rows,
                "targetRows": self.target_rows, "sourceChecksum": self.source_checksum,
                "targetChecksum": self.target_checksum, "status": self.status, "reason": self.reason,
                "differences": self.differences}


@dataclass
class VerifyReport:
    generated_at: str
    source: str
    target: str
    tables: list[TableCheck]
    seconds: float
    checksums: bool
    tables_from: str  # "metadata.json" or "source catalog"

    def count(self, status: str) -> int:
        return sum(1 for t in self.tables if t.status == status)

    @property
    def ok(self) -> bool:
        return self.count(FAIL) == 0

    @property
    def summary(self) -> dict[str, Any]:
        return {"tables": len(self.tables), "pass": self.count(PASS), "warn": self.count(WARN),
                "fail": self.count(FAIL), "sourceRows": sum(t.source_rows or 0 for t in self.tables),
                "targetRows": sum(t.target_rows or 0 for t in self.tables),
                "seconds": round(self.seconds, 3), "checksums": self.checksums}

    def to_dict(self) -> dict[str, Any]:
        return {"generatedAt": self.generated_at, "source": self.source, "target": self.target,
                "tablesFrom": self.tables_from, "tables": [t.to_dict() for t in self.tables],
                "summary": self.summary}


# --- planning: which tables, which columns --------------------------------------------------------


@dataclass
class TablePlan:
    """What is compared for one table, from the export's view and both live catalogs."""

    table: Table  # from metadata.json, else the source catalog
    source: Table | None
    target: Table | None
    map_user_ids: bool

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns on both sides, in name order; user-id columns only when they can be mapped back."""
        assert self.source and self.target
        theirs = {c.name for c in self.target.columns}
        skip = set() if self.map_user_ids else set(self.table.user_id_columns)
        return tuple(sorted(c.name for c in self.source.columns if c.name in theirs and c.name not in skip))

    @property
    def row_key(self) -> tuple[str, ...]:
        """The columns that name a row in the report, when all are compared."""
        key = self.table.row_key
        return key if key and set(key) <= set(self.columns) else ()

    @property
    def key(self) -> tuple[str, ...]:
        """The key that ranges are cut on: none when it holds user ids, which sort apart on the two sides."""
        key = self.row_key
        return () if self.map_user_ids and set(key) & set(self.table.user_id_columns) else key

    def relation(self, side: str) -> Relation:
        live = self.source if side == "source" else self.target
        assert live is not None
        mapped: dict[str, bool] = {}
        if side == "target" and self.map_user_ids:
            for name in self.table.user_id_columns:
                col = live.column(name)
                if col is not None and name in self.columns:
                    mapped[name] = _is_array(col)
        return Relation(live.schema, live.name, live.partitioned, self.columns, self.key, mapped)

    def column_warnings(self, checksums: bool = True) -> list[str]:
        assert self.source and self.target
        ours, theirs = {c.name for c in self.source.columns}, {c.name for c in self.target.columns}
        notes = [f"column {c} is in the source only: not compared" for c in sorted(ours - theirs)]
        notes += [f"column {c} is in the target only: not compared" for c in sorted(theirs - ours)]
        unmapped = [c for c in self.table.user_id_columns if c in ours & theirs]
        if unmapped and not self.map_user_ids and checksums:
            notes.append(f"user-id column{'s' if len(unmapped) > 1 else ''} {', '.join(unmapped)} not compared: "
                         "no user-mapping.json yet (run `supamove migrate-users`)")
        return notes


def _is_array(col: Column) -> bool:
    return (col.base_type or col.type).endswith("]")


def plan_tables(source: Endpoint, target: Endpoint, datadir: DataDir, options: VerifyOptions,
                has_mapping: bool) -> tuple[list[TablePlan], str]:
    """The tables to compare: those of metadata.json, else the source catalog's public tables."""
    meta = Metadata.load(datadir) if datadir.metadata.exists() else None
    with connect(source, autocommit=True) as conn:
        if meta is not None:
            tables, origin = [table_from_dict(e) for e in meta.tables], "metadata.json"
        else:
            tables, origin = catalog.read_tables(conn, ["public"]), "source catalog"
        tables = [t for t in tables if catalog.selected(t, options.tables)]
        schemas = sorted({t.schema for t in tables})
        ours = {t.key: t for t in catalog.read_relations(conn, schemas)}
    with connect(target, autocommit=True) as conn:
        theirs = {t.key: t for t in catalog.read_relations(conn, schemas)}
    if options.tables and not tables:
        raise ConfigError(f"--tables {' '.join(options.tables)} matches no table",
                          fix="check the pattern (name or schema.name, shell patterns)")
    return [TablePlan(t, ours.get(t.key), theirs.get(t.key), has_mapping) for t in tables], origin


# --- connections: a pool of sessions per side, so both sides always work at once ---------------------


class SidePool:
    """`size` threads with one connection each to one side; the target's carry the user mapping."""

    def __init__(self, endpoint: Endpoint, size: int, mapping: dict[str, str] | None = None) -> None:
        self.endpoint, self.mapping = endpoint, mapping
        self._threads = ThreadPoolExecutor(size, thread_name_prefix=endpoint.side)
        self._local = threading.local()
        self._conns: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    def submit(self, work: Callable[[psycopg.Connection], T]) -> Future[T]:
        return self._threads.submit(self._call, work)

    def _call(self, work: Callable[[psycopg.Connection], T]) -> T:
        try:
            return work(self._conn())
        except psycopg.OperationalError as exc:
            raise self.endpoint.error(f"lost the {self.endpoint.side} database connection: {first_line(exc)}",
                                      "check the server is up, then run `supamove verify` again") from None

    def _conn(self) -> psycopg.Connection:
        if not hasattr(self._local, "conn"):
            conn = connect(self.endpoint, autocommit=True)
            with self._lock:
                self._conns.append(conn)
            if self.mapping is not None:
                load_user_map(conn, self.mapping)
            self._local.conn = conn
        return self._local.conn  # type: ignore[no-any-return]

    def close(self) -> None:
        self._threads.shutdown(cancel_futures=True)
        for conn in self._conns:
            conn.close()


def load_user_map(conn: psycopg.Connection, mapping: dict[str, str]) -> None:
    """The mapping, Stack Auth id to Supabase id, in a temporary table of this session."""
    conn.execute("CREATE TEMP TABLE supamove_user_map (stack text PRIMARY KEY, supabase text NOT NULL)")
    with conn.cursor().copy("COPY pg_temp.supamove_user_map (stack, supabase) FROM STDIN") as copy:
        for stack, supabase in mapping.items():
            copy.write_row((stack, supabase))
    conn.execute("ANALYZE pg_temp.supamove_user_map")


def read_mapping(datadir: DataDir) -> dict[str, str] | None:
    """Stack Auth id to Supabase id (both lowercase), or None when there is no mapping file yet."""
    if not datadir.user_mapping.exists():
        return None
    entries = UserMapping.load(datadir.user_mapping).entries.values()
    return {e["stackAuthUserId"].lower(): e["supabaseUserId"].lower() for e in entries}


def fetch_all(cur: psycopg.Cursor[Any]) -> list[Any]:
    return cur.fetchall()


@dataclass
class Pair:
    """One table's work on both sides: each query is run on the source and the target at once."""

    plan: TablePlan
    pools: dict[str, SidePool]
    src_rel: Relation
    tgt_rel: Relation

    @overload
    def both(self, make: Callable[[Relation], sql.Composed],
             params: Any = None) -> tuple[list[Any], list[Any]]: ...

    @overload
    def both(self, make: Callable[[Relation], sql.Composed], params: Any = None, *,
             fetch: Callable[[psycopg.Cursor[Any]], T]) -> tuple[T, T]: ...

    def both(self, make: Callable[[Relation], sql.Composed], params: Any = None,
             fetch: Callable[[psycopg.Cursor[Any]], Any] = fetch_all) -> tuple[Any, Any]:
        """Run the query built for each side on both sides in parallel."""
        mine = self.submit("source", make(self.src_rel), params, fetch)
        theirs = self.submit("target", make(self.tgt_rel), params, fetch)
        return _result(mine, theirs), theirs.result()

    def run(self, side: str, query: sql.SQL | sql.Composed, params: Any,
            fetch: Callable[[psycopg.Cursor[Any]], T]) -> T:
        return self.submit(side, query, params, fetch).result()

    def submit(self, side: str, query: sql.SQL | sql.Composed, params: Any,
               fetch: Callable[[psycopg.Cursor[Any]], T]) -> Future[T]:
        def work(conn: psycopg.Connection) -> T:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return fetch(cur)

        return self.pools[side].submit(work)


def _result(future: Future[T], other: Future[Any]) -> T:
    """The result of `future`, after waiting for `other` too, so no query outlives the table's work."""
    try:
        return future.result()
    except BaseException:
        try:
            other.result()
        except Exception:  # the first failure is the one reported
            pass
        raise


# --- the comparison --------------------------------------------------------------------------------


def run_verify(source: Endpoint, target: Endpoint, datadir: DataDir, options: VerifyOptions,
               progress: Progress | None = None) -> VerifyReport:
    """Compare every table on both sides and write verification-report.json."""
    progress = progress or NullProgress()
    started = time.monotonic()
    datadir.check_exists()
    mapping = read_mapping(datadir)
    plans, origin = plan_tables(source, target, datadir, options, mapping is not None)
    needs_map = mapping is not None and any(p.table.user_id_columns for p in plans)
    jobs = max(1, options.jobs)
    pools = {"source": SidePool(source, jobs), "target": SidePool(target, jobs, mapping if needs_map else None)}
    progress.start("tables", len(plans))
    try:
        with ThreadPoolExecutor(jobs, "verify") as workers:
            def one(plan: TablePlan) -> TableCheck:
                check = verify_table(plan, pools, options)
                progress.advance("tables")
                return check

            order = sorted(plans, key=lambda p: -p.table.estimated_rows)
            done = {c.qualified: c for c in workers.map(one, order)}
    finally:
        for pool in pools.values():
            pool.close()
    progress.finish("tables")
    checks = [done[p.table.qualified] for p in plans]
    report = VerifyReport(now_iso(), source.redacted, target.redacted, checks, time.monotonic() - started,
                          not options.skip_checksum, origin)
    datadir.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_json(datadir.verification_report, report.to_dict())
    return report


def verify_table(plan: TablePlan, pools: dict[str, SidePool], options: VerifyOptions) -> TableCheck:
    started = time.monotonic()
    check = TableCheck(plan.table.schema, plan.table.name)
    if plan.source is None:
        check.failures.append(f"source table {plan.table.qualified} does not exist")
    if plan.target is None:
        check.failures.append(f"target table {plan.table.qualified} does not exist (run `supamove import`)")
    if check.failures:
        return check
    pair = Pair(plan, pools, plan.relation("source"), plan.relation("target"))
    try:
        compare(pair, check, options)
    except psycopg.Error as exc:
        check.failures.append(f"could not compare: {first_line(exc)}")
    check.seconds = time.monotonic() - started
    log.debug("verified %s: %s in %.2fs", check.qualified, check.status, check.seconds)
    return check


def compare(pair: Pair, check: TableCheck, options: VerifyOptions) -> None:
    if options.skip_checksum:
        check.source_rows, check.target_rows = pair.both(checksum.count_query, fetch=_one)
    else:
        ours, theirs = table_checksums(pair)
        check.source_rows, check.target_rows = ours[0], theirs[0]
        check.source_checksum, check.target_checksum = digest(ours), digest(theirs)
    if check.target_rows == 0 and check.source_rows:
        check.failures.append(EMPTY_TARGET)
        return
    check.warnings += pair.plan.column_warnings(checksums=not options.skip_checksum)
    if check.source_rows != check.target_rows:
        check.failures.append(f"row counts differ: source {check.source_rows:,}, target {check.target_rows:,}")
    if check.source_checksum != check.target_checksum:
        check.failures.append("contents differ")
        check.differences = locate(pair, check, options.max_diffs)
        check.failures += unmapped_ids(pair)
    check.failures += sequence_problems(pair)


def table_checksums(pair: Pair) -> tuple[Checksum, Checksum]:
    """Both sides' checksums; a big table is cut into block ranges checksummed at the same time."""
    ranges = pair.both(lambda rel: checksum.size_query(rel), fetch=_block_ranges)
    futures = [[pair.submit(side, checksum.checksum_query(rel, tids), None, _sum) for tids in ranges[i]]
               for i, (side, rel) in enumerate((("source", pair.src_rel), ("target", pair.tgt_rel)))]
    wait(futures[0] + futures[1])
    return _add([f.result() for f in futures[0]]), _add([f.result() for f in futures[1]])


def _block_ranges(cur: psycopg.Cursor[Any]) -> list[checksum.Blocks]:
    """Cut a table into CHUNK_BLOCKS pieces, when the server can scan block ranges (PostgreSQL 14+)."""
    row = cur.fetchone()
    assert row is not None
    blocks, version, partitioned = int(row[0]), int(row[1]), bool(row[2])
    if version < 140000 or partitioned or blocks < 2 * CHUNK_BLOCKS:
        return [(None, None)]
    cuts = list(range(CHUNK_BLOCKS, blocks, CHUNK_BLOCKS))
    # Open at both ends: rows written after the size was read still count.
    return list(zip([None, *cuts], [*cuts, None], strict=True))


def _add(parts: list[Checksum]) -> Checksum:
    return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)


def _one(cur: psycopg.Cursor[Any]) -> int:
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def _value(cur: psycopg.Cursor[Any]) -> Any:
    row = cur.fetchone()
    assert row is not None
    return row[0]


def _sum(cur: psycopg.Cursor[Any]) -> Checksum:
    row = cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def digest(value: Checksum) -> str:
    """The checksum as the report shows it: 32 hex digits standing for (rows, high sum, low sum)."""
    return hashlib.md5(f"{value[0]}:{value[1]}:{value[2]}".encode(), usedforsecurity=False).hexdigest()


def unmapped_ids(pair: Pair) -> list[str]:
    problems = []
    for column in pair.tgt_rel.mapped:
        rows = pair.run("target", checksum.unmapped_query(pair.tgt_rel, column), None, _one)
        if rows:
            rows_hold = "1 target row holds" if rows == 1 else f"{rows:,} target rows hold"
            problems.append(f"{rows_hold} a user id in {column} that user-mapping.json "
                            "does not map back to a Supabase user")
    return problems


# --- locating differences: key ranges, or hash buckets for a table without a key ---------------------


def locate(pair: Pair, check: TableCheck, budget: int) -> list[dict[str, Any]]:
    if budget <= 0:
        return []
    rows = max(check.source_rows or 0, check.target_rows or 0)
    if pair.plan.key:
        found: list[dict[str, Any]] = []
        narrow(pair, None, None, rows, budget, found)
        return found[:budget]
    return locate_multiset(pair, rows, budget)


def narrow(pair: Pair, low: Bound, high: Bound, rows: int, budget: int, found: list[dict[str, Any]]) -> None:
    """Bisect a differing key range: checksum its segments on both sides, recurse into those that differ."""
    if rows <= LEAF_ROWS:
        found += compare_rows(pair, low, high, budget - len(found))
        return
    step = math.ceil(rows / SEGMENTS)
    ours_bounds, theirs_bounds = pair.both(lambda rel: checksum.split_points_query(rel, low, high, step),
                                           fetch=lambda c: [tuple(r) for r in c])
    # Cut by the keys of the side holding more rows here, so every segment shrinks.
    bounds = theirs_bounds if len(theirs_bounds) > len(ours_bounds) else ours_bounds
    if not bounds:
        found += compare_rows(pair, low, high, budget - len(found))
        return
    ours, theirs = pair.both(lambda rel: checksum.segments_query(rel, low, high, bounds),
                             fetch=lambda c: {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in c})
    edges: list[Bound] = [low, *bounds, high]
    for i in range(len(bounds) + 1):
        if len(found) >= budget:
            return
        a, b = ours.get(i, (0, 0, 0)), theirs.get(i, (0, 0, 0))
        if a != b:
            narrow(pair, edges[i], edges[i + 1], max(a[0], b[0]), budget, found)


def compare_rows(pair: Pair, low: Bound, high: Bound, budget: int) -> list[dict[str, Any]]:
    """Row hashes keyed by primary key on both sides: rows missing, extra or changed."""
    size = len(pair.plan.key)
    ours, theirs = pair.both(lambda rel: checksum.row_hashes_query(rel, low, high),
                             fetch=lambda c: [(tuple(r[:size]), r[size]) for r in c])
    mine, yours = _by_key(ours), _by_key(theirs)
    diffs: list[dict[str, Any]] = []
    changed: list[tuple[str, ...]] = []
    for key in list(dict.fromkeys([k for k, _ in ours] + [k for k, _ in theirs])):
        if len(diffs) + len(changed) >= budget:
            break
        a, b = mine.get(key, Counter()), yours.get(key, Counter())
        if a == b:
            continue
        if a and b:
            changed.append(key)
        else:
            diffs.append({"kind": "missing" if a else "extra", "key": _key_dict(pair, key),
                          **({"count": sum((a or b).values())} if sum((a or b).values()) > 1 else {})})
    diffs += changed_rows(pair, low, high, changed)
    order = {k: i for i, k in enumerate(dict.fromkeys([k for k, _ in ours] + [k for k, _ in theirs]))}
    diffs.sort(key=lambda d: order[tuple(d["key"][k] for k in pair.plan.key)])
    return diffs


def _by_key(rows: list[tuple[tuple[str, ...], str]]) -> dict[tuple[str, ...], Counter[str]]:
    out: dict[tuple[str, ...], Counter[str]] = {}
    for key, row_hash in rows:
        out.setdefault(key, Counter())[row_hash] += 1
    return out


def _key_dict(pair: Pair, key: tuple[str, ...]) -> dict[str, str]:
    return dict(zip(pair.plan.key, key, strict=True))


def changed_rows(pair: Pair, low: Bound, high: Bound, keys: list[tuple[str, ...]]) -> list[dict[str, Any]]:
    """For rows on both sides that differ: which columns, and their canonical texts."""
    if not keys:
        return []
    size = len(pair.plan.key)
    arrays = [list(column) for column in zip(*keys, strict=True)]
    ours, theirs = pair.both(lambda rel: checksum.rows_by_key_query(rel, low, high), arrays,
                             fetch=lambda c: {tuple(r[:size]): r[size:] for r in c})
    diffs = []
    for key in keys:
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None:
            continue
        columns = [{"column": name, "source": shown(x), "target": shown(y)}
                   for name, x, y in zip(pair.plan.columns, a, b, strict=True) if x != y]
        diffs.append({"kind": "changed", "key": _key_dict(pair, key), "columns": columns})
    return diffs


def shown(value: str | None) -> str | None:
    if value is None or len(value) <= SHOWN_CHARS:
        return value
    return f"{value[:SHOWN_CHARS]}… ({len(value):,} characters)"


def locate_multiset(pair: Pair, rows: int, budget: int) -> list[dict[str, Any]]:
    """A table without a key: bucket rows by their hash's first digits, then compare hash counts."""
    depth = min(MAX_BUCKET_DEPTH, max(0, math.ceil(math.log(max(rows, 1) / LEAF_ROWS, 16))))
    if depth == 0:
        prefixes = [""]
    else:
        ours, theirs = pair.both(lambda rel: checksum.buckets_query(rel, depth),
                                 fetch=lambda c: {r[0]: tuple(r[1:]) for r in c})
        prefixes = sorted(p for p in set(ours) | set(theirs) if ours.get(p) != theirs.get(p))[:budget]
    counts = pair.both(lambda rel: checksum.hash_counts_query(rel, depth), [prefixes],
                       fetch=lambda c: Counter({r[0]: int(r[1]) for r in c}))
    missing, extra = counts[0] - counts[1], counts[1] - counts[0]
    wanted = sorted(missing)[:budget] + sorted(extra)[:budget]
    if not wanted:
        return []
    texts = pair.both(checksum.rows_by_hash_query, [wanted], fetch=lambda c: {r[0]: r[1:] for r in c})
    rows_of: dict[str, list[tuple[str, int, dict[str, str | None]]]] = {"missing": [], "extra": []}
    for kind, side, excess in (("missing", 0, missing), ("extra", 1, extra)):
        for row_hash in sorted(excess):
            values = texts[side].get(row_hash)
            if values is not None:
                rows_of[kind].append((row_hash, excess[row_hash], dict(zip(pair.plan.columns, values, strict=True))))
    return pair_by_key(pair.plan.row_key, rows_of["missing"], rows_of["extra"])[:budget]


def pair_by_key(key: tuple[str, ...], missing: list[tuple[str, int, dict[str, str | None]]],
                extra: list[tuple[str, int, dict[str, str | None]]]) -> list[dict[str, Any]]:
    """Rows found only on one side; a missing and an extra row with the same key are one changed row."""
    def key_of(row: dict[str, str | None]) -> tuple[str | None, ...] | None:
        return tuple(row[k] for k in key) if key else None

    extras = {key_of(row): (count, row) for _, count, row in extra if count == 1 and key}
    diffs: list[dict[str, Any]] = []
    paired = set()
    for _, count, row in missing:
        other = extras.get(key_of(row)) if count == 1 and key else None
        if other is not None:
            paired.add(key_of(row))
            diffs.append({"kind": "changed", "key": dict(zip(key, key_of(row) or (), strict=True)),
                          "columns": [{"column": n, "source": shown(v), "target": shown(other[1][n])}
                                      for n, v in row.items() if other[1][n] != v]})
        else:
            diffs.append(_unmatched("missing", key, count, row))
    diffs += [_unmatched("extra", key, count, row) for _, count, row in extra
              if not (count == 1 and key and key_of(row) in paired)]
    return diffs


def _unmatched(kind: str, key: tuple[str, ...], count: int, row: dict[str, str | None]) -> dict[str, Any]:
    found: dict[str, Any] = {"kind": kind}
    if key:
        found["key"] = {k: row[k] for k in key}
    found["count"] = count
    found["row"] = {n: shown(v) for n, v in row.items()}
    return found


# --- sequences ------------------------------------------------------------------------------------

SEQUENCE_SQL = """
SELECT s.seqrelid::regclass::text, coalesce(pg_sequence_last_value(s.seqrelid) + s.seqincrement, s.seqstart),
       s.seqincrement
FROM pg_sequence s WHERE s.seqrelid = pg_get_serial_sequence(format('%%I.%%I', %s::text, %s::text), %s)::regclass
"""


def sequence_problems(pair: Pair) -> list[str]:
    """A target sequence whose next value collides with existing rows or falls behind the source's."""
    assert pair.plan.source and pair.plan.target
    problems = []
    for ref in pair.plan.source.sequences:
        ours = pair.run("source", sql.SQL(SEQUENCE_SQL), (pair.plan.source.schema, pair.plan.source.name, ref.column),
                        lambda c: c.fetchone())
        theirs = pair.run("target", sql.SQL(SEQUENCE_SQL), (pair.plan.target.schema, pair.plan.target.name,
                                                              ref.column), lambda c: c.fetchone())
        if theirs is None:
            problems.append(f"column {ref.column} has no sequence or identity in the target")
            continue
        name, upcoming, step = theirs
        if step < 0:
            continue
        highest = pair.run("target", sql.SQL("SELECT max({}) FROM {}").format(
            sql.Identifier(ref.column), pair.tgt_rel.source), None, _value)
        if highest is not None and upcoming <= highest:
            problems.append(f"sequence {name} would next give {upcoming}, which collides with existing rows "
                            f"(max({ref.column}) = {highest})")
        elif ours is not None and upcoming < ours[1]:
            problems.append(f"sequence {name} would next give {upcoming}, behind the source's {ours[1]}")
    return problems
