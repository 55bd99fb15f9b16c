"""The `supamove` command: a thin layer that parses options, calls one library step, renders it."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from supamove import __version__
from supamove.config import Settings, load_settings
from supamove.db import Endpoint
from supamove.errors import SupamoveError
from supamove.log import console, get_logger, scrub, setup_logging
from supamove.paths import DataDir
from supamove.ui import RichProgress, human_bytes, print_table, say, show_error

F = TypeVar("F", bound=Callable[..., Any])
log = get_logger("cli")


class Context:
    """What every command gets: settings (with --data-dir applied) and the data directory."""

    def __init__(self, data_dir: Path | None) -> None:
        self.settings: Settings = load_settings(data_dir)
        self.datadir = DataDir(self.settings.MIGRATION_DATA_DIR).check_exists()
        setup_logging(self.settings.LOG_FILE_PATH, verbose=_VERBOSE[0])
        command = click.get_current_context().info_name
        log.debug("STEP %s: started (supamove %s, data dir %s)", command, __version__, self.datadir.root)

    @property
    def source(self) -> Endpoint:
        return Endpoint(self.settings.source_url, "source")

    @property
    def target(self) -> Endpoint:
        return Endpoint(self.settings.target_url, "target")


_VERBOSE = [False]


def step(func: F) -> F:
    """Give the command a Context, and turn operator-fixable errors into one line and an exit code."""

    @click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                  help="Data directory (default: MIGRATION_DATA_DIR, else ./migration-data).")
    @functools.wraps(func)
    def wrapper(data_dir: Path | None, **kwargs: Any) -> Any:
        try:
            started = time.monotonic()
            result = func(Context(data_dir), **kwargs)
            log.debug("STEP %s: finished in %.1fs", click.get_current_context().info_name,
                      time.monotonic() - started)
            return result
        except SupamoveError as exc:
            show_error(str(exc))
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            console.print("[yellow]Interrupted.[/] Run the same command again to resume.")
            sys.exit(130)
        except Exception as exc:  # an unexpected failure still gets one line; the log file has the rest
            get_logger().debug("unexpected failure", exc_info=True)
            show_error(f"unexpected {type(exc).__name__}: {str(exc)[:500]} (see the log file for details)")
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


dry_run_option = click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")


RUNBOOK_ORDER = ["test-connections", "export", "migrate-users", "import", "verify", "send-password-resets",
                 "map-users", "purge-mapping", "demo"]


class RunbookGroup(click.Group):
    """Lists the commands in the order the runbook runs them, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        known = [name for name in RUNBOOK_ORDER if name in self.commands]
        return known + sorted(set(self.commands) - set(known))


@click.group(cls=RunbookGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="supamove")
@click.option("-v", "--verbose", is_flag=True, help="Show debug messages on the terminal too.")
def main(verbose: bool) -> None:
    """Move an application off Supabase: data to PostgreSQL, users to Stack Auth.

    The runbook, in order: test-connections, export, migrate-users, import, verify;
    then send-password-resets, and purge-mapping after 90 days. Settings come from the
    environment and .env (see .env.example); the README has the full runbook.

    Example: supamove demo (the whole runbook on throwaway servers, nothing to configure)
    """
    _VERBOSE[0] = verbose
    logging.captureWarnings(True)


@main.command("test-connections")
@step
def test_connections(ctx: Context) -> None:
    """Check the source, the target and Stack Auth are reachable and usable.

    Prints for each: reachable, server version, TLS, round-trip latency, and what
    would break a later step (the 6543 pooler port, missing privileges).
    Exits non-zero unless every configured endpoint is usable.

    Example: supamove test-connections
    """
    from supamove.connections import check_connections

    checks = check_connections(ctx.settings)
    rows = []
    for c in checks:
        status = "not configured" if not c.configured and not c.errors else (
            "ok" if c.usable else "FAILED")
        tls = "" if c.encrypted is None else ("yes" if c.encrypted else "NO")
        latency = f"{c.latency_ms:.1f} ms" if c.latency_ms is not None else ""
        rows.append((c.name, status, c.version, tls, latency))
    print_table("Connections", ["endpoint", "status", "version", "TLS", "latency"], rows)
    for c in checks:
        for warning in c.warnings:
            say(f"warning: {c.name}: {warning}")
        for error in c.errors:
            say(f"error: {c.name}: {error}")
    databases = checks[:2]
    if not all(c.usable and c.configured for c in databases) or not checks[2].usable:
        raise SupamoveError("not every endpoint is usable", fix="correct the settings named above")
    say("All configured endpoints are usable.")


