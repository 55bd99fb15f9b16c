"""The comparison: every table checksummed on both sides at once, differences located, the report written."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from supamove.clock import now_iso
from supamove.db import Endpoint, first_line
from supamove.errors import DataFileError
from supamove.files import read_json, write_json
from supamove.locks import LockWatch
from supamove.log import get_logger
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress
from supamove.verify import checksum, sequences, structure
from supamove.verify.auth import auth_checks
from supamove.verify.checksum import Checksum, Relation
from supamove.verify.large_objects import large_object_check
from supamove.verify.locate import locate
from supamove.verify.model import (
    EMPTY_TARGET,
    WRITTEN_SINCE,
    TableCheck,
    VerifyOptions,
    VerifyReport,
)
from supamove.verify.plan import TableComparison, VerifyPlan, plan_tables
from supamove.verify.pools import Pair, SidePool, fetch_int, fetch_value, read_mapping
from supamove.verify.sequences import (
    SeqKey,
    State,
    free_sequence_checks,
    read_states,
    sequence_problems,
)
from supamove.verify.structure import Shape, TableKey
from supamove.verify.supabase_ids import Held, count_supabase_ids
from supamove.verify.views import view_checks
from supamove.words import counted

log = get_logger("verify")


@dataclass
class Known:
    """A table's checksums computed before the run (as it was loaded), with the relations they were read as;
    and its Supabase user ids left, once counted (the mapping final), with the seconds that took."""

    source: Relation
    target: Relation
    checksums: tuple[Checksum, Checksum]
    held: tuple[Held, float] | None = None


ROWS = {False: "rows compared", True: "rows counted"}  # a bar of its own, beside the tables' (by --skip-checksum)
CHUNK_BLOCKS = 4096  # a table larger than twice this many blocks (32 MB) is checksummed in pieces


@dataclass
class Context:
    """What every table's comparison reads besides its own rows: both sides' structures and sequence states."""

    pools: dict[str, SidePool]
    options: VerifyOptions
    shapes: tuple[dict[TableKey, Shape], dict[TableKey, Shape]]
    states: dict[str, dict[SeqKey, State]]
    kept: set[tuple[str, str, str]]
    mapping: bool
    known: Mapping[TableKey, Known] = field(default_factory=dict)
    exported: frozenset[TableKey] | None = None  # the export's tables: a foreign key into another only warns


def run_verify(source: Endpoint, target: Endpoint, datadir: DataDir, options: VerifyOptions,
               progress: Progress | None = None, known: Mapping[TableKey, Known] | None = None) -> VerifyReport:
    """Compare every table on both sides and write verification-report.json.

    `known` holds checksums a caller computed already (`verify.ahead`, as each table was loaded): a table's
    are used when they were read as this run reads the table, its rows unchanged since.
    """
    progress = progress or NullProgress()
    datadir.check_exists()
    with LockWatch(source, "verify"), LockWatch(target, "verify"):
        return _verify(source, target, datadir, options, progress, known)


def _verify(source: Endpoint, target: Endpoint, datadir: DataDir, options: VerifyOptions, progress: Progress,
            known: Mapping[TableKey, Known] | None) -> VerifyReport:
    started = time.monotonic()
    mapping = read_mapping(datadir)
    plan = plan_tables(source, target, datadir, options, mapping is not None)
    log.debug("timing: planned in %.3fs", time.monotonic() - started)
    present = [p.table.key for p in plan.tables if p.source is not None and p.target is not None]
    shapes = structure.read_both(source, target, present)
    states = {"source": read_states(source, _sequence_names(plan, "source")),
              "target": read_states(target, _sequence_names(plan, "target"))}
    jobs = max(1, options.jobs)
    pools = {"source": SidePool(source, jobs), "target": SidePool(target, jobs, mapping)}
    context = Context(pools, options, shapes, states, plan.kept, mapping is not None, known or {}, plan.exported)
    try:
        done = _compare_tables(plan, context, jobs, progress)
    finally:
        for pool in pools.values():
            pool.close()
    checks = [done[p.table.qualified] for p in plan.tables] + plan.left_out
    keep_full = options.skip_checksum and holds_full_verification(datadir.verification_report)
    path = datadir.verification_counts_report if keep_full else datadir.verification_report
    report = VerifyReport(now_iso(), source.redacted, target.redacted, checks, time.monotonic() - started,
                          not options.skip_checksum, plan.origin, path,
                          free_sequence_checks(plan.sequences, states), full_report_kept=keep_full,
                          views=view_checks(source, target, plan.view_schemas), auth=auth_checks(source, datadir),
                          large_objects=None if options.tables or options.before_export else large_object_check(
                              source, target))
    datadir.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_json(path, report.to_dict())
    return report


def _compare_tables(plan: VerifyPlan, context: Context, jobs: int, progress: Progress) -> dict[str, TableCheck]:
    """Every table's verdict, `jobs` tables at a time, by qualified name."""
    rows = ROWS[context.options.skip_checksum]
    progress.start("tables", len(plan.tables))
    progress.start(rows, sum(p.table.estimated_rows for p in plan.tables) or None)

    def one(table: TableComparison) -> TableCheck:
        check = verify_table(table, context)
        progress.advance("tables")
        progress.advance(rows, max(check.source_rows or 0, check.target_rows or 0))
        return check

    with ThreadPoolExecutor(jobs, "verify") as workers:
        # Biggest first, so the longest table does not start last and finish alone.
        order = sorted(plan.tables, key=lambda p: -p.table.estimated_rows)
        done = {c.qualified: c for c in workers.map(one, order)}
    progress.finish("tables")
    progress.finish(rows)
    return done


