"""The `supamove` command: a thin layer that parses options, calls one library step, renders it."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from supamove import __version__, render
from supamove.cli.options import (
    concurrency_option,
    dry_run_option,
    dry_run_options,
    jobs_option,
    json_option,
    keep_option,
    load_options,
    options,
    read_options,
    selection_options,
    split_option,
    tables_option,
)
from supamove.context import Context
from supamove.errors import exit_codes

F = TypeVar("F", bound=Callable[..., Any])
Names = tuple[str, ...]  # a repeatable option's values
EPILOG = f"\b\n{exit_codes()}"  # every --help ends with the exit codes (\b: printed as written)


def _verbose() -> bool:
    return bool(click.get_current_context().find_root().params.get("verbose"))


def command(name: str) -> Callable[[F], click.Command]:
    """A runbook command: it gets a Context (see Context.run), and its --help ends with --data-dir and the exit codes."""
    def make(func: F) -> click.Command:
        @functools.wraps(func)
        def wrapper(data_dir: Path | None, **kwargs: Any) -> Any:
            return Context.run(func, data_dir, name, _verbose(), kwargs)
        wrapper.__dict__.setdefault("__click_params__", []).insert(0, click.Option(  # the first given is listed last
            ["--data-dir"], type=click.Path(path_type=Path), default=None, help="Data directory (default: MIGRATION_DATA_DIR, else ./migration-data)."))
        return main.command(name, epilog=EPILOG)(wrapper)
    return make


class RunbookGroup(click.Group):
    """Lists the commands in the runbook's order (as this file defines them); prints --json's document for an option click refuses."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        as_json = "--json" in ctx.args  # read first: click's own invoke takes the arguments out of ctx.args
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:  # an option refused before its command ran: --json still gets a document
            render.refused_json(as_json, exc.format_message(), exc.exit_code)
            raise


@click.group(cls=RunbookGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=EPILOG)
@click.version_option(__version__, prog_name="supamove")
@click.option("-v", "--verbose", is_flag=True, help="Show debug messages on the terminal too.")
def main(verbose: bool) -> None:
    """Move an application off Supabase: data to PostgreSQL, users to Stack Auth.

    The runbook: test-connections, schema, export, migrate-users, import, verify (or all five as one: migrate),
    send-password-resets; after 90 days, purge-mapping. Settings: environment, .env. Results: stdout; the rest: stderr.

    Example: supamove demo (the whole runbook on throwaway servers, nothing to configure)
    """
    logging.captureWarnings(True)  # --verbose is read through click's context: see _verbose()


@command("test-connections")
@json_option
def test_connections(ctx: Context, as_json: bool) -> None:
    """Check the source, the target and Stack Auth: reachable, version, TLS, latency, what would break a later step.

    Example: supamove test-connections
    """
    from supamove.connections import check_connections
    report = check_connections(ctx.settings, ctx.datadir)
    render.show(report, as_json, render.show_connections, report.failure())


@command("schema")
@selection_options
@click.option("--no-auth-shim", is_flag=True, help="No auth schema: leave out what calls auth.uid() and kin.")
@click.option("--keep-roles", is_flag=True, help="Create anon, authenticated, service_role; keep grants, policies.")
@click.option("--apply", "apply_schema", is_flag=True, help="Also create it in the target, in one transaction.")
@click.option("--owner", default=None, metavar="ROLE", help="With --apply: create it as this role (SET ROLE), which then owns it.")
@dry_run_options
def schema_command(ctx: Context, schemas: Names, tables: Names, exclude_tables: Names, no_auth_shim: bool, keep_roles: bool, apply_schema: bool, owner: str | None, dry_run: bool, as_json: bool) -> None:
    """Write the application's schema for the target: schema.sql and schema-report.json.

    From pg_dump --schema-only; what only Supabase has is left out, each object listed with the reason.

    Example: supamove schema --dry-run && supamove schema --apply
    """
    from supamove.schema import SchemaOptions, run_schema
    options = SchemaOptions(list(schemas), list(tables), list(exclude_tables), not no_auth_shim, keep_roles, owner)
    result = run_schema(ctx.source, ctx.checked_target() if apply_schema else None, ctx.datadir, options, dry_run)
    render.show(result, as_json, lambda r: render.show_schema_result(r, ctx.datadir, ctx.target.redacted if apply_schema else ""))


