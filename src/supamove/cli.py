"""The `supamove` command: a thin layer that parses options, calls one library step, renders it."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from supamove import __version__, render
from supamove.context import Context
from supamove.errors import SupamoveError
from supamove.log import setup_logging
from supamove.render import RichProgress, say

if TYPE_CHECKING:
    from supamove.importer import Unmapped

F = TypeVar("F", bound=Callable[..., Any])


def _verbose() -> bool:
    """Whether the command line being run has the global --verbose."""
    return bool(click.get_current_context().find_root().params.get("verbose"))


def step(func: F) -> F:
    """Give the command a Context, and turn operator-fixable errors into one line and an exit code."""

    @click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                  help="Data directory (default: MIGRATION_DATA_DIR, else ./migration-data).")
    @functools.wraps(func)
    def wrapper(data_dir: Path | None, **kwargs: Any) -> Any:
        command = click.get_current_context().info_name
        with render.failures_shown(), Context.opened(data_dir, command, _verbose(), kwargs.get("dry_run", False)) as ctx:
            return func(ctx, **kwargs)

    return cast(F, wrapper)


def _web_url(value: str | None) -> str | None:
    """An http(s) URL with a host, else a usage error naming what is wrong."""
    from supamove.config import web_url_problem

    if value is not None and (problem := web_url_problem(value)) is not None:
        raise click.BadParameter(problem)
    return value


dry_run_option = click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
RUNBOOK_ORDER = ["test-connections", "schema", "export", "migrate-users", "import", "verify", "send-password-resets",
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
    logging.captureWarnings(True)  # --verbose is read through click's context: see _verbose()


@main.command("test-connections")
@step
def test_connections(ctx: Context) -> None:
    """Check the source, the target and Stack Auth are reachable and usable.

    Prints for each: reachable, server version, TLS, round-trip latency, and what
    would break a later step (the 6543 pooler port, missing privileges).
    An unset endpoint fails; so does a target that is the source or a Supabase
    project. Exits 0 only when all three are usable, else 1.

    Example: supamove test-connections
    """
    from supamove.connections import check_connections

    report = check_connections(ctx.settings)
    render.show_connections(report)
    if (failure := report.failure()) is not None:
        raise failure
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
@click.option("--not-user-id-column", "not_user_id_columns", multiple=True, metavar="SCHEMA.TABLE.COLUMN",
              help="A column whose values look like user ids but are not: never remapped (repeatable).")
@click.option("--jobs", default=2, show_default=True, type=click.IntRange(1, 64), help="Tables read in parallel.")
@click.option("--force", is_flag=True, help="Export every table again, even those a previous run finished.")
@dry_run_option
@step
def export(ctx: Context, schemas: tuple[str, ...], tables: tuple[str, ...], exclude_tables: tuple[str, ...],
           user_id_columns: tuple[str, ...], not_user_id_columns: tuple[str, ...], jobs: int, force: bool,
           dry_run: bool) -> None:
    """Export every application table and the auth users to JSON Lines files.

    All tables are read from one consistent snapshot. Rerunning after an
    interruption finishes the missing tables and keeps the complete ones.

    Example: supamove export --dry-run && supamove export
    """
    from supamove.export import ExportOptions, preview_export, run_export

    options = ExportOptions(list(schemas) or ["public"], list(tables), list(exclude_tables),
                            list(user_id_columns), jobs, force, list(not_user_id_columns))
    if dry_run:
        plan = preview_export(ctx.source, options)
        render.show_export_plan(plan)
        if plan.values and (failure := plan.values.stop_error()) is not None:
            raise failure
        say("Dry run: nothing was written.")
        return
    with RichProgress("rows").shown() as progress:
        result = run_export(ctx.source, ctx.datadir.ensure(), options, progress)
    render.show_export_result(result, ctx.datadir)


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
def import_command(ctx: Context, disable_fk: bool, truncate_first: bool, unmapped_users: Unmapped, yes: bool,
                   dry_run: bool) -> None:
    """Load the exported tables into the target (DATABASE_URL), user ids remapped.

    Tables load in the target's foreign-key order, each (or each FK cycle) in
    one transaction that also records it in _supamove.import_state: rerunning
    after an interruption skips the loaded tables and never loads one twice.

    Example: supamove import --dry-run && supamove import
    """
    from supamove.importer import ImportOptions, plan_import, run_import

    options = ImportOptions(disable_fk, truncate_first, unmapped_users)
    target = ctx.checked_target()
    if dry_run:
        plan = plan_import(target, ctx.datadir, options)
        render.show_import_plan(plan)
        if (failure := plan.failure(dry_run=True)) is not None:
            raise failure
        say("Dry run: nothing was written.")
        return
    if truncate_first and not yes:
        if not sys.stdin.isatty():
            raise SupamoveError("--truncate-first empties the planned target tables and needs a confirmation",
                                fix="run it in a terminal to answer the question, or add --yes")
        if not click.confirm(f"Empty every planned table in the target ({target.redacted}) before loading?"):
            raise SupamoveError("nothing truncated, nothing loaded: the answer was no",
                                fix="answer yes to empty the tables, or run `supamove import` without --truncate-first")
    with RichProgress("rows").shown() as progress:
        result = run_import(target, ctx.datadir, options, progress)
    render.show_import_result(result, ctx.target.redacted)


@main.command("verify")
@click.option("--skip-checksum", is_flag=True,
              help="Compare row counts only (quick; before import it lists the empty target tables).")
@click.option("--max-diffs", default=10, show_default=True, metavar="N",
              help="Differing rows reported per table.")
@click.option("--jobs", default=2, show_default=True, type=click.IntRange(1, 64), help="Tables compared in parallel.")
@click.option("--tables", "tables", multiple=True, metavar="PATTERN",
              help="Only these tables (name or schema.name, shell patterns; repeatable).")
@click.option("--keep-supabase-ids", "keep", multiple=True, metavar="SCHEMA.TABLE.COLUMN",
              help="A column that keeps Supabase user ids on purpose: reported, not failed (repeatable).")
@step
def verify_command(ctx: Context, skip_checksum: bool, max_diffs: int, jobs: int, tables: tuple[str, ...],
                   keep: tuple[str, ...]) -> None:
    """Compare the source and the target: structure, row counts, checksums, user ids, sequences.

    Each table passes, warns (something could not be compared exactly, said why)
    or fails; the rows that differ are located and listed. Writes
    verification-report.json; exits non-zero when any table fails.

    Example: supamove verify --skip-checksum (before import), supamove verify (after)
    """
    from supamove.verify import VerifyOptions, run_verify

    options = VerifyOptions(skip_checksum, max_diffs, jobs, list(tables), list(keep))
    progress = RichProgress("tables")
    with progress.shown():
        report = run_verify(ctx.source, ctx.checked_target(), ctx.datadir, options, progress)
    if report.tables_from != "metadata.json":
        say("No metadata.json: compared the public tables of the source catalog (run `supamove export` first "
            "to verify what was exported).")
    render.show_verify_report(report)
    summary = report.summary
    say(f"{summary['tables']} tables: {summary['pass']} pass, {summary['warn']} warn, {summary['fail']} fail; "
        f"{summary['sourceRows']:,} source rows, {summary['targetRows']:,} target rows in {report.seconds:.1f}s"
        f"{'' if report.checksums else ' (row counts only)'}. Report: {ctx.datadir.verification_report}")
    if (failure := report.failure()) is not None:
        raise failure


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
    with ctx.stack_auth(concurrency) as client:
        if dry_run:
            result = migrate_users(client, ctx.datadir, options)
        else:
            with RichProgress("users").shown() as progress:
                result = migrate_users(client, ctx.datadir.ensure(), options, progress)
    render.show_user_outcomes(result)
    if (failure := result.failure()) is not None:
        raise failure


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
    from supamove.users.mapusers import map_users

    with ctx.stack_auth() as client:
        result = map_users(client, ctx.datadir if dry_run else ctx.datadir.ensure(), dry_run)
    render.show_user_matches(result, dry_run)


@main.command("send-password-resets")
@click.option("--callback-url", default=None, metavar="URL", callback=lambda c, p, v: _web_url(v),
              help="Your app's password-reset page; Stack Auth appends ?code=... to it.")
@click.option("--resend-uncertain", is_flag=True,
              help="Send again to users whose earlier send lost its answer (they may get two e-mails).")
@dry_run_option
@step
def send_password_resets_command(ctx: Context, callback_url: str | None, resend_uncertain: bool,
                                 dry_run: bool) -> None:
    """Send Stack Auth's password-reset e-mail to every user in password-reset-required.json.

    Users already sent to (password-resets-sent.json) are not sent to again,
    so rerunning after an interruption sends only the rest. The first e-mail
    goes alone: if Stack Auth does not trust the link's domain, nothing else
    is sent. A send whose answer was lost is recorded as uncertain and not
    sent again unless --resend-uncertain is given.

    Example: supamove send-password-resets --callback-url https://app.example.com/handler/password-reset
    """
    from supamove.users.resets import send_password_resets

    if dry_run:
        result = send_password_resets(None, ctx.datadir, callback_url, dry_run=True,
                                      resend_uncertain=resend_uncertain)
        say(f"Dry run: would send {len(result.to_send):,} reset e-mails "
            f"({result.already_sent:,} already sent or without an e-mail).")
        render.show_uncertain_resets(result)
        return
    with ctx.stack_auth(4) as client:
        progress = RichProgress("e-mails")
        with progress.shown():
            result = send_password_resets(client, ctx.datadir, callback_url, progress=progress,
                                          resend_uncertain=resend_uncertain)
    say(f"Sent {len(result.sent):,} reset e-mails; {result.already_sent:,} were sent before.")
    for sid, why in result.failed[:20]:
        say(f"failed: {sid}: {why}")
    render.show_uncertain_resets(result)
    if (failure := result.failure()) is not None:
        raise failure


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

    setup_logging(None, verbose=_verbose())  # no log file yet: an unexpected failure's traceback with --verbose
    with render.failures_shown("the demo could not set up:", "fix: rerun with `supamove --verbose demo` for details"):
        result = run_demo(rows, keep, workdir, _run_in_process, render.announce)
        render.show_demo_result(result)
        if (failure := result.failure()) is not None:
            raise failure


def _run_in_process(args: Sequence[str]) -> int:
    """Run one supamove command line in this process, as the operator would type it; its exit code."""
    try:
        main.main(args=(["--verbose"] if _verbose() else []) + list(args), prog_name="supamove")
    except SystemExit as exc:  # click ends every command line with one, its usage errors shown
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


@main.command("schema")
@click.option("--schema", "schemas", multiple=True, metavar="NAME",
              help="Schema to create (repeatable; default: public). Platform schemas are refused.")
@click.option("--tables", "tables", multiple=True, metavar="PATTERN",
              help="Only these tables (name or schema.name, shell patterns; repeatable).")
@click.option("--exclude-tables", multiple=True, metavar="PATTERN",
              help="Leave these tables out (name or schema.name, shell patterns; repeatable).")
@click.option("--no-auth-shim", is_flag=True,
              help="No auth compatibility schema: leave out the policies and views calling auth.uid() and kin.")
@click.option("--keep-roles", is_flag=True,
              help="Create anon, authenticated, service_role (NOLOGIN) on the target; keep their grants and policies.")
@click.option("--apply", "apply_schema", is_flag=True,
              help="Also create it in the target (DATABASE_URL), in one transaction; refused if a table exists.")
@dry_run_option
@step
def schema_command(ctx: Context, schemas: tuple[str, ...], tables: tuple[str, ...], exclude_tables: tuple[str, ...],
                   no_auth_shim: bool, keep_roles: bool, apply_schema: bool, dry_run: bool) -> None:
    """Write the application's schema for the target: schema.sql and schema-report.json.

    Made by pg_dump --schema-only from the source. What only Supabase has (foreign
    keys to auth.users, triggers on auth tables, grants to its roles, publications)
    is left out and listed; auth.uid() and kin come from a small auth schema.
    Nothing is dropped silently: the report gives every object and the reason.

    Example: supamove schema --dry-run && supamove schema --apply
    """
    from supamove.errors import ConfigError
    from supamove.schema import SchemaOptions, run_schema

    if apply_schema and dry_run:
        raise ConfigError("--apply and --dry-run exclude each other", fix="give one of them")
    options = SchemaOptions(list(schemas) or ["public"], list(tables), list(exclude_tables), not no_auth_shim,
                            keep_roles)
    result = run_schema(ctx.source, ctx.checked_target() if apply_schema else None, ctx.datadir, options, dry_run)
    render.show_schema_result(result, ctx.datadir, ctx.target.redacted if apply_schema else "")
