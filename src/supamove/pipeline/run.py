"""`supamove migrate`: test-connections, export, migrate-users, import and verify as one overlapped run.

The export runs in this thread, the auth tables first; the users are created on a thread of their own as
soon as the auth tables' files are complete; each application table is loaded (and checksummed) on
another as soon as its file is complete, its FK parents loaded and, when it holds user ids, the mapping
ready. Every step is the separate command's library function, writing the same files and state: a rerun,
or any separate command, resumes from where this run stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial

from supamove.connections import check_connections
from supamove.db import Endpoint
from supamove.errors import SupamoveError
from supamove.export import (
    ExportPlan,
    ExportWatch,
    check_kept_export,
    check_kept_selection,
    check_options,
    preview_export,
    run_export,
)
from supamove.importer import (
    TableImport,
    check_load_target,
    check_target_tables,
    finish_import,
    run_import,
)
from supamove.log import get_logger
from supamove.metadata import Metadata, TableEntry
from supamove.paths import DataDir
from supamove.pipeline.board import Board
from supamove.pipeline.model import Endpoints, MigrateResult, PipelineOptions
from supamove.progress import Labelled, NullProgress, Progress
from supamove.users.migrate import migrate_users
from supamove.verify import run_verify
from supamove.verify.ahead import AheadChecksums
from supamove.verify.run import Known

log = get_logger("migrate")
LOAD_BATCHES = 2  # batches of tables loading at once (one with --jobs 1), each on up to --jobs connections


def run_migrate(env: Endpoints, datadir: DataDir, options: PipelineOptions,
                progress: Progress | None = None) -> MigrateResult:
    """Every step of the cutover; the result says what each did and holds the failure that stopped it."""
    result = MigrateResult(dry_run=options.dry_run)
    step = "export"
    try:
        check_options(options.export())  # a wrong option before any connection: it is no endpoint's fault
        step = "test-connections"
        # Every setting missing or refused (the transaction pooler too) is named at once, as test-connections does.
        _check_connections(env, datadir, result)
        step = "export"
        if options.dry_run:
            _dry_run(env, env.source, datadir, options, result)
        else:
            Cutover(env, datadir.ensure(), options, progress or NullProgress(), result).run()
    except SupamoveError as exc:  # the step's own error: shown after what the steps before it did
        result.fail(result.failed_step or step, exc)
    result.seconds = result.elapsed()
    return result


def _dry_run(env: Endpoints, source: Endpoint, datadir: DataDir, options: PipelineOptions,
             result: MigrateResult) -> None:
    """The target checked as a real run checks it first, then the export's plan; nothing written."""
    target = env.checked_target()
    try:
        check_load_target(target, options.load())
    except SupamoveError:
        result.failed_step = "import"
        raise
    result.export_plan = preview_export(source, options.export())
    if (failure := result.export_plan.failure()) is not None:
        raise failure
    try:
        check_target_tables(target, _keys(result.export_plan), result.export_plan.sequence_names)
    except SupamoveError:
        result.failed_step = "import"
        raise
    previous = Metadata.previous(datadir)
    result.export_kept = previous is not None and previous.complete  # a real run would keep it
    if previous is not None and result.export_kept:  # and refuse it when it lacks what this run selects
        check_kept_selection(previous, result.export_plan, options.export())


def _keys(plan: ExportPlan) -> list[tuple[str, str]]:
    return [(table.schema, table.name) for table in plan.tables]


def _check_connections(env: Endpoints, datadir: DataDir, result: MigrateResult) -> None:
    result.begin("test-connections")
    result.connections = check_connections(env.settings, datadir)
    result.end("test-connections")
    failure = result.connections.failure()
    if failure is not None:
        raise failure


