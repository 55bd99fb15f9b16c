"""The big files' lines converted to COPY text on worker processes, so that Python's work runs on every core.

Converting JSON lines is the import's own processor work, about 3 s per million rows, and Python's
interpreter lock keeps it on one core however many tables load at once: measured on 2 cores, the
import's process was busy 100% of the load while the target's backends waited for it. So the blocks of
each big file go to `--jobs` processes forked once the plan is made (each inherits every converter,
the user mapping included): this process only reads the file (hashing it, for the check at the end of
the COPY), hands each block's offsets to a worker and sends the COPY text back in order.

A block a worker cannot convert the quick way (a line in doubt) is converted here again, where the
lines before it are known, so an error names the file's line as it always did. A worker that dies
leaves its blocks to this process too.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

from supamove.importer.model import ImportPlan, TablePlan
from supamove.log import get_logger

log = get_logger("import")

POOL_BYTES = 16 << 20  # files at least this big are converted on the workers; the others are not worth a hop
AHEAD = 3  # blocks of one load handed out before its first comes back: memory stays flat

Converter = Callable[[list[bytes], Callable[[], int]], bytes]

# Set in this process before the fork, read by the workers: their copy of it never changes.
_converters: dict[tuple[str, str], Converter] = {}
_pool: ProcessPoolExecutor | None = None


class _LineNumbersNeeded(Exception):
    """The block needs the per-row converter, which names lines: only the importing process knows them."""


@contextmanager
def converting(plan: ImportPlan, converter: Callable[[TablePlan, ImportPlan], Converter]) -> Iterator[None]:
    """Workers converting the plan's big files for as long as the load lasts (none with --jobs 1, no big
    file, or no fork on this system)."""
    global _pool
    big = [t for t in plan.tables if not t.done and not t.as_is and (t.entry.bytes or 0) >= POOL_BYTES]
    if plan.options.jobs < 2 or not big or "fork" not in multiprocessing.get_all_start_methods():
        yield
        return
    _converters.update({t.key: converter(t, plan) for t in big})
    pool = started_pool(plan.options.jobs)  # forked now, while the converters are all there
    _pool = pool
    try:
        yield
    finally:
        _pool = None
        _converters.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def started_pool(jobs: int) -> ProcessPoolExecutor | None:
    """`jobs` worker processes, started now; None (said in the log) where they cannot start: the caller
    does the work itself."""
    pool = None
    try:
        pool = worker_pool(jobs)
        list(pool.map(abs, range(jobs)))
        return pool
    # No process to spare (a limit on processes or memory), or no shared semaphores on this system.
    except (OSError, ImportError, NotImplementedError, BrokenProcessPool) as exc:
        log.warning("the worker processes did not start (%s): working in this process", exc)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        return None


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """`jobs` processes forked from this one, which stop when it does, however it ends."""
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"), initializer=_worker_start,
                               initargs=(os.getpid(),))


PR_SET_PDEATHSIG = 1


def _worker_start(parent: int) -> None:
    # Ctrl-C reaches the whole process group: the importing process stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # So does a stop sent to the group (`timeout`, a service manager): it ends a worker as it ends any process.
    # The handler the fork inherited would raise KeyboardInterrupt there, a traceback on the terminal.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # A worker left behind by a killed import would wait for work forever, holding the data directory's
    # lock (its descriptor came with the fork): the rerun would find the directory in use.
    try:
        if ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0:  # Linux: killed with its parent
            if os.getppid() != parent:  # the parent was gone before the call
                os._exit(1)
            return
    except (AttributeError, OSError):
        pass
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def pooled(table: TablePlan) -> bool:
    return _pool is not None and table.key in _converters


def converted_blocks(table: TablePlan, blocks: Iterator[tuple[int, int]], here: Converter,
                     lines_before: Callable[[int], int]) -> Iterator[tuple[bytes, int]]:
    """COPY text and row count of each block (file offset, length), in order, converted on the workers.

    `here` converts a block in this process when a worker could not; `lines_before(rows)` gives the
    file's lines before a block that starts `rows` lines into this load, to name a line in an error.
    """
    waiting: deque[tuple[Future[tuple[bytes | None, int]] | None, int, int]] = deque()
    rows = 0

    def finish() -> tuple[bytes, int]:
        nonlocal rows
        future, offset, length = waiting.popleft()
        text, count = _result(future)
        if text is None:
            lines = read_lines(table.path, offset, length)
            text, count = here(lines, lambda: lines_before(rows)), len(lines)
        rows += count
        return text, count

    for offset, length in blocks:
        waiting.append((_submit(table, offset, length), offset, length))
        if len(waiting) > AHEAD:
            yield finish()
    while waiting:
        yield finish()


def _submit(table: TablePlan, offset: int, length: int) -> Future[tuple[bytes | None, int]] | None:
    pool = _pool
    if pool is None:
        return None
    try:
        return pool.submit(_convert, table.key, table.path, offset, length)
    except (BrokenProcessPool, RuntimeError):  # a worker died, or the pool is shutting down: done here
        return None


def _result(future: Future[tuple[bytes | None, int]] | None) -> tuple[bytes | None, int]:
    if future is None:
        return None, 0
    try:
        return future.result()
    except BrokenProcessPool:
        return None, 0


def _convert(key: tuple[str, str], path: Path, offset: int, length: int) -> tuple[bytes | None, int]:
    """On a worker: the block's COPY text and rows, or None when a line is in doubt."""
    convert = _converters.get(key)
    if convert is None:  # forked before this table's converter was made: the importing process converts it
        return None, 0
    lines = read_lines(path, offset, length)
    try:
        return convert(lines, _no_line_numbers), len(lines)
    except _LineNumbersNeeded:
        return None, len(lines)


def _no_line_numbers() -> int:
    raise _LineNumbersNeeded


def read_lines(path: Path, offset: int, length: int) -> list[bytes]:
    """The lines of `length` bytes at `offset` (whole lines), without their newlines."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        return split_lines(handle.read(length))


def split_lines(data: bytes) -> list[bytes]:
    """Whole lines of a file, without their newlines."""
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()
    return lines
