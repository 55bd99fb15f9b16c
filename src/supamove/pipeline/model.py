"""What `supamove migrate` works with: its options (each step's, derived), its endpoints, and its result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from supamove.errors import SupamoveError
from supamove.export import SPLIT_LARGER_THAN_MB, ExportOptions
from supamove.importer import ImportOptions, TableImport, Unmapped
from supamove.users.migrate import MigrateOptions
from supamove.verify import VerifyOptions

if TYPE_CHECKING:
    from supamove.config import Settings
    from supamove.connections import ConnectionReport
    from supamove.db import Endpoint
    from supamove.export import ExportPlan, ExportResult
    from supamove.users.client import StackAuthClient
    from supamove.users.migrate import MigrationResult
    from supamove.verify import VerifyReport

STEPS = ("test-connections", "export", "migrate-users", "import", "verify")


class Endpoints(Protocol):
    """Where the pipeline reads and writes: the settings, the source, the target (checked), Stack Auth."""

    settings: Settings

    @property
    def source(self) -> Endpoint: ...

    def checked_target(self) -> Endpoint: ...

    def stack_auth(self) -> StackAuthClient: ...


@dataclass
class PipelineOptions:
    """The options of `supamove migrate`: those of the separate commands that matter at the cutover."""

    schemas: list[str] = field(default_factory=lambda: ["public"])
    tables: list[str] = field(default_factory=list)
    exclude_tables: list[str] = field(default_factory=list)
    user_id_columns: list[str] = field(default_factory=list)
    not_user_id_columns: list[str] = field(default_factory=list)
    split_larger_than_mb: int = SPLIT_LARGER_THAN_MB
    table_format: str = "copy"
    jobs: int = 2
    disable_fk: bool = False
    unmapped_users: Unmapped = "error"
    concurrency: int = 8
    keep: list[str] = field(default_factory=list)  # --keep-supabase-ids: schema.table.column kept on purpose
    dry_run: bool = False

    def __post_init__(self) -> None:  # the CLI gives a repeatable option's values as a tuple
        for name in ("schemas", "tables", "exclude_tables", "user_id_columns", "not_user_id_columns", "keep"):
            setattr(self, name, list(getattr(self, name)))

    def export(self) -> ExportOptions:
        return ExportOptions(self.schemas, self.tables, self.exclude_tables, self.user_id_columns, self.jobs,
                             not_user_id_columns=self.not_user_id_columns, split_larger_than_mb=self.split_larger_than_mb,
                             auth_first=True, table_format=self.table_format)

    def users(self) -> MigrateOptions:
        return MigrateOptions(self.concurrency)

    def load(self, only: frozenset[tuple[str, str]] | None = None) -> ImportOptions:
        return ImportOptions(self.disable_fk, False, self.unmapped_users, self.jobs, only, self.split_larger_than_mb)

    def verify(self) -> VerifyOptions:
        return VerifyOptions(jobs=self.jobs, keep_supabase_ids=self.keep)


@dataclass
class MigrateResult:
    """What each step did (None: not reached), when each ran, and the failure that stopped the pipeline."""

    dry_run: bool = False
    connections: ConnectionReport | None = None
    export_plan: ExportPlan | None = None  # a dry run's
    export: ExportResult | None = None  # None with export_kept: the export an earlier run finished
    export_kept: bool = False
    export_reached: tuple[int, int] | None = None  # a failed export: the tables it finished (kept for a rerun), their rows
    users: MigrationResult | None = None
    imported: list[TableImport] = field(default_factory=list)
    fk_checked: int = 0
    refreshed: list[str] = field(default_factory=list)  # materialized views, once every table was loaded
    verification: VerifyReport | None = None
    steps: dict[str, tuple[float, float]] = field(default_factory=dict)  # step -> (started, finished), seconds
    seconds: float = 0.0
    failure: SupamoveError | None = None
    failed_step: str | None = None  # the step whose failure stopped the pipeline
    ended: set[str] = field(default_factory=set)  # the steps that ran to their end
    _started: float = field(default_factory=time.monotonic, repr=False)

    @property
    def timeline(self) -> list[tuple[str, float, float]]:
        """The steps reached, in the runbook's order: (step, started, finished), seconds from the start."""
        return [(name, *self.steps[name]) for name in STEPS if name in self.steps]

    @property
    def not_started(self) -> list[str]:
        """The steps a failure stopped before they began (a dry run begins only the first two, by design)."""
        return [] if self.dry_run or self.failure is None else [name for name in STEPS if name not in self.steps]

    @property
    def summary_steps(self) -> list[tuple[str, tuple[float, float] | None]]:
        """The steps reached and those a failure stopped before they began, in the runbook's order: each with
        (started, finished), or None when it never began."""
        return [(name, self.steps.get(name)) for name in STEPS if name in self.steps or name in self.not_started]

    def begin(self, step: str) -> None:
        self.steps[step] = (self.elapsed(), self.elapsed())

    def end(self, step: str) -> None:
        self.steps[step] = (self.steps.get(step, (self.elapsed(), 0.0))[0], self.elapsed())
        self.ended.add(step)

    def fail(self, step: str, exc: SupamoveError) -> None:
        """The failure that stops the pipeline, and the step it came from."""
        self.failure, self.failed_step = exc, step
        if step not in self.steps:
            self.begin(step)
        for name, (started, _) in self.steps.items():  # when each step it stopped ended
            if name not in self.ended:
                self.steps[name] = (started, self.elapsed())

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    @property
    def loaded_rows(self) -> int:
        return sum(t.rows for t in self.imported if not t.skipped)

    def _exported(self) -> dict[str, int | None]:
        """The export's tables and rows: those it finished, when it failed."""
        if self.export is not None:
            return {"tables": len(self.export.tables), "rows": self.export.rows}
        tables, rows = self.export_reached or (None, None)
        return {"tables": tables, "rows": rows}

    def to_dict(self) -> dict[str, Any]:
        """`migrate --json`: each step's outcome and times, the verification's summary, the failure."""
        return {
            "dryRun": self.dry_run, "ok": self.failure is None, "seconds": round(self.seconds, 3),
            "steps": {name: {"started": round(a, 3), "finished": round(b, 3)} for name, a, b in self.timeline},
            "connections": self.connections.to_dict() if self.connections else None,
            "exportPlan": self.export_plan.to_dict() if self.export_plan else None,
            "notStarted": self.not_started,
            "export": {"kept": self.export_kept, **self._exported()},
            "users": dict(sorted(self.users.counts.items())) if self.users else None,
            "import": {"tables": sum(not t.skipped for t in self.imported), "rows": self.loaded_rows,
                       "loadedBefore": sum(t.skipped for t in self.imported), "foreignKeysChecked": self.fk_checked,
                       "materializedViewsRefreshed": self.refreshed},
            "verify": self.verification.summary if self.verification else None,
            "report": str(self.verification.report_path) if self.verification else None,
            "error": None if self.failure is None else {"message": str(self.failure), "step": self.failed_step,
                                                        "exitCode": self.failure.exit_code},
        }
