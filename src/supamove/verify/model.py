"""What verify works with: its options, each table's verdict with the rows that differ, the report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from supamove.catalog import listed, qualify
from supamove.errors import VerificationFailed
from supamove.pgtools import LARGE_OBJECTS_COMMAND

AUTH_CHANGED = "changed on the source since the export"
WRITTEN_SINCE = "Supabase was written after the export"  # a table whose source rows are not the export's
EMPTY_TARGET = "target table is empty: run `supamove import`"  # which says so if it loaded the table before
PASS, WARN, FAIL = "pass", "warn", "fail"
Kind = Literal["missing", "extra", "changed"]
Texts = Mapping[str, str | None]  # column name -> canonical text (None for NULL)


@dataclass
class VerifyOptions:
    """What `supamove verify` was asked to do."""

    skip_checksum: bool = False
    max_diffs: int = 10
    jobs: int = 2
    tables: list[str] = field(default_factory=list)
    keep_supabase_ids: list[str] = field(default_factory=list)  # schema.table.column kept on purpose
    before_export: bool = False  # no export yet: compare the source's public tables (--before-export)


@dataclass(frozen=True)
class UserIdCount:
    """How many target rows of one column still hold Supabase user ids of the mapping."""

    column: str
    rows: int
    example: str | None = None  # one of those ids
    kept: bool = False  # named by --keep-supabase-ids (or --not-user-id-column at the export)

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "rows": self.rows, "example": self.example, "kept": self.kept}


@dataclass
class SequenceCheck:
    """A sequence of the export that no compared table uses, checked on its own."""

    schema: str
    name: str
    source_next: int | None
    target_next: int | None
    failures: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return FAIL if self.failures else PASS

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "name": self.name, "sourceNext": self.source_next,
                "targetNext": self.target_next, "status": self.status, "reason": "; ".join(self.failures) or None}


@dataclass
class ViewCheck:
    """A materialized view of the export's schemas: populated on the target when it is on the source.

    Its rows come from the target's tables when the import refreshes it, so only their count is compared,
    and a different count only warns: a view over now(), or over tables that did not move, differs.
    """

    schema: str
    name: str
    source_rows: int | None = None  # None: not there, not populated, or not readable by that side's user
    target_rows: int | None = None
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return FAIL if self.failures else WARN if self.warnings else PASS

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "name": self.name, "sourceRows": self.source_rows,
                "targetRows": self.target_rows, "status": self.status,
                "reason": "; ".join(self.failures + self.warnings) or None}


@dataclass
class LargeObjectCheck:
    """The source's large objects (pg_largeobject), which supamove does not move: the same identifiers on the target."""

    source_count: int
    target_count: int
    failures: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return FAIL if self.failures else PASS

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source_count, "target": self.target_count, "status": self.status,
                "reason": "; ".join(self.failures) or None}


@dataclass
class AuthCheck:
    """An auth table on the source: what supamove reads of it, as the export saw it and as it is now."""

    schema: str
    name: str
    exported_rows: int
    source_rows: int | None = None  # None: not read
    failures: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return FAIL if self.failures else PASS

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "name": self.name, "exportedRows": self.exported_rows,
                "sourceRows": self.source_rows, "status": self.status, "reason": "; ".join(self.failures) or None}


@dataclass(frozen=True)
class ColumnChange:
    """One column of a changed row: its text on each side, cut when long."""

    column: str
    source: str | None
    target: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "source": self.source, "target": self.target}


@dataclass(frozen=True)
class Difference:
    """One row that differs: on the source only (missing), on the target only (extra), or changed."""

    kind: Kind
    key: Texts | None = None  # the row's key; None when the table has none
    count: int = 1  # identical rows that are missing or extra
    columns: tuple[ColumnChange, ...] = ()  # for a changed row: the columns that differ
    row: Texts | None = None  # for a row without a usable key: the whole row

    def to_dict(self) -> dict[str, Any]:
        """The report's form, keys in this order; a row found by its key shows a count only when over 1."""
        found: dict[str, Any] = {"kind": self.kind}
        if self.key is not None:
            found["key"] = dict(self.key)
        if self.count > 1 or self.row is not None:
            found["count"] = self.count
        if self.kind == "changed":
            found["columns"] = [c.to_dict() for c in self.columns]
        if self.row is not None:
            found["row"] = dict(self.row)
        return found