@command("export")
@selection_options
@read_options
@jobs_option("Tables read")
@click.option("--force", is_flag=True, help="Export every table again, even those a previous run finished.")
@click.option("--auth-only", is_flag=True, help="Only the auth tables again, from a fresh snapshot; the rest kept.")
@dry_run_options
def export(ctx: Context, dry_run: bool, as_json: bool, **given: Any) -> None:
    """Export every application table (COPY text files) and the auth users (JSON Lines).

    All tables are read from one snapshot. A rerun after an interruption finishes the missing tables.

    Example: supamove export --dry-run && supamove export
    """
    from supamove.export import ExportOptions, preview_export, run_export
    options = ExportOptions(**cast(dict[str, Any], {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}))
    if dry_run:
        plan = preview_export(ctx.source, options)
        return render.show(plan, as_json, render.show_export_plan, plan.failure())
    with render.progress("rows") as progress:
        result = run_export(ctx.source, ctx.datadir.ensure(), options, progress)
    render.show_export_result(result, ctx.datadir)


@command("migrate-users")
@concurrency_option
@click.option("--no-password-hashes", is_flag=True, help="Import no password hash: every such user gets a reset.")
@click.option("--overwrite-changed", is_flag=True, help="Update users changed in Stack Auth meanwhile (else a conflict).")
@dry_run_options
def migrate_users_command(ctx: Context, concurrency: int, no_password_hashes: bool, overwrite_changed: bool, dry_run: bool, as_json: bool) -> None:
    """Create every exported Supabase Auth user in Stack Auth and write user-mapping.json.

    bcrypt hashes are imported. None is created twice; a rerun resumes, then updates users changed in Supabase.

    Example: supamove migrate-users --dry-run && supamove migrate-users
    """
    from supamove.users.migrate import MigrateOptions, migrate_users
    options = MigrateOptions(concurrency, not no_password_hashes, dry_run, overwrite_changed)
    with ctx.stack_auth() as client, render.progress("users", shown=not dry_run) as progress:
        result = migrate_users(client, ctx.datadir, options, progress)
    render.show(result, as_json, render.show_user_outcomes, result.failure())


@command("import")
@click.option("--truncate-first", is_flag=True, help="Empty every planned table and forget its progress, after asking.")
@load_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask before --truncate-first empties tables.")
@jobs_option("Tables loaded")
@split_option
@dry_run_options
def import_command(ctx: Context, yes: bool, dry_run: bool, as_json: bool, **given: Any) -> None:
    """Load the exported tables into the target (DATABASE_URL), user ids remapped.

    Each table (or FK cycle) loads in one transaction that records it: a rerun never loads a table twice.

    Example: supamove import --dry-run && supamove import
    """
    from supamove.importer import ImportOptions, plan_import, run_import
    options = ImportOptions(**given, stack_auth_project=ctx.settings.STACK_AUTH_PROJECT_ID)
    target = ctx.checked_target()
    if dry_run:
        plan = plan_import(target, ctx.datadir, options)
        return render.show(plan, as_json, render.show_import_plan, plan.failure(dry_run=True))
    if options.truncate_first and not yes:
        ctx.confirm_truncate(target, functools.partial(click.confirm, err=True))
    with render.progress("rows") as progress:
        result = run_import(target, ctx.datadir, options, progress)
    render.show_import_result(result, ctx.target.redacted)


@command("verify")
@click.option("--skip-checksum", is_flag=True, help="Compare row counts only (quick; before import too).")
@click.option("--max-diffs", default=10, show_default=True, metavar="N", type=click.IntRange(min=0), help="Differing rows reported per table.")
@jobs_option("Tables compared")
@tables_option
@keep_option
@click.option("--before-export", is_flag=True, help="No export yet: compare the source's public tables with the target's.")
@json_option
def verify(ctx: Context, skip_checksum: bool, max_diffs: int, jobs: int, tables: Names, keep: Names, before_export: bool, as_json: bool) -> None:
    """Compare the source and the target: structure, row counts, checksums, user ids, sequences.

    Each table passes, warns or fails, the differing rows listed. Writes verification-report.json.

    Example: supamove verify --skip-checksum (before import), supamove verify (after)
    """
    from supamove.verify import VerifyOptions, run_verify
    with render.progress("rows", {"tables": "tables"}) as progress:
        report = run_verify(ctx.source, ctx.checked_target(), ctx.datadir, VerifyOptions(skip_checksum, max_diffs, jobs, list(tables), list(keep), before_export), progress)
    render.show(report, as_json, render.show_verify_report, report.failure())


