"""Ctrl-C: acknowledged at once, the statements in flight cancelled on the server, the command ended in seconds.

The first Ctrl-C says so on stderr, cancels every open database statement (the worker threads' too, which
a KeyboardInterrupt in the main thread never reaches) and every HTTP client, and stops new requests; the
command then ends with exit code 130. Whatever still hangs (a request to an unresponsive server) is cut
off after GRACE_SECONDS, as a kill would: every step resumes after one. A second Ctrl-C ends it at once.
SIGTERM (kill, `timeout`, a service manager's stop) is handled as a Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Protocol

import psycopg

from supamove.log import get_logger

log = get_logger("interrupt")
EXIT_CODE = 130
GRACE_SECONDS = 3.0
ACKNOWLEDGED = "Interrupted: stopping… (Ctrl-C again to quit at once)\n"
RESUME = "Interrupted. Run the same command again to resume.\n"


class _Closable(Protocol):
    def close(self) -> None: ...


_stopping = threading.Event()
_resume_said = threading.Event()  # the command said how to resume: ending it after the grace says it no more
_lock = threading.Lock()
_connections: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
_clients: weakref.WeakSet[Any] = weakref.WeakSet()


def register_connection(conn: psycopg.Connection[Any]) -> None:
    """A connection whose statement in flight a Ctrl-C cancels."""
    with _lock:
        _connections.add(conn)


def register_client(client: _Closable) -> None:
    """An HTTP client a Ctrl-C closes."""
    with _lock:
        _clients.add(client)


def stopping() -> bool:
    """Whether Ctrl-C was pressed: no new work should start."""
    return _stopping.is_set()


def resume_said() -> None:
    """The command said how to resume, on its way out (threads still ending may hold it up to the grace)."""
    _resume_said.set()


def check() -> None:
    """Raise KeyboardInterrupt in this thread (a worker's too) once Ctrl-C was pressed."""
    if _stopping.is_set():
        raise KeyboardInterrupt


def sleep(seconds: float) -> None:
    """time.sleep that a Ctrl-C cuts short (with KeyboardInterrupt)."""
    if _stopping.wait(seconds):
        raise KeyboardInterrupt


@contextmanager
def handled() -> Iterator[None]:
    """Handle Ctrl-C as above while one command runs (in the main thread; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _on_sigint) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        if pressed_before():  # while Python loaded supamove: stop before doing anything
            raise KeyboardInterrupt
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stopping.clear()
        _resume_said.clear()


def pressed_before() -> bool:
    """A Ctrl-C the console script noted before this command's handling started (see supamove.__main__).

    It is forgotten once told: the caller stops.
    """
    entry = sys.modules.get("supamove.__main__")
    if entry is None:  # `python -m supamove`: the module runs as __main__
        main = sys.modules.get("__main__")
        entry = main if getattr(getattr(main, "__spec__", None), "name", None) == "supamove.__main__" else None
    pressed = getattr(entry, "pressed", None)
    return isinstance(pressed, list) and bool(pressed) and bool(pressed.pop())


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _stopping.is_set():
        _exit_now()
    _stopping.set()
    os.write(2, ACKNOWLEDGED.encode())  # at once, whatever the terminal's lock holds
    threading.Thread(target=_cancel_all, name="supamove-interrupt", daemon=True).start()
    timer = threading.Timer(GRACE_SECONDS, _exit_now)
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def _cancel_all() -> None:
    """Cancel every statement in flight and close every HTTP client (in a thread: both wait on servers)."""
    with _lock:
        connections, clients = list(_connections), list(_clients)
    for conn in connections:
        try:
            if not conn.closed:
                conn.cancel_safe(timeout=2.0)
        except Exception:  # noqa: BLE001 -- a connection closing meanwhile: nothing left to cancel
            log.debug("cancel failed", exc_info=True)
    for client in clients:
        try:
            client.close()
        except Exception:  # noqa: BLE001 -- a client in use may refuse to close: the grace timer ends it
            log.debug("closing an HTTP client failed", exc_info=True)


def _exit_now() -> None:
    """End the process as a kill would, after saying how to resume (once)."""
    if not _resume_said.is_set():
        os.write(2, RESUME.encode())
    for handler in get_logger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001,S110 -- exiting anyway
            pass
    os._exit(EXIT_CODE)
