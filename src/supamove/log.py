"""Logging: readable lines on the terminal, a full timestamped log file, secrets scrubbed from both."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import sys
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

LOGGER_NAME = "supamove"
# What the CLI prints is echoed to the log file under this name, and kept off the terminal twice.
ECHO_NAME = "supamove.terminal"
console = Console(stderr=True, highlight=False)
_secrets: set[str] = set()
_PATTERNS = [
    re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)([^@\s]+)(@)"),  # password in a URL
    re.compile(r"(password=)([^\s&]+)()", re.IGNORECASE),  # up to the URL's next parameter
    re.compile(r"()(\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53})()"),  # bcrypt
    re.compile(r"()(\$argon2[a-z]*\$[^\s\"']+)()"),
    re.compile(r"(x-stack-secret-server-key[\"']?:\s*[\"']?)([^\s\"',}]+)()", re.IGNORECASE),
]


# Until setup_logging runs (a settings error comes first), nothing may reach logging's last-resort
# handler: it would print each message a second time.
logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())


def add_secret(value: str | None) -> None:
    """Remember a value that must never be printed or logged."""
    if value and len(value) >= 4:
        _secrets.add(value)


def scrub(text: str) -> str:
    """The text with every known secret and every password-shaped value replaced by ***."""
    for secret in _secrets:
        text = text.replace(secret, "***")
    for pattern in _PATTERNS:
        text = pattern.sub(r"\1***\3", text)
    return text


def echo_to_log(message: str, level: int = logging.INFO) -> None:
    """Put a line the terminal shows into the log file too; an error's causes (`raise … from exc`) with it."""
    logging.getLogger(ECHO_NAME).log(level, message)
    if level >= logging.ERROR:
        _log_causes(sys.exc_info()[1])


def _log_causes(exc: BaseException | None) -> None:
    """What led to the error being handled, in full (a server's DETAIL, HINT and CONTEXT), for the log file."""
    cause = exc.__cause__ if exc is not None else None
    while cause is not None:
        get_logger().debug("caused by %s: %s", type(cause).__name__, str(cause).strip())
        cause = cause.__cause__


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


class _LogFile(logging.FileHandler):
    """The log file; when it cannot be written (a full disk), say so once and go on without it."""

    def handleError(self, record: logging.LogRecord) -> None:
        logging.getLogger(LOGGER_NAME).removeHandler(self)
        console.print(f"warning: cannot write the log file {self.baseFilename}: logging to the terminal only "
                      "(free disk space or set LOG_FILE_PATH elsewhere)", highlight=False, markup=False,
                      soft_wrap=True)


class _Scrubbed(logging.Formatter):
    """The whole record scrubbed, its traceback too (an exception's text may quote a URL or a header)."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class _PlainLines(logging.Handler):
    """Off a terminal (a pipe, a file), one line per message, never wrapped at 80 columns: grep finds it."""

    def emit(self, record: logging.LogRecord) -> None:
        console.print(self.format(record), highlight=False, markup=False, soft_wrap=True)


def setup_logging(log_file: Path | None, verbose: bool = False) -> None:
    """Send supamove's log to the terminal (INFO, or DEBUG with --verbose) and to `log_file` (DEBUG)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    terminal: logging.Handler = RichHandler(console=console, show_path=False, show_time=False, markup=False,
                                            rich_tracebacks=False) if console.is_terminal else _PlainLines()
    terminal.setFormatter(_Scrubbed("%(message)s" if console.is_terminal else "%(levelname)-8s %(message)s"))
    terminal.setLevel(logging.DEBUG if verbose else logging.INFO)
    terminal.addFilter(lambda record: record.name != ECHO_NAME)
    logger.addHandler(terminal)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        with contextlib.suppress(OSError):  # a log left readable by others is made private (when it is ours),
            if stat.S_ISREG(os.stat(log_file).st_mode):  # never /dev/null: every program on the machine uses it
                os.chmod(log_file, 0o600)
        handler = _LogFile(log_file, encoding="utf-8")
        handler.setFormatter(_Scrubbed("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.DEBUG)
        logger.addHandler(handler)
