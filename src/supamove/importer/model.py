"""What the import works with: its options, the plan of each table, the result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from psycopg import sql

from supamove import catalog
from supamove.catalog import QualifiedName, Table
from supamove.errors import SupamoveError
from supamove.metadata import Metadata, TableEntry
from supamove.words import counted

Unmapped = Literal["error", "null", "keep"]


@dataclass
class ImportOptions:
    disable_fk: bool = False
    truncate_first: bool = False
    unmapped_users: Unmapped = "error"
    jobs: int = 2
    # Only these tables of the export, whose files are complete while others may still be exporting: the
    # checks of the whole load (foreign keys after --disable-fk, free sequences) wait for a run without it.
    only: frozenset[tuple[str, str]] | None = None
    split_larger_than_mb: int = 64  # a bigger file loads as --jobs ranges at once; 0: never
    # STACK_AUTH_PROJECT_ID, when set: the users user-mapping.json names must be in that project (a rehearsal's
    # mapping into a staging project would give the rows user ids the application's project does not have).
    stack_auth_project: str | None = None


@dataclass
class ColumnLoad:
    """One column the import writes: its name, how the export encodes it, whether it holds user ids (as its
    values, or inside its JSON)."""

    name: str
    encoding: str
    user_ids: bool = False
    array: bool = False
    json_user_ids: bool = False


@dataclass
class TablePlan(QualifiedName):
    entry: TableEntry
    target: Table | None
    path: Path
    columns: list[ColumnLoad] = field(default_factory=list)
    missing_in_target: list[str] = field(default_factory=list)
    missing_in_export: list[str] = field(default_factory=list)
    user_ids: dict[str, set[str]] = field(default_factory=dict)
    json_unmapped: dict[str, set[str]] = field(default_factory=dict)  # JSON column -> user ids the mapping lacks
    unmapped: dict[str, list[str]] = field(default_factory=dict)
    done: bool = False
    has_rows: bool = False
    resume_split: bool = False  # a crashed run loaded some of its ranges: the rerun loads the others

    @property
    def remapped_counts(self) -> dict[str, int]:
        """Each user-id column's distinct ids that the mapping holds: those the import rewrites."""
        return {c: len(ids) - len(self.unmapped.get(c, [])) for c, ids in self.user_ids.items()}

    @property
    def file_columns(self) -> list[str]:
        """The columns each line of the file holds, in order."""
        return [c.name for c in self.entry.table.columns]

    @property
    def as_is(self) -> bool:
        """A COPY text file the target takes as it is: all its columns loaded, in its order, no user id swapped."""
        return (self.entry.format == "copy" and [c.name for c in self.columns] == self.file_columns
                and not any(c.user_ids or c.json_user_ids for c in self.columns))

    @property
    def json_rewritten(self) -> list[str]:
        """The JSON columns whose user ids the import rewrites (those the export's value check found)."""
        return [c.name for c in self.columns if c.json_user_ids]

    @property
    def schema(self) -> str:
        return self.entry.schema

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def rows(self) -> int:
        return self.entry.row_count or 0

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def alone(self) -> sql.Composable:
        """The table without the tables inheriting from it (they are tables of their own, in the export or
        not); a partitioned table stands for its partitions."""
        partitioned = (self.target or self.entry.table).partitioned
        return self.ident if partitioned else sql.SQL("ONLY {}").format(self.ident)

    @property
    def state_key(self) -> tuple[str, str, str, str]:
        return (self.schema, self.name, self.entry.snapshot or "", self.entry.sha256 or "")


MIXED_SNAPSHOTS = ("the export was resumed in another snapshot than its first tables' (metadata.json: "
                   "snapshotsDiffer) and the source changed in between: with writes to Supabase stopped, run "
                   "`supamove export --force`, then `supamove import --truncate-first`")


@dataclass
class ImportPlan:
    groups: list[list[TablePlan]]
    problems: list[SupamoveError]
    mapping: dict[str, str]
    meta: Metadata
    options: ImportOptions
    views: list[catalog.MaterializedView] = field(default_factory=list)  # refreshed once every table is loaded

    @property
    def tables(self) -> list[TablePlan]:
        return [t for group in self.groups for t in group]

    def parent_fix(self, fix: str) -> str:
        """The fix for a row whose parent the target lacks: a resumed export, its tables read at two moments
        (the source written meanwhile), explains it better than the source's data does."""
        return MIXED_SNAPSHOTS if self.meta.snapshots_differ else fix

    @property
    def cycles(self) -> list[list[TablePlan]]:
        targets = [[t.target for t in g if t.target is not None] for g in self.groups]
        cyclic = {id(g) for g in catalog.cycles([g for g in targets if g])}
        return [g for g, tg in zip(self.groups, targets, strict=True) if id(tg) in cyclic]

    def failure(self, dry_run: bool = False) -> SupamoveError | None:
        """Why the import cannot succeed, or None.

        The real run stops with the first problem; a dry run, which lists every problem, stops
        with one error counting them and the exit code the real run would have.
        """
        if not self.problems:
            return None
        first = self.problems[0]
        if not dry_run:
            return first
        count = counted(len(self.problems), "problem")
        failure = SupamoveError(f"the import cannot succeed: {count} (listed above)",
                                fix="correct them, then run `supamove import --dry-run` again")
        failure.exit_code = first.exit_code
        return failure

    def to_dict(self) -> dict[str, Any]:
        """`import --dry-run --json`: each table in load order with its state, the FK cycles, every problem."""
        def table(t: TablePlan) -> dict[str, Any]:
            return {"schema": t.schema, "table": t.name, "rows": t.rows,
                    "state": "loaded" if t.done else "holds rows" if t.has_rows else "to load",
                    "userIdsRemapped": t.remapped_counts, "jsonUserIdsRewritten": t.json_rewritten,
                    "unmappedUserIds": {c: len(ids) for c, ids in t.unmapped.items()},
                    "missingInTarget": t.missing_in_target, "missingInExport": t.missing_in_export}

        return {"tables": [table(t) for t in self.tables],
                "cycles": [[t.qualified for t in group] for group in self.cycles],
                "materializedViews": [v.qualified for v in self.views],
                "options": {"disableFk": self.options.disable_fk, "truncateFirst": self.options.truncate_first,
                            "unmappedUsers": self.options.unmapped_users},
                "problems": [str(p) for p in self.problems]}


@dataclass
class TableImport(QualifiedName):
    schema: str
    name: str
    rows: int
    seconds: float
    skipped: bool = False
    copy_seconds: float = 0.0  # the rows' part of `seconds` (then indexes and constraints): the rate shown


@dataclass
class ImportResult:
    plan: ImportPlan
    tables: list[TableImport]
    seconds: float
    fk_checked: int = 0
    refreshed: list[str] = field(default_factory=list)  # materialized views, in the order refreshed

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables if not t.skipped)


@dataclass
class WholeLoad:
    """What the import does once every table is loaded: foreign keys checked, materialized views refreshed."""

    foreign_keys: int = 0
    refreshed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Span:
    """A range of the file: its start and end offsets, and how many lines come before it (counted while
    the range loads: asked for only to name a line in an error)."""

    start: int
    end: int
    lines_before: Callable[[], int]
