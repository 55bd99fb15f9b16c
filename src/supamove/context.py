"""What every command runs with: its settings, the data directory, the log, the endpoints."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supamove import __version__, interrupt, memory, render
from supamove.config import Settings, load_settings, misspelled_settings
from supamove.db import Endpoint
from supamove.errors import ConfigError, SupamoveError
from supamove.files import check_can_create, lock_data_dir, writable_error
from supamove.log import get_logger, setup_logging
from supamove.paths import DATA_DIR_SETTING, DataDir

if TYPE_CHECKING:
    from supamove.users.client import StackAuthClient

log = get_logger("cli")
# Commands that never touch the data directory: they neither take its lock nor need it writable.
NO_DATA_DIR = {"test-connections"}
# Commands that only use a data directory an earlier step made: a mistyped path is not created. migrate-users and
# map-users read the export's users: they write beside it, never into a directory without one.
EXISTING_DATA_DIR = {"migrate-users", "map-users", "import", "verify", "send-password-resets", "purge-mapping"}
# Commands with --dry-run whose real run prints its result as JSON with --json too (the others: the plan only).
JSON_RESULT = {"migrate"}


class Context:
    """The settings (with --data-dir applied) and the data directory of one command, its log opened."""

    def __init__(self, data_dir: Path | None, command: str | None, verbose: bool) -> None:
        memory.limit_arenas()  # before any thread starts
        self.settings: Settings = load_settings(data_dir)
        self.datadir = DataDir(self.settings.MIGRATION_DATA_DIR).check_exists()
        self._open_log(verbose)
        for warning in misspelled_settings(Path(".env")):
            log.warning("%s", warning)
        log.debug("STEP %s: started (supamove %s, data dir %s)", command, __version__, self.datadir.root)

    @classmethod
    def run(cls, func: Callable[..., Any], data_dir: Path | None, command: str, verbose: bool,
            kwargs: dict[str, Any]) -> Any:
        """Run a command's body with its context; an operator-fixable error becomes one line and an exit code."""
        with render.failures_shown(as_json=kwargs.get("as_json", False)), cls.opened(data_dir, command, verbose, kwargs.get("dry_run"),
                                                 kwargs.get("as_json", False)) as ctx:
            return func(ctx, **kwargs)

    @classmethod
    @contextmanager
    def opened(cls, data_dir: Path | None, command: str | None, verbose: bool, dry_run: bool | None = None,
               as_json: bool = False) -> Iterator[Context]:
        """The context of one command, the data directory locked; its duration is logged when it succeeds.

        `dry_run` is None for a command without --dry-run; --json goes with a dry run's plan, never a real run.
        """
        if as_json and dry_run is False and command not in JSON_RESULT:
            raise ConfigError(f"{command} --json prints the dry run's plan", fix="add --dry-run")
        started = time.monotonic()
        ctx = cls(data_dir, command, verbose)
        lock = None if command in NO_DATA_DIR else ctx._lock(command or "", bool(dry_run))
        try:
            with interrupt.handled():
                yield ctx
        finally:
            if lock is not None:
                os.close(lock)
        log.debug("STEP %s: finished in %.1fs", command, time.monotonic() - started)

    def _open_log(self, verbose: bool) -> None:
        """The log file, opened before any work: one that cannot be written stops the command now."""
        path = self.settings.LOG_FILE_PATH
        try:
            setup_logging(path, verbose=verbose)
        except OSError as exc:
            raise writable_error(path, "log file", "LOG_FILE_PATH", exc) from None

    def _lock(self, command: str, dry_run: bool) -> int | None:
        """Hold the data directory's lock, made writable first; a dry run writes none (see _dry_run_lock)."""
        root = self.datadir.root
        if dry_run:
            return None if command in EXISTING_DATA_DIR and not root.exists() else self._dry_run_lock(command)
        if not root.exists():
            if command in EXISTING_DATA_DIR:  # the command names the file it lacks
                check_can_create(root, "data directory", DATA_DIR_SETTING)
                return None
            try:
                root.mkdir(mode=0o700, parents=True)
            except OSError as exc:
                raise writable_error(root, "data directory", DATA_DIR_SETTING, exc) from None
        return lock_data_dir(self.datadir.lock, command)

    def _dry_run_lock(self, command: str) -> int | None:
        """A dry run writes nothing, so a data directory it cannot write (an export kept read-only, say) is no
        reason to refuse it: it goes on, holding the lock read-only where there is one, and says that the real run
        would stop."""
        root = self.datadir.root
        try:
            if not root.exists():
                check_can_create(root, "data directory", DATA_DIR_SETTING)
                return None
            return lock_data_dir(self.datadir.lock, command)
        except ConfigError as exc:  # the directory cannot be written (lock_data_dir's other errors stop it)
            log.warning("%s; the dry run goes on (it writes nothing), the real run would stop (fix: %s)",
                        exc.message, exc.fix)
            return lock_data_dir(self.datadir.lock, command, read_only=True) if self.datadir.lock.exists() else None

    @property
    def source(self) -> Endpoint:
        endpoint = Endpoint(self.settings.source_url, "source")
        if (refusal := endpoint.pooler_refusal()) is not None:
            raise refusal
        return endpoint

    @property
    def target(self) -> Endpoint:
        return Endpoint(self.settings.target_url, "target")

    def checked_target(self) -> Endpoint:
        """The target, refused (before anything is written) when it is the source or a Supabase project."""
        from supamove.guard import check_target

        source = self.settings.SUPABASE_DB_URL
        return check_target(self.target, Endpoint(source, "source") if source else None)

    def stack_auth(self) -> StackAuthClient:
        """A client of the Stack Auth project the settings name."""
        from supamove.users.client import StackAuthClient

        return StackAuthClient.from_settings(self.settings)

    def confirm_truncate(self, target: Endpoint, confirm: Callable[[str], bool]) -> None:
        """`import --truncate-first` empties tables only once the operator, at a terminal, says yes."""
        if not sys.stdin.isatty():
            raise ConfigError("--truncate-first empties the planned target tables and needs a confirmation",
                                fix="run it in a terminal to answer the question, or add --yes")
        if not confirm(f"Empty every planned table in the target ({target.redacted}) before loading?"):
            raise SupamoveError("nothing truncated, nothing loaded: the answer was no",
                                fix="answer yes to empty the tables, or run `supamove import` without --truncate-first")


def run_demo_command(rows: int, keep: bool, workdir: Path | None, cli: Any, verbose: bool) -> None:
    """`supamove demo`: the runbook on throwaway servers, each of its commands run in this process as typed."""
    from supamove.sandbox.demo import run_demo, run_in_process

    setup_logging(None, verbose=verbose)  # no log file yet: an unexpected failure's traceback with --verbose
    with render.failures_shown("the demo could not set up:", "fix: rerun with `supamove --verbose demo` for details"):
        result = run_demo(rows, keep, workdir, functools.partial(run_in_process, cli, verbose), render.announce)
        render.show(result, False, render.show_demo_result, result.failure())
