"""The user mapping, and every exported user id checked against it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from supamove import catalog
from supamove.db import Endpoint
from supamove.errors import DataFileError, StackAuthError, SupamoveError
from supamove.importer.model import ImportOptions, TablePlan
from supamove.paths import DataDir
from supamove.usermap import UserMapping
from supamove.words import agree, counted

SHOWN_IDS = 5


Read = Callable[[], "dict[str, str] | SupamoveError | None"]


def reader(datadir: DataDir, project: str | None = None) -> Read:
    """user-mapping.json read at most once for the plan, when first asked for: Supabase id to Stack Auth id,
    None when there is none, the error when it is damaged or maps into another Stack Auth project than
    `project` (STACK_AUTH_PROJECT_ID, when set)."""
    @functools.cache
    def read() -> dict[str, str] | SupamoveError | None:
        if not datadir.user_mapping.exists():
            return None
        try:
            mapping = UserMapping.load(datadir.user_mapping)
            if project:
                mapping.check_project(project)
            return mapping.by_supabase()
        except (DataFileError, StackAuthError) as exc:
            return exc

    return read


def mapping_for(plans: list[TablePlan], datadir: DataDir, read: Read,
                problems: list[SupamoveError]) -> tuple[dict[str, str], bool]:
    """Supabase id to Stack Auth id; required only when some user-id column holds ids, or some JSON column
    (the export's value check found them there)."""
    if not any(ids for p in plans for ids in p.user_ids.values()) and not any(p.json_rewritten for p in plans):
        return {}, False
    mapping = read()
    if mapping is None:
        problems.append(DataFileError(f"{datadir.user_mapping} not found: the exported tables hold user ids to remap",
                                      fix="run `supamove migrate-users` first"))
        return {}, False
    if isinstance(mapping, SupamoveError):
        problems.append(mapping)
        return {}, False
    return mapping, True


def unmapped_users(plans: list[TablePlan], datadir: DataDir, read: Read) -> frozenset[str]:
    """The exported Supabase users the mapping lacks (those migrate-users failed, most often: a few), for the
    scan of the JSON columns with user ids; none to look for without such a column, a mapping or the users."""
    users = datadir.table_file("auth", "users")
    if not any(p.json_rewritten for p in plans) or not users.exists():
        return frozenset()
    mapped = read()
    if not isinstance(mapped, dict):  # mapping_for says what is wrong with it
        return frozenset()
    return frozenset(sid for sid in _user_ids(users) if sid not in mapped)


def _user_ids(path: Path) -> Iterator[str]:
    with open(path, "rb") as handle:
        for line in handle:
            try:
                user = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # migrate-users names a damaged line of this file
            if isinstance(user, dict) and isinstance(user.get("id"), str):
                yield user["id"].lower()


def check_unmapped(target: Endpoint, plans: list[TablePlan], mapping: dict[str, str], loaded: bool, options: ImportOptions,
                    problems: list[SupamoveError]) -> None:
    if not loaded:  # no mapping (its own problem is listed): no id can be remapped
        for plan in plans:
            plan.unmapped = {name: sorted(ids) for name, ids in plan.user_ids.items() if ids}
        return
    for plan in plans:
        for name, ids in plan.user_ids.items():
            missing = sorted(i for i in ids if i not in mapping)
            if not missing:
                continue
            plan.unmapped[name] = missing
            column = next(c for c in plan.columns if c.name == name)
            where = f"{plan.qualified}.{name}"
            shown = shown_ids(missing)
            if options.unmapped_users == "error":
                problems.append(DataFileError(
                    f"{counted(len(missing), 'user id')} in {where} {agree(len(missing), 'has', 'have')} no Stack Auth mapping: {shown}",
                    fix="run `supamove migrate-users` to migrate these users, or rerun with "
                        "--unmapped-users null (or keep)"))
            elif options.unmapped_users == "null" and not column.array and not _nullable(plan, name):
                problems.append(target.error(
                    f"{where} is NOT NULL in the target: --unmapped-users null cannot clear its "
                    f"{counted(len(missing), 'unmapped user id')} ({shown})",
                    "run `supamove migrate-users` to migrate these users, or use --unmapped-users keep"))
    for plan in plans:
        _unmapped_in_json(plan, options, problems)


def _unmapped_in_json(plan: TablePlan, options: ImportOptions, problems: list[SupamoveError]) -> None:
    """User ids of Supabase users the mapping lacks, inside JSON: they stay as they are (a string in JSON is
    never emptied), so only --unmapped-users keep or null lets them through, as for a user-id column."""
    for name, ids in plan.json_unmapped.items():
        if not ids:
            continue
        missing = plan.unmapped[name] = sorted(ids)
        if options.unmapped_users == "error":
            problems.append(DataFileError(
                f"{counted(len(missing), 'user id')} inside the JSON of {plan.qualified}.{name} {agree(len(missing), 'has', 'have')} no Stack Auth mapping: "
                f"{shown_ids(missing)}",
                fix="run `supamove migrate-users` to migrate these users, or rerun with --unmapped-users keep "
                    "(inside JSON they stay as they are, with null too)"))


def shown_ids(ids: list[str]) -> str:
    """The first ids of a list, and how many more (messages and warnings)."""
    return catalog.listed(ids, SHOWN_IDS)


def _nullable(plan: TablePlan, name: str) -> bool:
    col = plan.target.column(name) if plan.target else None
    return bool(col and col.nullable)
