"""Terminal rendering for the CLI: progress bars and summary tables (the library never prints)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from supamove.log import console, echo_to_log, scrub


class RichProgress:
    """One bar per label (a table, the users), with count, rate and time left."""

    def __init__(self, unit: str = "rows") -> None:
        self._unit = unit
        self._bars = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def start(self, label: str, total: int | None) -> None:
        with self._lock:
            self._tasks[label] = self._bars.add_task(label, total=total, rate="")

    def advance(self, label: str, n: int = 1) -> None:
        task_id = self._tasks[label]
        with self._lock:
            self._bars.advance(task_id, n)
            task = self._bars.tasks[task_id]
            rate = f"{task.speed:,.0f} {self._unit}/s" if task.speed else ""
            self._bars.update(task_id, rate=rate)
            if task.total is not None and task.completed > task.total:
                self._bars.update(task_id, total=task.completed)

    def finish(self, label: str) -> None:
        with self._lock:
            task = self._bars.tasks[self._tasks[label]]
            self._bars.update(self._tasks[label], total=task.completed, completed=task.completed)

    @contextmanager
    def shown(self) -> Iterator[RichProgress]:
        with self._bars:
            yield self


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    echo_to_log(f"{title}: " + " | ".join(headers))
    for row in rows:
        echo_to_log("  " + " | ".join(str(v) for v in row))
    table = Table(title=title, title_justify="left")
    for header in headers:
        numeric = header.lower() in {"rows", "bytes", "mb", "seconds", "rows/s", "est. rows", "size"}
        table.add_column(header, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(scrub(str(v)) for v in row))
    console.print(table)


def show_error(text: str) -> None:
    """One line, `Error: what (fix: how)`, secrets scrubbed, never wrapped."""
    echo_to_log(f"Error: {text}", logging.ERROR)
    console.print(f"[bold red]Error:[/] {escape(scrub(text))}", highlight=False, soft_wrap=True)


def say(message: str) -> None:
    echo_to_log(message)
    console.print(scrub(message), markup=False, highlight=False, soft_wrap=True)


def human_bytes(size: int | float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GB"