def _sequence_names(plan: VerifyPlan, side: str) -> list[SeqKey]:
    """The sequences of the compared tables on one side, and the export's sequences no table uses."""
    tables = [p.source if side == "source" else p.target for p in plan.tables]
    return [s.key for t in tables if t is not None for s in sequences.used_sequences(t)] + plan.sequences


def holds_full_verification(path: Path) -> bool:
    """Whether the report at `path` is of a full verification (checksums): a counts-only run never replaces it."""
    try:
        data = read_json(path, "verify", missing_ok=True)
    except DataFileError:  # a damaged report is replaced
        return False
    return isinstance(data, dict) and isinstance(data.get("summary"), dict) and data["summary"].get("checksums") is True


def verify_table(plan: TableComparison, context: Context) -> TableCheck:
    """One table's verdict; a query the server refuses fails this table only."""
    started = time.monotonic()
    check = TableCheck(plan.table.schema, plan.table.name)
    if plan.source is None:
        check.failures.append(f"source table {plan.table.qualified} does not exist")
    if plan.target is None:
        check.failures.append(f"target table {plan.table.qualified} does not exist (run `supamove import`)")
    if check.failures:
        _count_the_side_there(plan, context, check)
        return check
    found = structure.compare_shapes(context.shapes[0].get(plan.table.key, Shape()),
                                     context.shapes[1].get(plan.table.key, Shape()), context.exported)
    check.failures += found.failures
    check.warnings += found.warnings
    pair = Pair(plan, context.pools, plan.relation("source"), plan.relation("target"))
    try:
        compare(pair, check, context)
    except psycopg.Error as exc:
        check.failures.append(f"could not compare: {first_line(exc)}")
    check.seconds = time.monotonic() - started
    log.debug("verified %s: %s in %.2fs", check.qualified, check.status, check.seconds)
    return check


def _count_the_side_there(plan: TableComparison, context: Context, check: TableCheck) -> None:
    """The rows of the side a table exists on: the totals then show what is missing from the other."""
    side = "source" if plan.source is not None else "target" if plan.target is not None else None
    if side is None:
        return
    try:
        only = sql.SQL("" if plan.table.partitioned else "ONLY ")  # not the tables inheriting from it
        query = sql.SQL("SELECT count(*) FROM {}{}").format(only, sql.Identifier(*plan.table.key))
        rows = context.pools[side].submit(lambda conn: fetch_int(conn.execute(query))).result()
    except psycopg.Error as exc:
        check.failures.append(f"could not count the {side}'s rows: {first_line(exc)}")
        return
    if side == "source":
        check.source_rows = rows
    else:
        check.target_rows = rows


