"""When each planned group loads: on N connections at once, parents committed before their children."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from supamove.db import Endpoint, connect, first_line
from supamove.importer.model import ImportPlan, TableImport, TablePlan

Key = tuple[str, str]


@dataclass
class Job:
    """One group's load: the groups whose commit it waits for, the tables outside it its transaction locks."""

    group: list[TablePlan]
    after: set[int]
    locks: set[Key]
    weight: int  # the bytes of its files and of every group waiting on it: the longest chain starts first


def plan_jobs(plan: ImportPlan) -> list[Job]:
    """With FKs enforced a group waits for the groups it references, and groups that reference one table
    load one after the other: re-adding a foreign key locks the referenced table until COMMIT. With
    --disable-fk nothing is dropped or re-checked, so every group may load at once."""
    where = {t.key: i for i, group in enumerate(plan.groups) for t in group}
    jobs = []
    for group in plan.groups:
        refs = {(fk.ref_schema, fk.ref_table) for t in group if t.target is not None for fk in t.target.foreign_keys}
        refs -= {t.key for t in group}
        enforced = not plan.options.disable_fk
        after = {where[r] for r in refs if r in where} if enforced else set()
        jobs.append(Job(group, after, refs if enforced else set(), sum(t.entry.bytes or 0 for t in group)))
    for i in reversed(range(len(jobs))):  # groups come parents first: children's weights are final
        waiting = [j.weight for j in jobs if i in j.after]
        jobs[i].weight += max(waiting, default=0)
    return jobs


def run_jobs(jobs: list[Job], workers: int, load: Callable[[list[TablePlan]], list[TableImport]]) -> list[TableImport]:
    """Load every job on up to `workers` threads; after a failure none starts, the running ones finish
    (each commits or rolls back whole) and the first failure is raised. Results in plan order."""
    pending = sorted(range(len(jobs)), key=lambda i: -jobs[i].weight)
    running: dict[Future[list[TableImport]], int] = {}
    results: dict[int, list[TableImport]] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="import") as pool:
        while pending or running:
            for i in [] if failure else _ready(jobs, pending, results, running, workers):
                pending.remove(i)
                running[pool.submit(load, jobs[i].group)] = i
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                i = running.pop(future)
                try:
                    results[i] = future.result()
                except BaseException as exc:  # noqa: BLE001 - raised once the running groups are done
                    failure = failure or exc
    if failure is not None:
        raise failure
    return [t for i in sorted(results) for t in results[i]]


def _ready(jobs: list[Job], pending: list[int], done: dict[int, list[TableImport]],
           running: dict[Future[list[TableImport]], int], workers: int) -> list[int]:
    """The pending jobs that may start now, heaviest first, as many as there are idle workers."""
    locked = {key for i in running.values() for key in jobs[i].locks}
    chosen: list[int] = []
    for i in pending:
        if len(running) + len(chosen) >= workers:
            break
        if jobs[i].after <= done.keys() and not jobs[i].locks & locked:
            chosen.append(i)
            locked |= jobs[i].locks
    return chosen


class Connections:
    """A connection per worker thread to the target, opened on first use, all closed at the end."""

    def __init__(self, target: Endpoint, first: psycopg.Connection) -> None:
        self.target = target
        self._idle: queue.SimpleQueue[psycopg.Connection] = queue.SimpleQueue()
        self._idle.put(first)
        self._opened: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    @contextmanager
    def lent(self) -> Iterator[psycopg.Connection]:
        """An idle connection, given back afterwards; a lost one becomes the target error the command shows."""
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = connect(self.target, autocommit=True)
            with self._lock:
                self._opened.append(conn)
        try:
            yield conn
        except psycopg.OperationalError as exc:
            raise self.target.error(f"lost the target database connection: {first_line(exc)}",
                                    "check the server is up, then run the same command again") from None
        self._idle.put(conn)

    def close(self) -> None:
        for conn in self._opened:
            conn.close()