@main.command("export")
@click.option("--schema", "schemas", multiple=True, metavar="NAME",
              help="Schema to export (repeatable; default: public). Platform schemas are refused.")
@click.option("--tables", "tables", multiple=True, metavar="PATTERN",
              help="Only these tables (name or schema.name, shell patterns; repeatable).")
@click.option("--exclude-tables", multiple=True, metavar="PATTERN",
              help="Leave these tables out (name or schema.name, shell patterns; repeatable).")
@click.option("--user-id-column", "user_id_columns", multiple=True, metavar="SCHEMA.TABLE.COLUMN",
              help="A column holding Supabase user ids that no foreign key shows (repeatable).")
@click.option("--jobs", default=2, show_default=True, help="Tables read in parallel.")
@click.option("--force", is_flag=True, help="Export every table again, even those a previous run finished.")
@dry_run_option
@step
def export(ctx: Context, schemas: tuple[str, ...], tables: tuple[str, ...], exclude_tables: tuple[str, ...],
           user_id_columns: tuple[str, ...], jobs: int, force: bool, dry_run: bool) -> None:
    """Export every application table and the auth users to JSON Lines files.

    All tables are read from one consistent snapshot. Rerunning after an
    interruption finishes the missing tables and keeps the complete ones.

    Example: supamove export --dry-run && supamove export
    """
    from supamove.db import connection
    from supamove.export import ExportOptions, plan_export, run_export

    options = ExportOptions(list(schemas) or ["public"], list(tables), list(exclude_tables),
                            list(user_id_columns), jobs, force)
    if dry_run:
        with connection(ctx.source) as conn:
            plan = plan_export(conn, options)
        _show_export_plan(plan)
        return
    progress = RichProgress("rows")
    with progress.shown():
        result = run_export(ctx.source, ctx.datadir.ensure(), options, progress)
    rows = [(t.qualified, f"{t.rows:,}", human_bytes(t.bytes), f"{t.seconds:.1f}",
             "kept from previous run" if t.resumed else f"{t.rows / t.seconds:,.0f}" if t.seconds else "")
            for t in result.tables]
    print_table("Export summary", ["table", "rows", "size", "seconds", "rows/s"], rows)
    kept = sum(t.resumed for t in result.tables)
    say(f"Exported {len(result.tables) - kept} tables, {result.rows:,} rows in all, in {result.seconds:.1f}s "
        f"to {ctx.datadir.root} (snapshot {result.snapshot})"
        + (f"; {kept} kept from a previous run (--force exports them again)." if kept else "."))


def _show_export_plan(plan: Any) -> None:
    rows: list[tuple[object, ...]] = []
    for order, table in enumerate(plan.tables, 1):
        rows.append((order, table.qualified, f"{table.estimated_rows:,}", human_bytes(table.size_bytes),
                     ", ".join(table.user_id_columns)))
    for table in plan.auth_tables:
        rows.append(("users", table.qualified, f"{table.estimated_rows:,}", human_bytes(table.size_bytes), ""))
    print_table("Export plan (dependency order)", ["#", "table", "est. rows", "size", "user-id columns"], rows)
    for group in plan.cycles:
        say(f"FK cycle or self-reference: {', '.join(t.qualified for t in group)} (loaded together)")
    say(f"Platform schemas skipped: {', '.join(plan.skipped_schemas) or 'none present'}")
    say("Dry run: nothing was written.")


# --- import command ---


@main.command("import")
@click.option("--disable-fk", is_flag=True,
              help="Faster: FK checks off during the load (needs a superuser), every FK checked after it.")
@click.option("--truncate-first", is_flag=True,
              help="Empty every planned table (one TRUNCATE) and forget earlier progress, after asking.")
@click.option("--unmapped-users", type=click.Choice(["error", "null", "keep"]), default="error",
              show_default=True, help="A user id with no Stack Auth mapping: stop, set it NULL, or keep it.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before --truncate-first empties tables.")
