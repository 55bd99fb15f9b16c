"""Checksums of each table computed as soon as it is loaded, while other tables still export and load.

A caller that loads the tables in parts (`supamove migrate`) hands them to `run_verify(known=...)`, which
then reads once what only the whole can tell (structure, sequences) and the report. The Supabase user ids
left in each table are counted too, once user-mapping.json is final (`mapping_final`). A table that cannot
be checksummed now is simply left to `run_verify`.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from supamove import catalog
from supamove.catalog import Table
from supamove.db import Endpoint, connect
from supamove.log import get_logger
from supamove.metadata import Metadata, TableEntry
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress
from supamove.verify.checksum import Checksum
from supamove.verify.plan import TableComparison, hashes_records
from supamove.verify.pools import Pair, SidePool, read_mapping
from supamove.verify.run import Known, side_checksum, table_checksums
from supamove.verify.structure import TableKey
from supamove.verify.supabase_ids import held_supabase_ids

log = get_logger("verify")
LABEL = "checksums"  # the progress bar: tables checksummed


class AheadChecksums:
    """Both sides' checksums of the tables handed to `add`, `jobs` tables at a time, by table key in `known`."""

    def __init__(self, source: Endpoint, target: Endpoint, datadir: DataDir, jobs: int,
                 progress: Progress | None = None, mapping_final: bool = False) -> None:
        meta = Metadata.load(datadir, require_complete=False)  # the export's schemas: written before any file
        schemas = sorted(set(meta.schemas) | {e.schema for e in meta.tables})
        (self._ours, ours), (self._theirs, theirs) = _relations(source, schemas), _relations(target, schemas)
        self._by_value = ours and theirs
        self._datadir, self._target, self._jobs = datadir, target, max(1, jobs)
        self._pools = {"source": SidePool(source, self._jobs), "target": SidePool(target, self._jobs)}
        self._mapped: SidePool | None = None  # the target's sessions with user-mapping.json, once it is final
        self._json_ids: dict[TableKey, frozenset[str]] | None = None  # the value check's JSON columns, once it is recorded
        self._lock = threading.Lock()
        self._workers = ThreadPoolExecutor(self._jobs, "checksum")
        self._futures: list[Future[None]] = []
        self._sources: dict[TableKey, Future[Checksum]] = {}  # source checksums started before the load
        self._early = ThreadPoolExecutor(self._jobs, "checksum-source")  # apart: a checksum waits for these
        self.progress = progress or NullProgress()
        self.progress.start(LABEL, len(meta.tables))
        self.known: dict[TableKey, Known] = {}
        self._final = mapping_final  # user-mapping.json final: the Supabase ids left can be counted
        self._uncounted: list[tuple[TableKey, Pair]] = []  # checksummed before it was

    def source_first(self, entry: TableEntry) -> None:
        """Start the source's checksum of a table about to load: the source is frozen, and the checksum
        runs while the target loads, so once it is loaded only the target's is left."""
        if entry.key not in self._sources and (pair := self._pair(entry)) is not None:
            self._sources[entry.key] = self._early.submit(side_checksum, pair, "source")
            log.debug("%s: the source's checksum runs while it loads", entry.qualified)

    def add(self, entry: TableEntry) -> None:
        """Checksum a table just loaded (its user ids, if any, remapped with the final user-mapping.json)."""
        self._futures.append(self._workers.submit(self._checksum, entry))

    def close(self) -> dict[TableKey, Known]:
        """Wait for the checksums under way; the checksums by table."""
        try:
            self._workers.shutdown(wait=True, cancel_futures=False)
            self._early.shutdown(wait=True, cancel_futures=False)
            self.progress.finish(LABEL)
        finally:
            for pool in [*self._pools.values(), *([self._mapped] if self._mapped else [])]:
                pool.close()
        return self.known

    def _pair(self, entry: TableEntry) -> Pair | None:
        """The table's work on both sides, or None when a side lacks it (run_verify says what is missing)."""
        comparison = TableComparison(entry.table, self._ours.get(entry.key), self._theirs.get(entry.key), True,
                                     self._by_value, self._json_user_ids().get(entry.key, frozenset()))
        if comparison.source is None or comparison.target is None:
            return None
        src, tgt = comparison.relation("source"), comparison.relation("target")
        pools = {**self._pools, "target": self._mapped_pool()} if tgt.mapped else self._pools
        return Pair(comparison, pools, src, tgt)

    def _checksum(self, entry: TableEntry) -> None:
        if (pair := self._pair(entry)) is None:
            return
        source = self._sources.get(entry.key)
        try:
            if source is None:
                ours, theirs = table_checksums(pair)
            else:
                theirs, ours = side_checksum(pair, "target"), source.result()
        except Exception:  # noqa: BLE001 - run_verify compares this table itself, and names the cause
            log.debug("checksums of %s left to the verification", entry.qualified, exc_info=True)
            return
        with self._lock:
            self.known[entry.key] = Known(pair.src_rel, pair.tgt_rel, (ours, theirs))
            final = self._final
            if not final:
                self._uncounted.append((entry.key, pair))
        self.progress.advance(LABEL)
        if final:
            self._count(entry.key, pair)

    def mapping_final(self) -> None:
        """user-mapping.json is final: the Supabase ids left in the tables checksummed so far are counted now."""
        with self._lock:
            self._final, waiting, self._uncounted = True, self._uncounted, []
        for key, pair in waiting:
            self._futures.append(self._workers.submit(self._count, key, pair))

    def _count(self, key: TableKey, pair: Pair) -> None:
        """The table's Supabase user ids left (the target's sessions with the final mapping's ids)."""
        if not self._datadir.user_mapping.exists():
            return  # verify counts none without it
        started = time.monotonic()
        try:
            held = held_supabase_ids(Pair(pair.plan, {**pair.pools, "target": self._mapped_pool()}, pair.src_rel,
                                          pair.tgt_rel))
        except Exception:  # noqa: BLE001 - run_verify counts this table itself, and names the cause
            log.debug("Supabase ids of %s left to the verification", pair.plan.table.qualified, exc_info=True)
            return
        with self._lock:
            self.known[key].held = (held, time.monotonic() - started)

    def _json_user_ids(self) -> dict[TableKey, frozenset[str]]:
        """The JSON columns the export's value check found user ids in: read from metadata.json until the check
        has recorded them (it ends beside the copies), then kept."""
        with self._lock:
            if self._json_ids is not None:
                return self._json_ids
            meta = Metadata.load(self._datadir, require_complete=False)
            found = meta.json_user_id_columns()
            if meta.user_id_value_check is not None:
                self._json_ids = found
            return found

    def _mapped_pool(self) -> SidePool:
        with self._lock:
            if self._mapped is None:
                self._mapped = SidePool(self._target, self._jobs, read_mapping(self._datadir) or {})
            return self._mapped


def _relations(endpoint: Endpoint, schemas: list[str]) -> tuple[dict[TableKey, Table], bool]:
    """The side's tables, and whether it hashes records."""
    with connect(endpoint, autocommit=True) as conn:
        return {t.key: t for t in catalog.read_relations(conn, schemas)}, hashes_records(conn)