def compare(pair: Pair, check: TableCheck, context: Context) -> None:
    """Counts (and checksums), then the differing rows, unmapped and leftover user ids, and sequences."""
    options, known = context.options, _known(pair, context)
    if options.skip_checksum:
        check.source_rows, check.target_rows = pair.both(checksum.count_query, fetch=fetch_int)
    else:
        ours, theirs = known.checksums if known is not None else table_checksums(pair)
        check.source_rows, check.target_rows = ours[0], theirs[0]
        check.source_checksum, check.target_checksum = digest(ours), digest(theirs)
    if check.target_rows == 0 and check.source_rows:
        check.failures.append(EMPTY_TARGET)
        return
    check.warnings += pair.plan.column_warnings(checksums=not options.skip_checksum)
    if check.source_rows != check.target_rows:
        check.failures.append(f"row counts differ: source {check.source_rows:,}, target {check.target_rows:,}")
    exported = pair.plan.exported_rows
    if exported is not None and check.source_rows is not None and check.source_rows != exported:
        check.failures.append(f"{WRITTEN_SINCE} (it recorded {counted(exported, 'row')})")
    if check.source_checksum != check.target_checksum:
        check.failures.append("contents differ")
        if not any(f.startswith(WRITTEN_SINCE) for f in check.failures) and (written := written_since(pair)):
            check.failures.append(f"{WRITTEN_SINCE} ({counted(written, 'row')} inserted or updated after its "
                                  "snapshot)")
        rows = max(check.source_rows or 0, check.target_rows or 0)
        found = locate(pair, rows, options.max_diffs + 1)  # one more than shown: whether there are more
        check.differences, check.more_differences = found[:options.max_diffs], len(found) > options.max_diffs
        check.failures += unmapped_ids(pair)
    if context.mapping:
        count_supabase_ids(pair, check, {c for s, t, c in context.kept if (s, t) == pair.plan.table.key},
                           known.held if known is not None else None)
    check.failures += sequence_problems(pair, context.states)


def written_since(pair: Pair) -> int | None:
    """The source rows inserted or updated after the table's export (None: not known)."""
    xids = pair.plan.exported_xids
    if xids is None:
        return None
    written: int | None = pair.run("source", checksum.written_since_query(pair.src_rel), (xids,), fetch_value)
    return written


def _known(pair: Pair, context: Context) -> Known | None:
    """What was computed of the table before this run, when it was read as this run reads it."""
    known = context.known.get(pair.plan.table.key)
    if known is not None and (known.source, known.target) == (pair.src_rel, pair.tgt_rel):
        log.debug("%s: checksums computed when it was loaded", pair.plan.table.qualified)
        return known
    return None


def table_checksums(pair: Pair) -> tuple[Checksum, Checksum]:
    """Both sides' checksums; a big table is cut into block ranges checksummed at the same time."""
    ranges = pair.both(lambda rel: checksum.size_query(rel), fetch=_block_ranges)
    ours, theirs = (_range_checksums(pair, side, cuts) for side, cuts in zip(SIDES, ranges, strict=True))
    wait(ours + theirs)
    return _add([f.result() for f in ours]), _add([f.result() for f in theirs])


def side_checksum(pair: Pair, side: str) -> Checksum:
    """One side's checksum of the table, cut into block ranges as `table_checksums` cuts it."""
    cuts = pair.run(side, checksum.size_query(_relation(pair, side)), None, _block_ranges)
    futures = _range_checksums(pair, side, cuts)
    wait(futures)
    return _add([f.result() for f in futures])


SIDES = ("source", "target")


def _relation(pair: Pair, side: str) -> Relation:
    return pair.src_rel if side == "source" else pair.tgt_rel


def _range_checksums(pair: Pair, side: str, cuts: list[checksum.Blocks]) -> list[Future[Checksum]]:
    """One side's block ranges, each checksummed on the side's pool."""
    rel = _relation(pair, side)
    return [pair.submit(side, checksum.checksum_query(rel, tids), None, _sum) for tids in cuts]


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


def _sum(cur: psycopg.Cursor[Any]) -> Checksum:
    row = cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def digest(value: Checksum) -> str:
    """The checksum as the report shows it: 32 hex digits standing for (rows, and the two sums)."""
    return hashlib.md5(f"{value[0]}:{value[1]}:{value[2]}".encode(), usedforsecurity=False).hexdigest()


def unmapped_ids(pair: Pair) -> list[str]:
    """For each user-id column mapped back: how many target rows hold an id the mapping does not know."""
    problems = []
    for column in pair.tgt_rel.mapped:
        rows = pair.run("target", checksum.unmapped_query(pair.tgt_rel, column), None, fetch_int)
        if rows:
            rows_hold = "1 target row holds" if rows == 1 else f"{rows:,} target rows hold"
            problems.append(f"{rows_hold} a user id in {column} that user-mapping.json "
                            "does not map back to a Supabase user")
    return problems