@dry_run_option
@step
def import_command(ctx: Context, disable_fk: bool, truncate_first: bool, unmapped_users: str, yes: bool,
                   dry_run: bool) -> None:
    """Load the exported tables into the target (DATABASE_URL), user ids remapped.

    Tables load in the target's foreign-key order, each (or each FK cycle) in
    one transaction that also records it in _supamove.import_state: rerunning
    after an interruption skips the loaded tables and never loads one twice.

    Example: supamove import --dry-run && supamove import
    """
    from supamove.importer import ImportOptions, plan_import, run_import

    options = ImportOptions(disable_fk, truncate_first, unmapped_users)  # type: ignore[arg-type]
    if dry_run:
        plan = plan_import(ctx.target, ctx.datadir, options)
        _show_import_plan(plan)
        if plan.problems:
            failure = SupamoveError(f"the import cannot succeed: {len(plan.problems)} problems (listed above)",
                                    fix="correct them, then run `supamove import --dry-run` again")
            failure.exit_code = plan.problems[0].exit_code  # as the real run would exit
            raise failure
        say("Dry run: nothing was written.")
        return
    if truncate_first and not yes:
        if not sys.stdin.isatty():
            raise SupamoveError("--truncate-first empties the planned target tables and needs a confirmation",
                                fix="run it in a terminal to answer the question, or add --yes")
        click.confirm(f"Empty every planned table in the target ({ctx.target.redacted}) before loading?",
                      abort=True)
    progress = RichProgress("rows")
    with progress.shown():
        result = run_import(ctx.target, ctx.datadir, options, progress)
    rows = [(t.qualified, f"{t.rows:,}", f"{t.seconds:.1f}",
             "loaded by a previous run" if t.skipped else f"{t.rows / t.seconds:,.0f}" if t.seconds else "")
            for t in result.tables]
    print_table("Import summary", ["table", "rows", "seconds", "rows/s"], rows)
    if disable_fk:
        say(f"Checked {result.fk_checked} foreign keys after the load: no orphan rows.")
    say(f"Imported {result.rows:,} rows into {sum(not t.skipped for t in result.tables)} tables "
        f"in {result.seconds:.1f}s ({ctx.target.redacted}).")


def _show_import_plan(plan: Any) -> None:
    rows = []
    for order, table in enumerate(plan.tables, 1):
        remapped = ", ".join(f"{c} ({len(ids):,} ids)" for c, ids in table.user_ids.items())
        state = "loaded by a previous run" if table.done else "HOLDS ROWS" if table.has_rows else ""
        rows.append((order, table.qualified, f"{table.rows:,}", remapped, state))
    print_table("Import plan (target's FK order)", ["#", "table", "rows", "user ids remapped", "state"], rows)
    for group in plan.cycles:
        say(f"FK cycle or self-reference: {', '.join(t.qualified for t in group)} (one transaction)")
    for table in plan.tables:
        for column, ids in table.unmapped.items():
            say(f"unmapped user ids in {table.qualified}.{column}: {len(ids):,} ({', '.join(ids[:5])}"
                f"{' ...' if len(ids) > 5 else ''}), --unmapped-users {plan.options.unmapped_users}")
        if table.missing_in_target:
            say(f"columns of {table.qualified} missing in the target: {', '.join(table.missing_in_target)}")
        if table.missing_in_export:
            say(f"columns of {table.qualified} missing in the export (target default used): "
                f"{', '.join(table.missing_in_export)}")
    mode = "FK checks off during the load, every FK checked after it" if plan.options.disable_fk \
        else "every constraint checked before each table commits"
    say(f"Mode: {mode}{'; every planned table truncated first' if plan.options.truncate_first else ''}.")
    for problem in plan.problems:
        say(f"problem: {problem}")


# --- end import command ---


# --- verify command ---


@main.command("verify")
@click.option("--skip-checksum", is_flag=True,
              help="Compare row counts only (quick; before import it lists the empty target tables).")
@click.option("--max-diffs", default=10, show_default=True, metavar="N",
              help="Differing rows reported per table.")
@click.option("--jobs", default=2, show_default=True, help="Tables compared in parallel.")
@click.option("--tables", "tables", multiple=True, metavar="PATTERN",
              help="Only these tables (name or schema.name, shell patterns; repeatable).")