@command("migrate")
@options(selection_options, read_options, jobs_option("Tables read, loaded, compared"), load_options, concurrency_option)
@keep_option
@options(dry_run_option, json_option)
def migrate(ctx: Context, as_json: bool, **given: Any) -> None:
    """The cutover in one run: test-connections, export, migrate-users, import and verify, overlapped.

    The same files and state as the separate commands: a rerun, or any of them, resumes where it stopped.

    Example: supamove migrate --dry-run && supamove migrate --disable-fk
    """
    from supamove.pipeline import PipelineOptions, run_migrate
    options = PipelineOptions(**given)  # the options are named as PipelineOptions' fields
    with render.progress("rows", render.PIPELINE_UNITS, shown=not options.dry_run) as progress:
        result = run_migrate(ctx, ctx.datadir, options, progress)
    render.show(result, as_json, render.show_migrate_result, result.failure)


@command("send-password-resets")
@click.option("--callback-url", default=None, metavar="URL", help="Your app's password-reset page (gets ?code=...).")
@click.option("--resend-uncertain", is_flag=True, help="Send again where an earlier send lost its answer.")
@dry_run_options
def send_password_resets_command(ctx: Context, callback_url: str | None, resend_uncertain: bool, dry_run: bool, as_json: bool) -> None:
    """Send Stack Auth's password-reset e-mail to each user in password-reset-required.json not sent one before.

    The first goes alone: if Stack Auth does not trust the link's domain, nothing else is sent.

    Example: supamove send-password-resets --callback-url https://app.example.com/handler/password-reset
    """
    from supamove.users.resets import check_callback_url, send_password_resets
    check_callback_url(callback_url, required=not dry_run)  # a wrong URL is named before the settings are read
    if dry_run:
        result = send_password_resets(None, ctx.datadir, callback_url, True, resend_uncertain=resend_uncertain)
        return render.show(result, as_json, render.show_resets)
    with ctx.stack_auth() as client, render.progress("e-mails") as progress:
        result = send_password_resets(client, ctx.datadir, callback_url, progress=progress, resend_uncertain=resend_uncertain)
    render.show(result, False, render.show_resets, result.failure())


@command("map-users")
@click.option("--forget-missing", is_flag=True, help="Rebuild even when none of the users user-mapping.json names is in this Stack Auth.")
@dry_run_options
def map_users_command(ctx: Context, forget_missing: bool, dry_run: bool, as_json: bool) -> None:
    """Rebuild user-mapping.json from users already in Stack Auth, creating none.

    Matches by the Supabase id kept in server_metadata, then by e-mail; lists the users left unmatched.

    Example: supamove map-users --dry-run
    """
    from supamove.users.mapusers import map_users
    with ctx.stack_auth() as client:
        result = map_users(client, ctx.datadir, dry_run, forget_missing=forget_missing)
    render.show(result, as_json, render.show_user_matches, result.failure())


@command("purge-mapping")
@click.option("--force", is_flag=True, help="Delete it even before its retainUntil date.")
def purge_mapping_command(ctx: Context, force: bool) -> None:
    """Delete user-mapping.json once its retention period (retainUntil, 90 days) is over; before it, only with --force.

    Example: supamove purge-mapping
    """
    from supamove.users.resets import purge_mapping
    render.show_purge(purge_mapping(ctx.datadir, force))


@main.command("demo", epilog=EPILOG)
@click.option("--rows", default=250_000, show_default=True, type=click.IntRange(min=100), metavar="N",
              help="Rows of the demo source's biggest table (readings); the others scale with it.")
@click.option("--keep", is_flag=True, help="Leave the servers and Stack Auth running; print their .env.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Where the .env, the log and migration-data/ go (default: a new temporary directory).")
def demo(rows: int, keep: bool, workdir: Path | None) -> None:
    """Run the whole runbook on throwaway servers (a Supabase-shaped source, a target, Stack Auth): no settings.

    Example: supamove demo --rows 5000 --keep
    """
    from supamove.context import run_demo_command
    run_demo_command(rows, keep, workdir, main, _verbose())