class Cutover:
    """One run of the pipeline: the export here, the users and the loads on threads, then the checks of the whole."""

    def __init__(self, env: Endpoints, datadir: DataDir, options: PipelineOptions, progress: Progress,
                 result: MigrateResult) -> None:
        self.env, self.datadir, self.options, self.result = env, datadir, options, result
        self.progress = progress
        self.source = env.source
        with self._step("import"):  # the import's own checks of its target, before anything is written
            self.target = env.checked_target()
            check_load_target(self.target, options.load())
        self.board = Board(datadir, options.disable_fk)
        self.checksums: AheadChecksums | None = None
        self._checksums_lock = threading.Lock()

    def run(self) -> None:
        """The export here, the other steps on their threads; after the first failure the work under way ends
        (a batch of tables commits or rolls back, the users being created are recorded) and it is raised."""
        threads = [threading.Thread(target=self._guarded, args=(step, work), name=name, daemon=True)
                   for name, step, work in (("users", "migrate-users", self._users), ("loads", "import", self._loads))]
        for thread in threads:
            thread.start()
        try:
            self._guarded("export", self._export)
            self.board.update(lambda board: setattr(board, "export_over", True))
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.5)  # in steps: Ctrl-C reaches this thread
            if self.board.failure is None:
                self._finish_import()  # while the last tables' checksums are still computed
        except KeyboardInterrupt as exc:
            self.board.fail(exc, "interrupted")
            raise
        finally:
            checksums = self.checksums.close() if self.checksums else {}
        if self.board.failure is not None:
            self.result.failed_step = self.board.failed_step
            raise self.board.failure
        self._verify(checksums)

    def _guarded(self, step: str, work: Callable[[], None]) -> None:
        """Run one step's work; its failure stops the others (the first failure is the one raised)."""
        try:
            work()
        except BaseException as exc:
            self.board.fail(exc, step)
            if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
                raise

    @contextmanager
    def _step(self, step: str) -> Iterator[None]:
        """Work of `step` done on this thread: its error is that step's."""
        try:
            yield
        except SupamoveError:
            self.result.failed_step = step
            raise

    def _export(self) -> None:
        board, result = self.board, self.result
        meta = Metadata.previous(self.datadir)
        if meta is not None and meta.complete:  # as `export` would refuse to: the finished export is kept
            check_kept_export(self.source, meta, self.options.export())
            self._check_target_tables([entry.key for entry in meta.entries], [s.key for s in meta.sequences])
            log.info("export: finished by a previous run at %s, kept (`supamove export --force` exports again)",
                     meta.finished_at)
            result.export_kept = True
            result.begin("export")
            result.end("export")
            for entry in meta.entries:
                if entry.complete:
                    board.table_exported(entry.key)
            board.values_checked()
            return
        result.begin("export")
        watch = ExportWatch(table_done=board.table_exported, values_checked=board.values_checked, planned=self._planned)
        try:
            result.export = run_export(self.source, self.datadir, self.options.export(),
                                       Labelled(self.progress, "export "), watch)
        except SupamoveError:
            result.export_reached = self._exported_so_far()
            raise
        result.end("export")

    def _exported_so_far(self) -> tuple[int, int] | None:
        """The tables a failed export finished (recorded complete in metadata.json: a rerun keeps them), and
        their rows; None when it finished none."""
        meta = Metadata.previous(self.datadir)
        with self.board.cond:
            done = [e for e in meta.entries if e.complete and e.key in self.board.exported] if meta else []
        return (len(done), sum(e.row_count or 0 for e in done)) if done else None

    def _planned(self, plan: ExportPlan) -> None:
        self._check_target_tables(_keys(plan), plan.sequence_names)

    def _check_target_tables(self, keys: list[tuple[str, str]], sequences: list[tuple[str, str]]) -> None:
        """Target tables holding rows or not the user's, and sequences it may not set, found before the export
        reads a row or a user is created: the load would refuse them only after both."""
        try:
            check_target_tables(self.target, keys, sequences)
        except SupamoveError as exc:
            self.board.fail(exc, "import")  # the first failure recorded: the import's, with its exit code
            raise

    def _users(self) -> None:
        board = self.board
        board.wait(lambda: board.users_may_start)
        if board.failure is not None:
            return
        self.result.begin("migrate-users")
        with self.env.stack_auth() as client:
            users = migrate_users(client, self.datadir, self.options.users(), self.progress)
        self.result.users = users
        self.result.end("migrate-users")
        failure = users.failure()
        if failure is not None:
            raise failure
        board.users_done()
        with self._checksums_lock:  # the tables checksummed so far get their Supabase ids left counted
            if self.checksums is not None:
                self.checksums.mapping_final()

    def _loads(self) -> None:
        """Load the tables as they become ready, each batch on --jobs connections, each checksummed once loaded.

        A batch ready while another loads starts at once (at most LOAD_BATCHES at a time; one with --jobs 1, which
        asks for one connection at a time): the tables holding user ids, ready when the users are, need not wait
        for the biggest table's load and index builds.
        """
        board = self.board
        running: set[Future[None]] = set()
        batches = min(LOAD_BATCHES, max(1, self.options.jobs))
        with ThreadPoolExecutor(batches, thread_name_prefix="loads") as pool:
            while True:
                board.wait(lambda: board.loads_over or (len(running) < batches and bool(board.ready())))
                if board.failure is not None or board.loads_over:
                    return  # the batches under way end with the pool: a failure stops new ones only
                with board.cond:
                    batch = board.ready() if len(running) < batches else []
                    board.loading.update(e.key for e in batch)
                if batch:
                    future = pool.submit(self._guarded, "import", partial(self._load, batch))
                    running.add(future)
                    future.add_done_callback(lambda done: board.update(lambda _: running.discard(done)))

    def _load(self, batch: list[TableEntry]) -> None:
        checksums = self._checksums()
        for entry in batch:
            checksums.source_first(entry)
        keys = frozenset(e.key for e in batch)
        loaded = run_import(self.target, self.datadir, self.options.load(keys), Labelled(self.progress, "import "))
        self.board.update(lambda board: self._loaded(keys, loaded.tables))
        for entry in batch:
            checksums.add(entry)

    def _checksums(self) -> AheadChecksums:
        """The checksums of the tables loaded; the first batch begins the import and verify (batches load at once)."""
        with self._checksums_lock:
            if self.checksums is None:
                self.result.begin("import")
                self.result.begin("verify")
                self.checksums = AheadChecksums(self.source, self.target, self.datadir, self.options.jobs,
                                                Labelled(self.progress, "verify "), self.board.users_over)
            return self.checksums

    def _loaded(self, keys: frozenset[tuple[str, str]], tables: list[TableImport]) -> None:
        """A batch loaded (under the board's condition: batches end on threads of their own)."""
        self.result.imported += tables
        self.board.loaded.update(keys)
        self.board.loading.difference_update(keys)

    def _finish_import(self) -> None:
        """What the import does once for the whole: FKs after --disable-fk, sequences, materialized views."""
        result = self.result
        with self._step("import"):
            whole = finish_import(self.target, self.datadir, self.options.load(), Labelled(self.progress, "import "))
        result.fk_checked, result.refreshed = whole.foreign_keys, whole.refreshed
        result.end("import")

    def _verify(self, checksums: dict[tuple[str, str], Known]) -> None:
        """The verification of the whole, with the checksums taken as the tables loaded; the report."""
        result = self.result
        if "verify" not in result.steps:
            result.begin("verify")
        with self._step("verify"):
            report = run_verify(self.source, self.target, self.datadir, self.options.verify(),
                                Labelled(self.progress, "verify "), checksums)
            result.verification = report
            result.end("verify")
            failure = report.failure()
            if failure is not None:
                raise failure