@step
def verify_command(ctx: Context, skip_checksum: bool, max_diffs: int, jobs: int, tables: tuple[str, ...]) -> None:
    """Compare the source and the target: row counts, checksums, sequences.

    Each table passes, warns (something could not be compared exactly, said why)
    or fails; the rows that differ are located and listed. Writes
    verification-report.json; exits non-zero when any table fails.

    Example: supamove verify --skip-checksum (before import), supamove verify (after)
    """
    from supamove.errors import VerificationFailed
    from supamove.verify import VerifyOptions, run_verify

    options = VerifyOptions(skip_checksum, max_diffs, jobs, list(tables))
    progress = RichProgress("tables")
    with progress.shown():
        report = run_verify(ctx.source, ctx.target, ctx.datadir, options, progress)
    if report.tables_from != "metadata.json":
        say("No metadata.json: compared the public tables of the source catalog (run `supamove export` first "
            "to verify what was exported).")
    _show_verify_report(report)
    summary = report.summary
    say(f"{summary['tables']} tables: {summary['pass']} pass, {summary['warn']} warn, {summary['fail']} fail; "
        f"{summary['sourceRows']:,} source rows, {summary['targetRows']:,} target rows in {report.seconds:.1f}s"
        f"{'' if report.checksums else ' (row counts only)'}. Report: {ctx.datadir.verification_report}")
    if not report.ok:
        from supamove.verify import EMPTY_TARGET

        failed = [t for t in report.tables if t.status == "fail"]
        if all(t.reason == EMPTY_TARGET for t in failed):  # verify run before import: name the step
            raise VerificationFailed(f"{len(failed)} of {summary['tables']} target tables are empty",
                                     fix="run `supamove import` first, then `supamove verify`")
        raise VerificationFailed(f"{summary['fail']} of {summary['tables']} tables do not match",
                                 fix=f"see the reasons above and in {ctx.datadir.verification_report}")


def _show_verify_report(report: Any) -> None:
    rows = [(t.qualified, "" if t.source_rows is None else f"{t.source_rows:,}",
             "" if t.target_rows is None else f"{t.target_rows:,}",
             "" if t.source_checksum is None else ("same" if t.source_checksum == t.target_checksum else "differs"),
             t.status.upper() if t.status != "pass" else "pass", t.reason or "") for t in report.tables]
    print_table("Verification", ["table", "source rows", "target rows", "checksum", "status", "reason"], rows)
    for t in report.tables:
        for diff in t.differences:
            say(f"  {t.qualified}: {_describe_difference(diff)}")


def _describe_difference(diff: dict[str, Any]) -> str:
    where = ", ".join(f"{k}={v}" for k, v in diff.get("key", {}).items())
    if diff["kind"] == "changed":
        cols = "; ".join(f"{c['column']}: {_sql_text(c['source'])} -> {_sql_text(c['target'])}"
                         for c in diff["columns"])
        return f"row {where} differs: {cols}"
    side = "source only" if diff["kind"] == "missing" else "target only"
    times = f" x{diff['count']}" if diff.get("count", 1) > 1 else ""
    if where:
        return f"row {where} {diff['kind']} ({side}){times}"
    return f"row {diff['kind']} ({side}){times}: {diff.get('row')}"


def _sql_text(value: str | None) -> str:
    return "NULL" if value is None else repr(value)


# --- end verify command ---


# --- users commands ---


def _stack_auth(ctx: Context, concurrency: int = 8) -> Any:
    from supamove.users.client import StackAuthClient

    return StackAuthClient.from_settings(ctx.settings, concurrency=concurrency)


@main.command("migrate-users")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Users created in parallel.")
@click.option("--no-password-hashes", is_flag=True,
              help="Do not import password hashes: every e-mail user gets a password reset instead.")