@dataclass
class TableCheck:
    """One table's verdict, with the reasons for anything less than pass."""

    schema: str
    table: str
    source_rows: int | None = None
    target_rows: int | None = None
    source_checksum: str | None = None
    target_checksum: str | None = None
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    more_differences: bool = False  # more rows differ than the --max-diffs shown
    seconds: float = 0.0
    supabase_ids: list[UserIdCount] | None = None  # None: not counted (no user-mapping.json)
    supabase_id_seconds: float = 0.0

    @property
    def qualified(self) -> str:
        return qualify(self.schema, self.table)

    @property
    def status(self) -> str:
        return FAIL if self.failures else WARN if self.warnings else PASS

    @property
    def reason(self) -> str | None:
        return "; ".join(self.failures + self.warnings) or None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "table": self.table, "sourceRows": self.source_rows,
                "targetRows": self.target_rows, "sourceChecksum": self.source_checksum,
                "targetChecksum": self.target_checksum, "status": self.status, "reason": self.reason,
                "differences": [d.to_dict() for d in self.differences], "moreDifferences": self.more_differences,
                "supabaseUserIds": None if self.supabase_ids is None else [c.to_dict() for c in self.supabase_ids]}


@dataclass
class VerifyReport:
    """Every table's verdict; written as verification-report.json (see the README for its form)."""

    generated_at: str
    source: str
    target: str
    tables: list[TableCheck]
    seconds: float
    checksums: bool
    tables_from: str  # "metadata.json" or "source catalog"
    report_path: Path | None = None  # where the report was written
    sequences: list[SequenceCheck] = field(default_factory=list)  # those no compared table uses
    full_report_kept: bool = False  # counts only, written beside a full verification's report, not over it
    views: list[ViewCheck] = field(default_factory=list)  # materialized views of the export's schemas
    auth: list[AuthCheck] = field(default_factory=list)  # the auth tables on the source, since the export
    large_objects: LargeObjectCheck | None = None  # None: the source holds none

    def count(self, status: str) -> int:
        return sum(1 for t in self.tables if t.status == status)

    @property
    def ok(self) -> bool:
        return bool(self.tables) and self.count(FAIL) == 0 and not self.failed_sequences and not self.failed_views \
            and not self.failed_auth and not self.large_objects_failed

    @property
    def large_objects_failed(self) -> bool:
        return self.large_objects is not None and self.large_objects.status == FAIL

    @property
    def failed_auth(self) -> list[AuthCheck]:
        return [a for a in self.auth if a.status == FAIL]

    @property
    def failed_sequences(self) -> list[SequenceCheck]:
        return [s for s in self.sequences if s.status == FAIL]

    @property
    def failed_views(self) -> list[ViewCheck]:
        return [v for v in self.views if v.status == FAIL]

    def failure(self) -> VerificationFailed | None:
        """The error verify ends with when a table fails or none was compared, else None."""
        if self.ok:
            return None
        if not self.tables:  # nothing compared proves nothing
            return VerificationFailed(f"no table was compared ({self.tables_from} lists none): nothing was verified",
                                      fix="export the application's tables (`supamove export --dry-run` shows "
                                          "which; check --schema and --tables), import them, then verify")
        failed = [t for t in self.tables if t.status == FAIL]
        if not failed:
            return self._beyond_tables()
        if (stale := self._written_since(failed)) is not None:
            return stale
        if all(t.reason == EMPTY_TARGET for t in failed):  # verify run before import: name the step
            return VerificationFailed(f"{len(failed)} of {len(self.tables)} target tables are empty",
                                      fix="run `supamove import` first, then `supamove verify`")
        return VerificationFailed(f"{len(failed)} of {len(self.tables)} tables do not match",
                                  fix=f"see the reasons above and in {self.report_path}")

    def _beyond_tables(self) -> VerificationFailed:
        """The failure when every table matches: the large objects, Supabase Auth's users, the materialized views
        or the sequences no table uses."""
        if self.large_objects is not None and self.large_objects.failures:
            return VerificationFailed(self.large_objects.failures[0], fix=f"move them: {LARGE_OBJECTS_COMMAND}, then "
                                                                          "run `supamove verify` again")
        if self.failed_auth:
            users = self.failed_auth[0]
            changed = any(AUTH_CHANGED in a.failures for a in self.failed_auth)
            return VerificationFailed(f"Supabase Auth's users are not all in Stack Auth ({users.schema}.{users.name}): "
                                      + (f"{AUTH_CHANGED}: a sign-up or a change made since is not there" if changed
                                         else users.failures[0]),
                                      fix=("run `supamove export --auth-only`, then " if changed else "run ")
                                      + "`supamove migrate-users` (it carries only what changed), then `supamove "
                                        "verify` again")
        if not self.failed_sequences:
            views = self.failed_views
            return VerificationFailed(f"{len(views)} materialized view{'s are' if len(views) > 1 else ' is'} "
                                      f"not ready on the target: {views[0].failures[0]}",
                                      fix="create a missing one (`supamove schema` creates them all), then run "
                                          "`supamove import` again: it refreshes every materialized view once "
                                          f"every table is loaded; see {self.report_path}")
        first = self.failed_sequences[0]
        return VerificationFailed(f"{len(self.failed_sequences)} sequence"
                                  f"{'s are' if len(self.failed_sequences) > 1 else ' is'} not continued: "
                                  f"{first.failures[0]}",
                                  fix="run `supamove import` again (it continues every sequence of the "
                                      f"export), or setval() it by hand; see {self.report_path}")

    def _written_since(self, failed: list[TableCheck]) -> VerificationFailed | None:
        """The failure naming Supabase written after the export, when a failed table's source rows show it."""
        since = [t for t in failed if any(f.startswith(WRITTEN_SINCE) for f in t.failures)]
        if not since:
            return None
        return VerificationFailed(
            f"{len(failed)} of {len(self.tables)} tables do not match; {WRITTEN_SINCE}: the source rows of "
            f"{listed([t.qualified for t in since])} are not the "
            "export's (metadata.json)",
            fix="keep Supabase frozen (maintenance mode), then run `supamove export --force`, `supamove "
                "migrate-users` and `supamove import --truncate-first --yes`, then `supamove verify` again")

    @property
    def summary(self) -> dict[str, Any]:
        return {"tables": len(self.tables), "pass": self.count(PASS), "warn": self.count(WARN),
                "fail": self.count(FAIL), "sourceRows": sum(t.source_rows or 0 for t in self.tables),
                "targetRows": sum(t.target_rows or 0 for t in self.tables),
                "seconds": round(self.seconds, 3), "checksums": self.checksums,
                "sequences": len(self.sequences), "sequencesFailed": len(self.failed_sequences),
                "materializedViews": len(self.views), "materializedViewsFailed": len(self.failed_views),
                "authTables": len(self.auth), "authTablesFailed": len(self.failed_auth),
                "supabaseUserIdSeconds": round(sum(t.supabase_id_seconds for t in self.tables), 3)}

    def to_dict(self) -> dict[str, Any]:
        return {"generatedAt": self.generated_at, "source": self.source, "target": self.target,
                "tablesFrom": self.tables_from, "tables": [t.to_dict() for t in self.tables],
                "sequences": [s.to_dict() for s in self.sequences],
                "materializedViews": [v.to_dict() for v in self.views], "auth": [a.to_dict() for a in self.auth],
                "largeObjects": self.large_objects.to_dict() if self.large_objects else None,
                "summary": self.summary}
