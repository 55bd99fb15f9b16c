"""What every command runs with: its settings, the data directory, the log, the endpoints."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from supamove import __version__
from supamove.config import Settings, load_settings
from supamove.db import Endpoint
from supamove.log import get_logger, setup_logging
from supamove.paths import DataDir

if TYPE_CHECKING:
    from supamove.users.client import StackAuthClient

log = get_logger("cli")


class Context:
    """The settings (with --data-dir applied) and the data directory of one command, its log opened."""

    def __init__(self, data_dir: Path | None, command: str | None, verbose: bool) -> None:
        self.settings: Settings = load_settings(data_dir)
        self.datadir = DataDir(self.settings.MIGRATION_DATA_DIR).check_exists()
        setup_logging(self.settings.LOG_FILE_PATH, verbose=verbose)
        log.debug("STEP %s: started (supamove %s, data dir %s)", command, __version__, self.datadir.root)

    @classmethod
    @contextmanager
    def opened(cls, data_dir: Path | None, command: str | None, verbose: bool) -> Iterator[Context]:
        """The context of one command; its duration is logged when it finishes without an error."""
        started = time.monotonic()
        yield cls(data_dir, command, verbose)
        log.debug("STEP %s: finished in %.1fs", command, time.monotonic() - started)

    @property
    def source(self) -> Endpoint:
        return Endpoint(self.settings.source_url, "source")

    @property
    def target(self) -> Endpoint:
        return Endpoint(self.settings.target_url, "target")

    def stack_auth(self, concurrency: int = 8) -> StackAuthClient:
        """A client of the Stack Auth project the settings name."""
        from supamove.users.client import StackAuthClient

        return StackAuthClient.from_settings(self.settings, concurrency=concurrency)