@dry_run_option
@step
def migrate_users_command(ctx: Context, concurrency: int, no_password_hashes: bool, dry_run: bool) -> None:
    """Create every exported Supabase Auth user in Stack Auth and write user-mapping.json.

    bcrypt password hashes are imported, so those users keep their password.
    Users already in the mapping, or already in Stack Auth with the same
    e-mail, are never created twice; rerunning after an interruption resumes.
    Writes user-migration-report.json and password-reset-required.json.

    Example: supamove migrate-users --dry-run && supamove migrate-users
    """
    from supamove.users.migrate import MigrateOptions, migrate_users

    options = MigrateOptions(concurrency, not no_password_hashes, dry_run)
    with _stack_auth(ctx, concurrency) as client:
        if dry_run:
            result = migrate_users(client, ctx.datadir, options)
        else:
            progress = RichProgress("users")
            with progress.shown():
                result = migrate_users(client, ctx.datadir.ensure(), options, progress)
    _show_user_outcomes(result)


def _show_user_outcomes(result: Any) -> None:
    from collections import Counter

    by_kind = Counter((o.status, o.reason or "") for o in result.outcomes)
    verb = {"create": "would create", "link": "would link", "done": "already migrated"} if result.dry_run else {}
    rows = [(verb.get(status, status), reason, f"{n:,}") for (status, reason), n in sorted(by_kind.items())]
    print_table("Users (dry run)" if result.dry_run else "Users", ["outcome", "reason", "users"], rows)
    noteworthy = [o for o in result.outcomes if o.status not in ("migrated", "create", "done")]
    if noteworthy:
        shown = noteworthy[:50]
        print_table("Not created", ["supabase user", "e-mail", "outcome", "reason"],
                    [(o.supabase_user_id, o.email or "", verb.get(o.status, o.status), o.reason or "") for o in shown])
        if len(noteworthy) > len(shown):
            say(f"... and {len(noteworthy) - len(shown):,} more (see user-migration-report.json after a real run)")
    resets = len(result.reset_required)
    if result.dry_run:
        say(f"Dry run: {resets:,} users would need a password reset. Nothing was created.")
        return
    say(f"Created {result.created:,} users in {result.seconds:.1f}s ({result.users_per_second:,.0f} users/s); "
        f"{resets:,} need a password reset (password-reset-required.json). Report: {result.report_path}")
    if result.failed:
        from supamove.errors import StackAuthError

        raise StackAuthError(f"{len(result.failed):,} users failed (see {result.report_path})",
                             fix="correct the cause shown for them, then run the same command again")


@main.command("map-users")
@dry_run_option
@step
def map_users_command(ctx: Context, dry_run: bool) -> None:
    """Rebuild user-mapping.json from users already in Stack Auth, creating none.

    Matches by the Supabase id supamove keeps in server_metadata, then by
    e-mail (trimmed, lower-cased), one Stack Auth user per Supabase user,
    and lists the users it could not match.

    Example: supamove map-users --dry-run
    """
    from supamove.users.migrate import map_users

    with _stack_auth(ctx) as client:
        result = map_users(client, ctx.datadir if dry_run else ctx.datadir.ensure(), dry_run)
    if result.unmatched_supabase:
        print_table("Supabase users without a Stack Auth user", ["supabase user", "e-mail", "why"],
                    [(sid, email or "", why) for sid, email, why in result.unmatched_supabase[:100]])
    if result.unmatched_stack:
        print_table("Stack Auth users matching no Supabase user", ["stack auth user", "e-mail"],
                    [(sid, email or "") for sid, email in result.unmatched_stack[:100]])
    where = "Dry run: nothing was written" if dry_run else f"Wrote {result.mapping_path}"
    say(f"Matched {len(result.matched):,} users; {len(result.unmatched_supabase):,} Supabase and "
        f"{len(result.unmatched_stack):,} Stack Auth users unmatched. {where}.")


@main.command("send-password-resets")
@click.option("--callback-url", default=None, metavar="URL",
              help="Your app's password-reset page; Stack Auth appends ?code=... to it.")
@dry_run_option
@step
def send_password_resets_command(ctx: Context, callback_url: str | None, dry_run: bool) -> None:
    """Send Stack Auth's password-reset e-mail to every user in password-reset-required.json.

    Users already sent to (password-resets-sent.json) are not sent to again,
    so rerunning after an interruption sends only the rest.

    Example: supamove send-password-resets --callback-url https://app.example.com/handler/password-reset
    """
    from supamove.users.resets import send_password_resets

    if dry_run:
        result = send_password_resets(None, ctx.datadir, callback_url, dry_run=True)
        say(f"Dry run: would send {len(result.to_send):,} reset e-mails "
            f"({result.already_sent:,} already sent or without an e-mail).")
        return
    with _stack_auth(ctx, 4) as client:
        progress = RichProgress("e-mails")
        with progress.shown():
            result = send_password_resets(client, ctx.datadir, callback_url, progress=progress)
    say(f"Sent {len(result.sent):,} reset e-mails; {result.already_sent:,} were sent before.")
    if result.failed:
        from supamove.errors import StackAuthError

        for sid, why in result.failed[:20]:
            say(f"failed: {sid}: {why}")
        raise StackAuthError(f"{len(result.failed):,} reset e-mails failed", fix="correct the cause, then rerun")


