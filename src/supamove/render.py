"""Terminal rendering for the CLI: progress bars, tables, the error line, and each step's result.

The library never prints; the CLI hands each result to one function here. Results (tables, summary
lines, a dry run's plan, `--json`) go to stdout; progress, log lines, warnings and errors to stderr.
"""

from __future__ import annotations

import errno
import io
import logging
import sys
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar, cast

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bars
from rich.table import Table

from supamove import interrupt
from supamove.errors import INTERRUPTED, DataFileError, SupamoveError
from supamove.files import UUID
from supamove.log import console, echo_to_log, get_logger, scrub
from supamove.progress import NullProgress, Progress
from supamove.words import agree, counted

if TYPE_CHECKING:
    from supamove.connections import ConnectionReport
    from supamove.export import ExportPlan, ExportResult
    from supamove.importer import ImportPlan, ImportResult
    from supamove.paths import DataDir
    from supamove.pipeline import MigrateResult
    from supamove.sandbox.demo import DemoResult
    from supamove.schema import SchemaResult
    from supamove.users.mapusers import MapResult
    from supamove.users.resets import PurgeResult, ResetResult
    from supamove.verify import Difference, VerifyReport

out = Console(highlight=False)  # results; `console` (stderr) has progress, the log, warnings and errors
NUMERIC = {"rows", "bytes", "mb", "seconds", "rows/s", "est. rows", "size", "users", "source rows", "target rows",
           "#"}
UNBOUNDED = 10_000  # off a terminal (a file, a pipe), a table is as wide as it needs: never wrapped or cut
# A bar of work after the rows (a table's "indexes and constraints", the foreign keys and checks put back
# as its "constraints", "every table: foreign keys"): it counts steps, not rows, so no rate is shown
PHASES = ("constraints", "foreign keys")
PLAIN_EVERY = 10.0  # off a terminal, seconds between two lines of one bar's progress
PIPELINE_UNITS = {"users": "users", "verify checksums": "tables", "verify tables": "tables"}  # `migrate`'s bars


