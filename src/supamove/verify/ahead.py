"""Checksums of each table computed as soon as it is loaded, while other tables still export and load.

A caller that loads the tables in parts (`supamove migrate`) hands them to `run_verify(known=...)`, which
then reads once what only the whole can tell (structure, sequences, Supabase ids left) and the report.
A table that cannot be checksummed now is simply left to `run_verify`.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from supamove import catalog
from supamove.catalog import Table
from supamove.db import Endpoint, connect
from supamove.log import get_logger
from supamove.metadata import Metadata, TableEntry
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress
from supamove.verify.plan import TableComparison
from supamove.verify.pools import Pair, SidePool, read_mapping
from supamove.verify.run import Known, table_checksums
from supamove.verify.structure import TableKey

log = get_logger("verify")
LABEL = "checksums"  # the progress bar: tables checksummed


class AheadChecksums:
    """Both sides' checksums of the tables handed to `add`, `jobs` tables at a time, by table key in `known`."""

    def __init__(self, source: Endpoint, target: Endpoint, datadir: DataDir, jobs: int,
                 progress: Progress | None = None) -> None:
        meta = Metadata.load(datadir, require_complete=False)  # the export's schemas: written before any file
        schemas = sorted(set(meta.schemas) | {e.schema for e in meta.tables})
        self._ours, self._theirs = _relations(source, schemas), _relations(target, schemas)
        self._datadir, self._target, self._jobs = datadir, target, max(1, jobs)
        self._pools = {"source": SidePool(source, self._jobs), "target": SidePool(target, self._jobs)}
        self._mapped: SidePool | None = None  # the target's sessions with user-mapping.json, once it is final
        self._lock = threading.Lock()
        self._workers = ThreadPoolExecutor(self._jobs, "checksum")
        self._futures: list[Future[None]] = []
        self.progress = progress or NullProgress()
        self.progress.start(LABEL, len(meta.tables))
        self.known: dict[TableKey, Known] = {}

    def add(self, entry: TableEntry) -> None:
        """Checksum a table just loaded (its user ids, if any, remapped with the final user-mapping.json)."""
        self._futures.append(self._workers.submit(self._checksum, entry))

    def close(self) -> dict[TableKey, Known]:
        """Wait for the checksums under way; the checksums by table."""
        try:
            self._workers.shutdown(wait=True, cancel_futures=False)
            self.progress.finish(LABEL)
        finally:
            for pool in [*self._pools.values(), *([self._mapped] if self._mapped else [])]:
                pool.close()
        return self.known

    def _checksum(self, entry: TableEntry) -> None:
        comparison = TableComparison(entry.table, self._ours.get(entry.key), self._theirs.get(entry.key), True)
        if comparison.source is None or comparison.target is None:
            return  # run_verify says what is missing
        src, tgt = comparison.relation("source"), comparison.relation("target")
        pools = {**self._pools, "target": self._mapped_pool()} if tgt.mapped else self._pools
        try:
            ours, theirs = table_checksums(Pair(comparison, pools, src, tgt))
        except Exception:  # noqa: BLE001 - run_verify compares this table itself, and names the cause
            log.debug("checksums of %s left to the verification", entry.qualified, exc_info=True)
            return
        self.known[entry.key] = (src, tgt, ours, theirs)
        self.progress.advance(LABEL)

    def _mapped_pool(self) -> SidePool:
        with self._lock:
            if self._mapped is None:
                self._mapped = SidePool(self._target, self._jobs, read_mapping(self._datadir) or {})
            return self._mapped


def _relations(endpoint: Endpoint, schemas: list[str]) -> dict[TableKey, Table]:
    with connect(endpoint, autocommit=True) as conn:
        return {t.key: t for t in catalog.read_relations(conn, schemas)}