@main.command("purge-mapping")
@click.option("--force", is_flag=True, help="Delete it even before its retainUntil date.")
@step
def purge_mapping_command(ctx: Context, force: bool) -> None:
    """Delete user-mapping.json once its retention period (retainUntil, 90 days) is over.

    Refuses before retainUntil unless --force is given.

    Example: supamove purge-mapping
    """
    from supamove.users.resets import purge_mapping

    result = purge_mapping(ctx.datadir, force)
    say(f"Deleted {', '.join(str(p) for p in result.deleted)}"
        + (f" (before its retainUntil {result.retain_until}, forced)." if result.forced else "."))


# --- end users commands ---


# --- demo command ---
@main.command("demo")
@click.option("--rows", default=250_000, show_default=True, type=click.IntRange(min=100), metavar="N",
              help="Size of the demo source: rows of the biggest table (readings); the others scale with it.")
@click.option("--keep", is_flag=True,
              help="Leave the servers and Stack Auth running; print their connection strings and .env.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Where the .env, the log and migration-data/ go (default: a new temporary directory).")
def demo(rows: int, keep: bool, workdir: Path | None) -> None:
    """Run the whole runbook on throwaway servers, with nothing to configure.

    Starts a source PostgreSQL shaped like a Supabase project (auth schema and a
    FreshTrack-like application), an empty target with the application schema and a
    local Stack Auth, writes their settings to a .env, then runs test-connections,
    export, migrate-users, import and verify exactly as the runbook does, and stops
    everything (unless --keep). Uses an installed PostgreSQL server when there is
    one, else the one pip installed with supamove (pgserver).

    Example: supamove demo --rows 5000 --keep
    """
    from supamove.sandbox.demo import run_demo

    try:
        result = run_demo(rows, keep, workdir, _run_in_process, _announce)
    except SupamoveError as exc:
        show_error(str(exc))
        sys.exit(exc.exit_code)
    except Exception as exc:  # a sandbox that failed to start: one line, the traceback with --verbose
        if _VERBOSE[0]:
            raise
        console.print(f"[bold red]Error:[/] the demo could not set up: {type(exc).__name__}: "
                      f"{scrub(str(exc))[:500]} (fix: rerun with `supamove --verbose demo` for details)",
                      highlight=False)
        sys.exit(1)
    _show_demo_result(result)
    failed = result.failed_step
    if failed is not None:
        raise click.ClickException(f"the demo stopped at `{failed.command}` (exit {failed.exit_code}); "
                                   f"its messages are above, the full log is {result.settings['LOG_FILE_PATH']}")
    if not result.ok:
        raise click.ClickException("verification did not pass every table: see the table above")


def _run_in_process(args: Any) -> int:
    """Run one supamove command line in this process, as the operator would type it; its exit code."""
    argv = (["--verbose"] if _VERBOSE[0] else []) + list(args)
    verbose = _VERBOSE[0]
    try:
        code = main.main(args=argv, prog_name="supamove", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.Abort:
        code = 1
    finally:
        _VERBOSE[0] = verbose
    return code if isinstance(code, int) else 0


def _announce(message: str) -> None:
    if message.startswith("STEP "):
        console.rule(message, align="left", style="bold")
    else:
        say(message)


def _show_demo_result(result: Any) -> None:
    def line(text: str, secret_free: bool = True) -> None:  # never wrapped: paths and commands are copied
        console.print(scrub(text) if secret_free else text, markup=False, highlight=False, soft_wrap=True)

    timings = ", ".join(f"{s.args[0]} {s.seconds:.1f}s" for s in result.steps)
    console.rule("Demo finished", align="left", style="bold")
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


# --- end demo command ---