class Serialisable(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


R = TypeVar("R")


def per_second(count: int | float, seconds: float) -> str:
    """The rate the progress bars and the summaries show: the count over the seconds it took."""
    return f"{count / seconds:,.0f}" if seconds > 0 else ""


_json_written: list[bool] = []  # this command printed its JSON document (see failures_shown)


def _write_json(data: dict[str, Any]) -> None:
    out.file.write(scrub(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()) + "\n")
    out.file.flush()
    _json_written.append(True)


def show(result: R, as_json: bool, text: Callable[[R], None], failure: Exception | None = None) -> None:
    """A result as JSON on stdout (its `to_dict()`, secrets scrubbed) or as text by its renderer; then its failure.

    With --json the renderer still runs, its stdout dropped: the warnings and errors it writes on stderr (an
    endpoint's error that `Error: not every endpoint is usable (fix: correct the settings named above)` points
    at) stay there, as without --json."""
    if not as_json:
        text(result)
    else:
        _write_json(cast(Serialisable, result).to_dict())  # every command with --json has a result with to_dict()
        with _results_dropped():
            text(result)
    if failure is not None:
        raise failure


@contextmanager
def _results_dropped() -> Iterator[None]:
    """stdout's results written nowhere (they are in the JSON document already), stderr's messages as ever."""
    global out
    shown, out = out, Console(file=io.StringIO(), highlight=False)
    try:
        yield
    finally:
        out = shown


class RichProgress:
    """One bar per label (a table, the users, a phase), with count, rate and time, on stderr."""

    def __init__(self, unit: str = "rows", units: dict[str, str] | None = None) -> None:
        self._unit = unit
        self._units = units or {}
        self._bars = Bars(
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
            unit = self._units.get(label, self._unit)
            rate = per_second(task.completed, task.elapsed or 0.0)
            shown = "" if label.endswith(PHASES) or not rate else f"{rate} {unit}/s"
            self._bars.update(task_id, rate=shown)
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


class PlainProgress:
    """Progress off a terminal (stderr piped to `tee`, a file): plain lines as the work goes.

    Live bars there would print one frame, at the very end, cut to 80 columns. Instead: a line when a
    bar's work ends, and a line every `every` seconds for each bar still moving.
    """

    def __init__(self, unit: str = "rows", units: dict[str, str] | None = None, every: float = PLAIN_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._unit, self._units, self._every, self._clock = unit, units or {}, every, clock
        self._bars: dict[str, _PlainBar] = {}
        self._lock = threading.Lock()

    def start(self, label: str, total: int | None) -> None:
        now = self._clock()
        with self._lock:
            self._bars[label] = _PlainBar(total, now, now)

    def advance(self, label: str, n: int = 1) -> None:
        now = self._clock()
        with self._lock:
            bar = self._bars[label]
            bar.done += n
            if now - bar.said < self._every:
                return
            bar.said = now
            of = f" of {bar.total:,}" if bar.total is not None and bar.total >= bar.done else ""
            rate = "" if label.endswith(PHASES) else per_second(bar.done, now - bar.started)
            self._say(f"{label}: {bar.done:,}{of} {self._units.get(label, self._unit)}"
                      + (f", {rate} {self._units.get(label, self._unit)}/s" if rate else ""))

    def finish(self, label: str) -> None:
        now = self._clock()
        with self._lock:
            bar = self._bars.pop(label)
            seconds = now - bar.started
            if label.endswith(PHASES):
                self._say(f"{label}: done in {seconds:.1f}s")
                return
            unit, rate = self._units.get(label, self._unit), per_second(bar.done, seconds)
            done = counted(bar.done, unit.removesuffix("s"), unit)
            self._say(f"{label}: {done} in {seconds:.1f}s" + (f" ({rate} {unit}/s)" if rate else ""))

    def _say(self, line: str) -> None:
        console.print(escape(scrub(line)), highlight=False, soft_wrap=True)


@dataclass
class _PlainBar:
    total: int | None
    started: float
    said: float  # when its last line was printed
    done: int = 0


@contextmanager
def progress(unit: str, units: dict[str, str] | None = None, shown: bool = True) -> Iterator[Progress]:
    """Progress on stderr while the block runs: bars on a terminal, plain lines elsewhere (none when not
    `shown`: a dry run)."""
    if not shown:
        yield NullProgress()
        return
    if not console.is_terminal:
        yield PlainProgress(unit, units)
        return
    with RichProgress(unit, units).shown() as bars:
        yield bars


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A result table on stdout: numbers never cut or wrapped, names folded; at its full width off a terminal."""
    echo_to_log(f"{title}: " + " | ".join(headers))
    for row in rows:
        echo_to_log("  " + " | ".join(str(v) for v in row))
    cells = [[scrub(str(v)) for v in row] for row in rows]
    table = Table(title=title, title_justify="left")
    for i, header in enumerate(headers):
        if header.lower() in NUMERIC:
            widest = max([len(header)] + [len(row[i]) for row in cells])
            table.add_column(header, justify="right", no_wrap=True, min_width=widest)
        else:
            table.add_column(header, overflow="fold")
    for row in cells:
        table.add_row(*row)
    # Console.print never goes wider than its console: off a terminal, one as wide as the table needs.
    wide = out if out.is_terminal else Console(file=out.file, width=UNBOUNDED, highlight=False, color_system=None)
    wide.print(table)


def show_error(text: str) -> None:
    """One line, `Error: what (fix: how)`, secrets scrubbed, never wrapped."""
    echo_to_log(f"Error: {text}", logging.ERROR)
    console.print(f"[bold red]Error:[/] {escape(scrub(text))}", highlight=False, soft_wrap=True)


@contextmanager
def failures_shown(unexpected: str = "unexpected", hint: str = "see the log file for details",
                   as_json: bool = False) -> Iterator[None]:
    """Every failure as one `Error:` line and its exit code; a traceback only in the log (and with --verbose).

    With --json, a command stopped before it printed its document prints `{"error": ...}` instead: stdout
    always holds one JSON document.
    """
    _json_written.clear()
    try:
        yield
    except SupamoveError as exc:
        _json_error(as_json, str(exc), exc.exit_code)
        show_error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _json_error(as_json, "interrupted", INTERRUPTED)
        console.print("[yellow]Interrupted.[/] Run the same command again to resume.")
        interrupt.resume_said()
        sys.exit(INTERRUPTED)
    except OSError as exc:
        if not exc.filename:
            _unexpected(exc, unexpected, hint, as_json)
        get_logger().debug("file error", exc_info=True)
        _json_error(as_json, file_error(exc), DataFileError.exit_code)
        show_error(file_error(exc))
        sys.exit(DataFileError.exit_code)
    except Exception as exc:  # an unexpected failure still gets one line; the log file has the rest
        _unexpected(exc, unexpected, hint, as_json)


def _json_error(as_json: bool, message: str, code: int) -> None:
    if as_json and not _json_written:
        _write_json({"ok": False, "error": {"message": message, "exitCode": code}})


def refused_json(as_json: bool, message: str, code: int) -> None:
    """--json's document for an option refused before its command ran (so nothing was printed yet)."""
    if as_json:
        _write_json({"ok": False, "error": {"message": message, "exitCode": code}})


def _unexpected(exc: Exception, unexpected: str, hint: str, as_json: bool = False) -> NoReturn:
    get_logger().debug("unexpected failure", exc_info=True)
    message = f"{unexpected} {type(exc).__name__}: {str(exc)[:500]} ({hint})"
    _json_error(as_json, scrub(message), 1)
    show_error(message)
    sys.exit(1)


ACCESS_FIX = "give this user access to it (chmod u+rw), or run supamove as the user who owns the data directory"
FILE_FIXES = {
    errno.EACCES: ACCESS_FIX,
    errno.EPERM: ACCESS_FIX,
    errno.EISDIR: "a file belongs there: move the directory away (or restore the file from a backup)",
    errno.ENOTDIR: "a directory belongs there: move the file away",
    errno.ENOENT: "restore it, or run the step that writes it again",
}


def file_error(exc: OSError) -> str:
    """A file the command could not use (a permission, a directory in its place): one line with the fix."""
    reason = (exc.strerror or type(exc).__name__).lower()
    fix = FILE_FIXES.get(exc.errno or 0, "check the file, then run the same command again")
    return f"cannot use {exc.filename}: {reason} (fix: {fix})"


def say(message: str) -> None:
    """One line of a result on stdout (never wrapped, secrets scrubbed), and in the log file."""
    echo_to_log(message)
    out.print(scrub(message), markup=False, highlight=False, soft_wrap=True)


def note(message: str, level: int = logging.INFO) -> None:
    """One line about the work, not its result (a warning, a hint) on stderr, and in the log file."""
    echo_to_log(message, level)
    console.print(scrub(message), markup=False, highlight=False, soft_wrap=True)


def human_bytes(size: int | float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GB"


def show_connections(report: ConnectionReport) -> None:
    """The table of endpoints, then every warning and error under it."""
    rows = []
    for c in report.checks:
        status = "not configured" if not c.configured and not c.errors else (
            "ok" if c.usable else "FAILED")
        tls = "" if c.encrypted is None else ("yes" if c.encrypted else "NO")
        latency = f"{c.latency_ms:.1f} ms" if c.latency_ms is not None else ""
        rows.append((c.name, status, c.version, tls, latency, c.address))
    print_table("Connections", ["endpoint", "status", "version", "TLS", "latency", "checked"], rows)
    for c in report.checks:
        for warning in c.warnings:
            note(f"warning: {c.name}: {warning}", logging.WARNING)
        for error in c.errors:
            note(f"error: {c.name}: {error}", logging.ERROR)
    if report.ok:
        say("All configured endpoints are usable.")


def _notes(lines: Sequence[str]) -> None:
    """A step's notes: part of its result on stdout, its warnings on stderr."""
    for line in lines:
        if line.startswith("warning:"):
            note(line, logging.WARNING)
        else:
            say(line)


def show_export_plan(plan: ExportPlan) -> None:
    rows: list[tuple[object, ...]] = []
    for order, table in enumerate(plan.tables, 1):
        rows.append((order, table.qualified, f"{table.estimated_rows:,}", human_bytes(table.size_bytes),
                     ", ".join(table.user_id_columns)))
    for table in plan.auth_tables:
        rows.append(("users", table.qualified, f"{table.estimated_rows:,}", human_bytes(table.size_bytes), ""))
    print_table("Export plan (dependency order)", ["#", "table", "est. rows", "size", "user-id columns"], rows)
    for group in plan.cycles:
        say(f"FK cycle or self-reference: {', '.join(t.qualified for t in group)} (loaded together)")
    for key, parts in plan.parts.items():
        say(f"{'.'.join(key)}: read as {len(parts)} block ranges at once (--split-tables-larger-than)")
    _notes(plan.notes)
    say(f"Platform schemas skipped: {', '.join(plan.skipped_schemas) or 'none present'}")
    say("Dry run: nothing was written.")


def show_export_result(result: ExportResult, datadir: DataDir) -> None:
    rows = [(t.qualified, f"{t.rows:,}", human_bytes(t.bytes), f"{t.seconds:.1f}",
             "kept from previous run" if t.resumed else per_second(t.rows, t.seconds))
            for t in result.tables]
    print_table("Export summary", ["table", "rows", "size", "seconds", "rows/s"], rows)
    _notes(result.plan.notes)
    kept = sum(t.resumed for t in result.tables)
    say(f"Exported {counted(len(result.tables) - kept, 'table')}, {counted(result.rows, 'row')} in all, in {result.seconds:.1f}s "
        f"to {datadir.root} (snapshot {result.snapshot})"
        + (f"; {kept} kept from a previous run, read in its snapshot (if Supabase was written since, --force "
           "exports them all again in one)." if kept else "."))


def show_import_plan(plan: ImportPlan) -> None:
    rows = []
    for order, table in enumerate(plan.tables, 1):
        remapped = ", ".join([f"{c} ({counted(n, 'id')})" for c, n in table.remapped_counts.items()]
                             + [f"{c} (inside JSON)" for c in table.json_rewritten])
        state = "loaded by a previous run" if table.done else "HOLDS ROWS" if table.has_rows else \
            "resumes an interrupted load" if table.resume_split else ""
        rows.append((order, table.qualified, f"{table.rows:,}", remapped, state))
    print_table("Import plan (target's FK order)", ["#", "table", "rows", "user ids remapped", "state"], rows)
    for group in plan.cycles:
        say(f"FK cycle or self-reference: {', '.join(t.qualified for t in group)} (one transaction)")
    for table in plan.tables:
        for column, ids in table.unmapped.items():
            say(f"unmapped user ids in {table.qualified}.{column}: {len(ids):,} ({_first_ids(ids)}), "
                f"--unmapped-users {plan.options.unmapped_users}")
        if table.missing_in_target:
            say(f"columns of {table.qualified} missing in the target: {', '.join(table.missing_in_target)}")
        if table.missing_in_export:
            say(f"columns of {table.qualified} missing in the export (target default used): "
                f"{', '.join(table.missing_in_export)}")
    if plan.views:
        say(f"Materialized views refreshed once every table is loaded: {', '.join(v.qualified for v in plan.views)}.")
    mode = "FK checks off during the load, every FK checked after it" if plan.options.disable_fk \
        else "every constraint checked before each table commits"
    say(f"Mode: {mode}{'; every planned table truncated first' if plan.options.truncate_first else ''}.")
    for problem in plan.problems:
        say(f"problem: {problem}")
    say("Dry run: nothing was written.")


def show_import_result(result: ImportResult, target: str) -> None:
    """The summary table and line; `target` is the target's URL without its password."""
    rows = [(t.qualified, f"{t.rows:,}", f"{t.seconds:.1f}",
             "loaded by a previous run" if t.skipped else per_second(t.rows, t.copy_seconds))
            for t in result.tables]
    print_table("Import summary", ["table", "rows", "seconds", "rows/s"], rows)
    _unmapped_left(result.plan)
    if result.plan.options.disable_fk:
        say(f"Checked {counted(result.fk_checked, 'foreign key')} after the load: no orphan rows.")
    if result.refreshed:
        say(f"Refreshed {counted(len(result.refreshed), 'materialized view')} from the loaded tables: "
            f"{', '.join(result.refreshed)}.")
    say(f"Imported {counted(result.rows, 'row')} into {counted(sum(not t.skipped for t in result.tables), 'table')} "
        f"in {result.seconds:.1f}s ({target}).")


def _unmapped_left(plan: ImportPlan) -> None:
    """What --unmapped-users keep or null did with the user ids the mapping lacks: the run did less than remap
    every one, so it says so."""
    mode = plan.options.unmapped_users
    for table in plan.tables:
        for column, ids in table.unmapped.items():
            was, they = agree(len(ids), "was", "were"), agree(len(ids), "it is", "they are")
            what = (f"left as {they} inside its JSON" if column in table.json_rewritten
                    else "set to NULL" if mode == "null" else f"kept as {they}")
            note(f"warning: {counted(len(ids), 'user id')} of {table.qualified}.{column} that user-mapping.json lacks "
                 f"{was} {what} (--unmapped-users {mode}): {_first_ids(ids)}", logging.WARNING)


def _first_ids(ids: list[str]) -> str:
    return ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")


def show_verify_report(report: VerifyReport) -> None:
    """The table of verdicts, every difference located, then the counts and where the report is."""
    if report.tables_from != "metadata.json":
        note("--before-export: compared the public tables of the source catalog, not an export (after "
             "`supamove export`, run verify without it to verify what was exported).", logging.WARNING)
    rows = [(t.qualified, "" if t.source_rows is None else f"{t.source_rows:,}",
             "" if t.target_rows is None else f"{t.target_rows:,}",
             "" if t.source_checksum is None else ("same" if t.source_checksum == t.target_checksum else "differs"),
             t.status.upper() if t.status != "pass" else "pass", t.reason or "") for t in report.tables]
    print_table("Verification", ["table", "source rows", "target rows", "checksum", "status", "reason"], rows)
    for t in report.tables:
        for diff in t.differences:
            say(f"  {t.qualified}: {_describe_difference(diff)}")
        if t.more_differences:
            say(f"  {t.qualified}: more rows differ than the {len(t.differences)} shown (--max-diffs)")
        for kept in (c for c in t.supabase_ids or [] if c.kept and c.rows):
            say(f"  {t.qualified}: {counted(kept.rows, 'row')} of column {kept.column} "
                "kept Supabase user ids on purpose")
    if report.sequences:
        print_table("Sequences no table uses", ["sequence", "source next", "target next", "status", "reason"],
                    [(f"{s.schema}.{s.name}", _number(s.source_next), _number(s.target_next),
                      s.status.upper() if s.status != "pass" else "pass", "; ".join(s.failures)) for s in report.sequences])
    if report.failed_auth:  # all pass: no table of its own (the summary line counts them)
        print_table("Supabase Auth since the export (source)", ["table", "rows exported", "rows now", "status", "reason"],
                    [(f"{a.schema}.{a.name}", f"{a.exported_rows:,}", _number(a.source_rows), a.status.upper(),
                      "; ".join(a.failures)) for a in report.auth])
    if report.views:
        print_table("Materialized views", ["view", "source rows", "target rows", "status", "reason"],
                    [(f"{v.schema}.{v.name}", _number(v.source_rows), _number(v.target_rows),
                      v.status.upper() if v.status != "pass" else "pass", "; ".join(v.failures + v.warnings))
                     for v in report.views])
    if report.full_report_kept:
        note(f"verification-report.json holds a full verification (with checksums): kept; this row-count check "
             f"is in {report.report_path}", logging.WARNING)
    summary = report.summary
    say(f"{counted(summary['tables'], 'table')}: {summary['pass']} pass, {summary['warn']} warn, {summary['fail']} fail; "
        f"{counted(summary['sourceRows'], 'source row')}, {counted(summary['targetRows'], 'target row')} in {report.seconds:.1f}s"
        f"{'' if report.checksums else ' (row counts only)'}{_beyond_tables(report)}. Report: {report.report_path}")


def _beyond_tables(report: VerifyReport) -> str:
    """The verdicts the table counts leave out: Supabase Auth's users, failed sequences and materialized views, and
    the large objects when the source has any."""
    said = "" if not report.auth else "; Supabase Auth's users changed since the export" if report.failed_auth \
        else "; Supabase Auth's users unchanged since the export"
    said += "".join(f"; {what}: {len(failed):,} FAIL" for failed, what in (
        (report.failed_sequences, "sequences no table uses"), (report.failed_views, "materialized views")) if failed)
    objects = report.large_objects
    if objects is None:
        return said
    if report.large_objects_failed:
        return said + f"; large objects: {objects.target_count:,} on the target of {objects.source_count:,}, FAIL"
    return said + f"; {counted(objects.source_count, 'large object')} on both sides"


def _number(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _describe_difference(diff: Difference) -> str:
    where = ", ".join(f"{k}={_key_text(v)}" for k, v in (diff.key or {}).items())
    if diff.kind == "changed":
        cols = "; ".join(f"{c.column}: {' -> '.join(_shown_pair(c.source, c.target))}" for c in diff.columns)
        return f"row {where} differs: {cols}"
    side = "source only" if diff.kind == "missing" else "target only"
    times = f" x{diff.count}" if diff.count > 1 else ""
    if where:
        return f"row {where} {diff.kind} ({side}){times}"
    return f"row {diff.kind} ({side}){times}: {diff.row}"


def _shown_pair(source: str | None, target: str | None) -> tuple[str, str]:
    """Both sides' texts as SQL literals; escaped (`e\\u0301`) when they would look the same printed: another
    Unicode normalization, an invisible character."""
    if source is not None and target is not None and (_looks(source) == _looks(target)
                                                      or _unseen(source) or _unseen(target)):
        source, target = _escaped(source), _escaped(target)
    return _sql_text(source), _sql_text(target)


def _looks(text: str) -> str:
    return unicodedata.normalize("NFKC", "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Cc")))


def _unseen(text: str) -> bool:
    """Holds a character that prints as nothing, or as a space or a line break (a tab, a newline)."""
    return any(unicodedata.category(c) in ("Cf", "Cc") for c in text)


def _key_text(value: str | None) -> str | None:
    """A key as shown: escaped when it holds an unseen character or a backslash (a tab and a written \\t differ)."""
    return _escaped(value) if value is not None and (_unseen(value) or "\\" in value) else value


def _escaped(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")


def _sql_text(value: str | None) -> str:
    """A value as SQL writes a literal: 'it''s', '\\x01ff' (repr doubled every backslash)."""
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def show_user_outcomes(result: Any) -> None:
    # One row per kind of outcome: a reason naming the user's own Stack Auth id (deleted there, say) counts
    # every user it befell on one row, not one row each; the table of those not created names each.
    by_kind = Counter((o.status, UUID.sub("…", o.reason or "")) for o in result.outcomes)
    verb = {"create": "would create", "link": "would link", "done": "already migrated"} if result.dry_run else {}
    rows = [(verb.get(status, status), reason, f"{n:,}") for (status, reason), n in sorted(by_kind.items())]
    print_table("Users (dry run)" if result.dry_run else "Users", ["outcome", "reason", "users"], rows)
    noteworthy = [o for o in result.outcomes if o.status not in ("migrated", "create", "done")]
    if noteworthy:
        shown = noteworthy[:50]
        print_table("Not created", ["supabase user", "e-mail", "outcome", "reason"],
                    [(o.supabase_user_id, o.email or "", verb.get(o.status, o.status),
                      (o.reason or "") + (f" (fix: {o.fix})" if o.fix else "")) for o in shown])
        if len(noteworthy) > len(shown):
            say(f"... and {len(noteworthy) - len(shown):,} more (see user-migration-report.json after a real run)")
    _show_mfa(result)
    _show_identities(result)
    _show_sync(result)
    resets = len(result.reset_required)
    if result.dry_run:
        say(f"Dry run: {counted(resets, 'user')} would need a password reset. Nothing was created or updated.")
        return
    found = f"; {result.found_earlier:,} created by an earlier run were found in Stack Auth by their Supabase id" \
        if result.found_earlier else ""
    say(f"Created {counted(result.created, 'user')} in {result.seconds:.1f}s ({result.users_per_second:,.0f} users/s){found}; "
        f"{resets:,} {agree(resets, 'needs', 'need')} a password reset (password-reset-required.json). Report: {result.report_path}")


def _show_sync(result: Any) -> None:
    """A rerun: users updated (with the fields, never the values), unchanged, and in conflict."""
    updated = result.synced("update" if result.dry_run else "updated")
    unchanged, conflicts = result.synced("unchanged"), result.conflicts
    if not (updated or unchanged or conflicts):
        return
    verb = "would be updated" if result.dry_run else "updated"
    say(f"Users of earlier runs: {len(updated):,} {verb}, {len(unchanged):,} unchanged, "
        f"{len(conflicts):,} changed in Stack Auth (conflict).")
    for outcome in updated[:20]:
        say(f"  {verb}: {outcome.supabase_user_id} {outcome.email or ''}: {', '.join(outcome.changed)}")
    for outcome in conflicts[:20]:
        if not outcome.changed:  # no sync state (map-users): the two sides differ, which one moved is not known
            say(f"  conflict: {outcome.supabase_user_id} {outcome.email or ''}: Supabase and Stack Auth differ "
                f"({', '.join(outcome.changed_in_stack_auth)})")
            continue
        say(f"  conflict: {outcome.supabase_user_id} {outcome.email or ''}: changed in Stack Auth "
            f"({', '.join(outcome.changed_in_stack_auth)}); in Supabase ({', '.join(outcome.changed)})")
    if len(updated) > 20 or len(conflicts) > 20:
        say("  ... and more (see user-migration-report.json)")


def _show_identities(result: Any) -> None:
    """The OAuth identities left behind: each is a way a user signed in to Supabase that Stack Auth lacks."""
    left = result.identities_not_carried
    if left:
        say(f"Sign-in identities: {len(left):,} not carried over (a user keeps its other ways to sign in):")
    for outcome, note in left[:20]:
        say(f"  {outcome.supabase_user_id} {outcome.email or ''}: {note}")
    if len(left) > 20:
        say(f"  ... and {len(left) - 20:,} more (notes in user-migration-report.json)")


def _show_mfa(result: Any) -> None:
    """Second factors: how many TOTP secrets come along, and who keeps a factor Stack Auth cannot hold."""
    missing = result.mfa_not_carried
    will = "will be" if result.dry_run else agree(result.totp_carried, "was", "were")
    earlier = f" ({result.totp_done_earlier:,} more set by an earlier run)" if result.totp_done_earlier else ""
    if result.totp_carried or missing or earlier:
        where = "" if result.dry_run else " (mfa-not-carried.json)"
        say(f"Second factors: {counted(result.totp_carried, 'TOTP factor')} {will} carried{earlier}; "
            f"{counted(len(missing), 'user')} {agree(len(missing), 'has', 'have')} a factor that cannot be carried{where}.")
    for outcome in missing[:20]:
        reasons = "; ".join(f["reason"] for f in outcome.mfa_not_carried)
        say(f"  {outcome.supabase_user_id} {outcome.email or ''}: {reasons}")
    if len(missing) > 20:
        say(f"  ... and {len(missing) - 20:,} more")


def _show_uncertain_resets(result: ResetResult) -> None:
    """send-password-resets: sends whose answer was lost, now and in earlier runs."""
    for sid in result.uncertain[:20]:
        say(f"uncertain: {sid}: Stack Auth's answer was lost; the e-mail may or may not have gone")
    if result.uncertain_before:
        say(f"{counted(result.uncertain_before, 'e-mail')} of earlier runs may or may not have gone (answer lost): "
            "not sent again; --resend-uncertain sends them again")


def show_user_matches(result: MapResult) -> None:
    """map-users: the users on either side left unmatched, then the counts."""
    if result.unmatched_supabase:
        print_table("Supabase users without a Stack Auth user", ["supabase user", "e-mail", "why"],
                    [(sid, email or "", why) for sid, email, why in result.unmatched_supabase[:100]])
    if result.unmatched_stack:
        print_table("Stack Auth users matching no Supabase user", ["stack auth user", "e-mail"],
                    [(sid, email or "") for sid, email in result.unmatched_stack[:100]])
    where = "Dry run: nothing was written" if result.dry_run else \
        f"Wrote {result.mapping_path}" if result.mapping_path else "Nothing was written"
    kept = (f" ({result.kept:,} kept from the earlier mapping: their Stack Auth user is there, its Supabase id "
            "and e-mail changed)") if result.kept else ""
    claimed = f"; {len(result.claimed_twice):,} claimed by more than one Stack Auth user" if result.claimed_twice else ""
    say(f"Matched {counted(len(result.matched), 'user')}{kept}; unmatched: {counted(len(result.unmatched_supabase), 'Supabase user')}, "
        f"{counted(len(result.unmatched_stack), 'Stack Auth user')}{claimed}. {where}.")


def show_resets(result: ResetResult) -> None:
    """send-password-resets: how many were (or would be) sent, and the first failures."""
    if result.dry_run:
        say(f"Dry run: would send {counted(len(result.to_send), 'reset e-mail')} "
            f"({result.already_sent:,} already sent or without an e-mail).")
        _show_uncertain_resets(result)
        return
    say(f"Sent {counted(len(result.sent), 'reset e-mail')}; {result.already_sent:,} {agree(result.already_sent, 'was', 'were')} sent before.")
    for sid, why in result.failed[:20]:
        say(f"failed: {sid}: {why}")
    _show_uncertain_resets(result)


def show_purge(result: PurgeResult) -> None:
    say(f"Deleted {', '.join(str(p) for p in result.deleted)}"
        + (f" (before its retainUntil {result.retain_until}, forced)." if result.forced else "."))


def announce(message: str) -> None:
    """The demo's progress, on stderr: a rule above each runbook step, a plain line for the rest."""
    if message.startswith("STEP "):
        console.rule(message, align="left", style="bold")
    else:
        note(message)


def show_demo_result(result: DemoResult) -> None:
    def line(text: str, secret_free: bool = True) -> None:  # never wrapped: paths and commands are copied
        out.print(scrub(text) if secret_free else text, markup=False, highlight=False, soft_wrap=True)

    timings = ", ".join(f"{s.args[0]} {s.seconds:.1f}s" for s in result.steps)
    out.rule("Demo finished", align="left", style="bold")
    line(f"Source: {result.rows:,} readings. Setup {result.setup_seconds:.1f}s; {timings}; "
         f"total {result.seconds:.1f}s.")
    if result.verification:
        passed = sum(1 for t in result.verification if t.get("status") == "pass")
        line(f"Verification: {passed} of {len(result.verification)} tables pass.")
    datadir = Path(result.settings["MIGRATION_DATA_DIR"])
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in datadir.iterdir()) if datadir.exists() else []
    line(f"Files: {datadir}/ ({', '.join(files)})")
    line(f"Log: {result.settings['LOG_FILE_PATH']}")
    if result.kept:
        # Throwaway credentials of servers on 127.0.0.1, printed on purpose so they can be used.
        line(f"Still running (--keep). The settings are in {result.env_file}:")
        line(result.env_file.read_text().rstrip(), secret_free=False)
        line(f"Try the commands by hand: cd {result.workdir} && supamove verify")
        line("Stop and remove everything when done:")
        for command in result.stop_commands:
            line(f"  {command}")
    else:
        line(f"The servers and Stack Auth were stopped and removed; the files stay in {result.workdir} "
             f"(rm -rf {result.workdir} to delete them).")


def show_schema_result(result: SchemaResult, datadir: DataDir, target: str) -> None:
    """schema: what is not kept as it is, the counts, and where it was written or applied."""
    report = result.report
    rows = [(e.label, e.decision, e.reason) for e in report.objects if e.decision != "kept" or e.reason]
    rows += [(f"{o.type} {o.name}" if o.schema == "-" else f"{o.type} {o.schema}.{o.name}", o.decision, o.reason)
             for o in report.others]
    print_table("Schema: what is not kept as it is", ["object", "decision", "reason"], rows)
    kept = Counter(e.type for e in report.objects if e.decision == "kept")
    say("Kept: " + ", ".join(f"{n} {kind}" for kind, n in sorted(kept.items())) + ".")
    if report.extensions:
        say("Extensions: " + ", ".join(f"{x.name} (schema {x.schema})" for x in report.extensions) + ".")
    if report.security_definers:
        say("SECURITY DEFINER (running with their owner's rights; on the target, those of the user applying "
            "schema.sql): " + ", ".join(d.name for d in report.security_definers) + ".")
    counts = report.counts
    summary = f"{counted(counts['kept'], 'object')} kept, {counts['changed']} changed, {counts['left-out']} left out"
    if not result.written:
        say(f"Dry run: {summary}. Nothing was written.")
        return
    say(f"{summary}. Wrote {datadir.schema_sql} and {datadir.schema_report}.")
    if result.applied is not None and result.applied.applied_before:
        say(f"This schema.sql was applied to the target ({target}) at {result.applied.applied_before}, and its "
            f"{counted(result.applied.tables, 'table')} {agree(result.applied.tables, 'is', 'are')} there: nothing to do.")
    elif result.applied is not None:
        say(f"Applied to the target ({target}) in one transaction: {counted(result.applied.tables, 'table')} "
            f"in {result.applied.seconds:.1f}s.")
        for warning in result.applied.warnings:
            note(f"warning: {warning}", logging.WARNING)


def show_migrate_result(result: MigrateResult) -> None:
    """What each step of `migrate` did and when (seconds from the start): the overlap shows; then the verdicts."""
    if result.connections is not None and not result.connections.ok:
        show_connections(result.connections)
    if result.export_plan is not None:
        show_export_plan(result.export_plan)
        if result.export_kept:
            say("The data directory holds a finished export: a real run keeps it, reading nothing again "
                "(`supamove export --force` exports again).")
        say("The users' and the import's plans follow from the export: after it, `supamove migrate-users --dry-run` "
            "and `supamove import --dry-run` show them.")
        return
    if result.export is not None:
        _notes(result.export.plan.notes)
    if result.users is not None and result.users.failure() is not None:
        show_user_outcomes(result.users)
    if result.verification is not None:
        show_verify_report(result.verification)
    print_table("Migration", ["step", "started", "finished", "result"],
                [(name, f"{times[0]:.1f}", f"{times[1]:.1f}", _step_outcome(result, name)) if times
                 else (name, "", "", "not started") for name, times in result.summary_steps])
    if result.failure is None:
        say(f"Migrated in {result.seconds:.1f}s: {counted(result.loaded_rows, 'row')} loaded, every table verified. "
            f"A rerun of `supamove migrate` resumes or re-checks; nothing is done twice.")


def _step_outcome(result: MigrateResult, step: str) -> str:
    """One step's result in a few words, for the summary table; the step that failed, and those it stopped, say so."""
    done = _step_done(result, step)
    if step == result.failed_step:
        return "failed" + (f": {done}" if done else "")
    if step not in result.ended and result.failure is not None:
        return "stopped" + (f": {done}" if done else "")
    return done


def _step_done(result: MigrateResult, step: str) -> str:
    """What one step did, as far as it went."""
    export, users, report = result.export, result.users, result.verification
    if step == "test-connections":
        return "every endpoint usable" if result.connections and result.connections.ok else ""
    if step == "export" and export is not None:
        kept = sum(t.resumed for t in export.tables)
        return f"{counted(len(export.tables) - kept, 'table')}, {counted(export.rows, 'row')}" + (f" ({kept} kept from a previous run)"
                                                                              if kept else "")
    if step == "export" and result.export_reached:
        tables, rows = result.export_reached
        return f"{counted(tables, 'table')}, {counted(rows, 'row')} (kept for a rerun)"
    if step == "export" and result.export_kept:
        return "finished by a previous run: kept (`supamove export --force` exports again)"
    if step == "migrate-users" and users is not None:
        found = f", {users.found_earlier:,} found from an earlier run" if users.found_earlier else ""
        return (f"{users.created:,} created{found}, {len(users.outcomes) - len(users.failed):,} in Stack Auth, "
                f"{len(users.failed):,} failed, {len(users.reset_required):,} need a password reset")
    if step == "import" and result.imported:
        loaded = [t for t in result.imported if not t.skipped]
        return (f"{counted(len(loaded), 'table')}, {counted(result.loaded_rows, 'row')}"
                + (f" ({len(result.imported) - len(loaded)} loaded by a previous run)" if len(loaded) < len(result.imported) else "")
                + (f"; {counted(result.fk_checked, 'foreign key')} checked" if result.fk_checked else "")
                + (f"; {counted(len(result.refreshed), 'materialized view')} refreshed" if result.refreshed else ""))
    if step == "verify" and report is not None:
        summary = report.summary
        return f"{summary['pass']} pass, {summary['warn']} warn, {summary['fail']} fail"
    return ""
