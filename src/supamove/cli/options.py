"""The options several commands share, each defined once: the commands in supamove.cli take them whole."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several options as one decorator, shared by the commands that take them."""
    return lambda func: functools.reduce(lambda f, d: d(f), reversed(decorators), func)


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
dry_run_option = click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
dry_run_options = options(
    dry_run_option,
    click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as JSON on stdout."))
tables_option = click.option(
    "--tables", multiple=True, metavar="PATTERN",
    help="Only these tables (name or schema.name, shell patterns; repeatable).")
selection_options = options(
    click.option("--schema", "schemas", multiple=True, metavar="NAME", default=["public"],
                 help="Schema to read (repeatable; default: public; all: every application schema; no platform one)."),
    tables_option,
    click.option("--exclude-tables", multiple=True, metavar="PATTERN",
                 help="Leave these tables out (name or schema.name, shell patterns; repeatable)."))
split_option = click.option(
    "--split-tables-larger-than", "split_larger_than_mb", default=64, show_default=True, type=click.IntRange(min=0),
    metavar="MB", help="Bigger tables go as ranges at once (0: never).")


def jobs_option(what: str) -> Callable[[F], F]:
    return click.option("--jobs", default=2, show_default=True, type=click.IntRange(1, 64), help=f"{what} in parallel.")


read_options = options(  # how the export reads the tables: shared by export and migrate
    click.option("--user-id-column", "user_id_columns", multiple=True, metavar="SCHEMA.TABLE.COLUMN",
                 help="A column holding Supabase user ids that no foreign key shows (repeatable)."),
    click.option("--not-user-id-column", "not_user_id_columns", multiple=True, metavar="SCHEMA.TABLE.COLUMN",
                 help="A column whose values look like user ids but are not: never remapped (repeatable)."),
    split_option,
    click.option("--table-format", type=click.Choice(["copy", "jsonl"]), default="copy", show_default=True,
                 help="Application tables' files: COPY text (fastest) or JSON Lines (for JSON tools)."))
load_options = options(
    click.option("--disable-fk", is_flag=True,
                 help="Faster: FK checks off during the load (superuser), checked after it."),
    click.option("--unmapped-users", type=click.Choice(["error", "null", "keep"]), default="error", show_default=True,
                 help="A user id with no Stack Auth mapping: stop, set it NULL, or keep it."))
concurrency_option = click.option(
    "--concurrency", default=8, show_default=True, type=click.IntRange(1, 64), help="Users created at once.")
keep_option = click.option(
    "--keep-supabase-ids", "keep", multiple=True, metavar="S.T.COLUMN", help="Kept on purpose (repeatable).")
