"""`supamove` and `python -m supamove`: Ctrl-C is taken over before Python loads the rest of supamove.

Loading the libraries takes a few tenths of a second; a KeyboardInterrupt raised inside an import is
printed as a traceback, or swallowed by the import machinery and leaves the command running. Until a
command's own handling starts (`interrupt.handled`), and after it ends, a Ctrl-C is only noted: the
command then stops before it does anything (exit 130), or, its work done, ends as it would have.
A second Ctrl-C ends the process at once. SIGTERM (kill, `timeout`, a service manager's stop) is a Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click

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

    try:
        _run(cli)
    finally:  # the outcome is decided: a Ctrl-C from now on would only kill the exit (Python's own, by signal)
        signal.pthread_sigmask(signal.SIG_BLOCK, set(STOPS))


def _run(cli: click.Group) -> None:
    """click's own handling, but a wrong option given with --json also prints its JSON document on stdout
    (click refuses it before any command runs, so the command's own handling never sees it)."""
    import click  # noqa: PLC0415 - loaded with the CLI already; not before the handler is in place
    import orjson  # noqa: PLC0415

    try:
        code = cli.main(standalone_mode=False)
    except click.ClickException as exc:
        if "--json" in sys.argv[1:]:
            from supamove.log import scrub  # noqa: PLC0415

            sys.stdout.write(orjson.dumps({"ok": False, "error": {"message": scrub(exc.format_message()),
                                                                  "exitCode": exc.exit_code}}).decode() + "\n")
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
