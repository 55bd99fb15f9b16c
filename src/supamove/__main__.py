"""`supamove` and `python -m supamove`: Ctrl-C is taken over before Python loads the rest of supamove.

Loading the libraries takes a few tenths of a second; a KeyboardInterrupt raised inside an import is
printed as a traceback, or swallowed by the import machinery and leaves the command running. Until a
command's own handling starts (`interrupt.handled`), and after it ends, a Ctrl-C is only noted: the
command then stops before it does anything (exit 130), or, its work done, ends as it would have.
A second Ctrl-C ends the process at once. SIGTERM (kill, `timeout`, a service manager's stop) is a Ctrl-C.

The objects the imports made (pydantic's schemas, typing's caches, psycopg's and rich's tables) live as long as
the process, so they are frozen out of the garbage collector: its collections during the command pass them
over. So is all that is left once the command has ended (its files closed, its logs flushed by then), which
Python's shutdown would otherwise collect before the process ends: 0.05 to 0.15 s of every command's exit.
"""

from __future__ import annotations

import gc
import os
import signal
from types import FrameType

EXIT_CODE = 130
STOPS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C, and kill, `timeout` or a service manager's stop
pressed: list[bool] = []  # read by interrupt.handled(): a Ctrl-C before it started


def _noted(signum: int, frame: FrameType | None) -> None:
    if pressed:
        os._exit(EXIT_CODE)
    pressed.append(True)


def main() -> None:
    for signum in STOPS:
        signal.signal(signum, _noted)
    from supamove.cli import main as cli  # noqa: PLC0415 - after the handler: the imports take a while

    gc.freeze()
    try:
        cli()
    finally:  # the outcome is decided: a Ctrl-C from now on would only kill the exit (Python's own, by signal)
        signal.pthread_sigmask(signal.SIG_BLOCK, set(STOPS))
        # CPython notes a KeyboardInterrupt that ended any code run from a string (dataclasses and namedtuple
        # build their methods so), caught or not, and under `python -m` then ends the process by a SIGINT of
        # its own instead of with the exit code (the mask above keeps it from this thread only, not from a
        # worker thread still there). Running a string that ends well clears the note.
        exec("")  # noqa: S102 - a constant empty string
        gc.freeze()


if __name__ == "__main__":
    main()
