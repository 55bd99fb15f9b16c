"""What each step of the pipeline has finished, and so which tables may load now.

Every thread of the pipeline reads and changes the board under its one condition, and waits on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from supamove import catalog
from supamove.metadata import Metadata, TableEntry
from supamove.paths import DataDir

Key = tuple[str, str]


@dataclass
class Board:
    """The tables exported and loaded, whether the user ids can be remapped, and the first failure."""

    datadir: DataDir
    disable_fk: bool
    cond: threading.Condition = field(default_factory=threading.Condition)
    exported: set[Key] = field(default_factory=set)
    loaded: set[Key] = field(default_factory=set)
    loading: set[Key] = field(default_factory=set)  # handed to a load under way
    auth: set[Key] | None = None  # the auth tables of the export, known once metadata.json is written
    meta: Metadata | None = None  # read once the value check is recorded: every entry's user-id columns final
    json_ids: dict[Key, frozenset[str]] = field(default_factory=dict)  # its JSON columns with user ids, by table
    export_over: bool = False
    users_over: bool = False  # every user in Stack Auth and user-mapping.json: user ids can be remapped
    failure: BaseException | None = None
    failed_step: str | None = None  # the step `failure` came from

    def table_exported(self, key: Key) -> None:
        """The export finished a table (called from its threads)."""
        with self.cond:
            if self.auth is None:
                self.auth = {e.key for e in Metadata.load(self.datadir, require_complete=False).auth}
            self.exported.add(key)
            self.cond.notify_all()

    def values_checked(self) -> None:
        """Every entry's user-id columns are final in metadata.json: the tables may start loading."""
        meta = Metadata.load(self.datadir, require_complete=False)
        with self.cond:
            self.meta, self.json_ids = meta, meta.json_user_id_columns()
            self.cond.notify_all()

    def users_done(self) -> None:
        """Every user is in Stack Auth and user-mapping.json: the tables holding user ids may load."""
        with self.cond:
            self.users_over = True
            self.cond.notify_all()

    def update(self, change: Callable[[Board], None]) -> None:
        with self.cond:
            change(self)
            self.cond.notify_all()

    def fail(self, exc: BaseException, step: str) -> None:
        """The first failure stops the pipeline: no step starts new work after it."""
        with self.cond:
            if self.failure is None:
                self.failure, self.failed_step = exc, step
            self.cond.notify_all()

    def wait(self, condition: Callable[[], bool]) -> None:
        """Until `condition` holds or a step failed (in steps, so Ctrl-C is seen in the main thread)."""
        with self.cond:
            while not (self.failure or condition()):
                self.cond.wait(0.5)

    @property
    def users_may_start(self) -> bool:
        return self.export_over or (self.auth is not None and self.auth <= self.exported)

    @property
    def remaining(self) -> list[TableEntry]:
        return [e for e in self.meta.tables if e.key not in self.loaded] if self.meta else []

    @property
    def loads_over(self) -> bool:
        """Every table is loaded, or the export ended without telling which (then the import says what is left)."""
        return (self.meta is not None and not self.remaining) or (self.meta is None and self.export_over)

    def _holds_user_ids(self, table: catalog.Table) -> bool:
        """User-id columns, or JSON the value check found user ids in: the import needs the final mapping."""
        return bool(table.user_id_columns) or table.key in self.json_ids

    def ready(self) -> list[TableEntry]:
        """The tables that may load now, parents before children: exported, user ids mappable, FK parents loaded,
        none of them loading already.

        An FK cycle loads together; with --disable-fk the parents need not come first. Once the export and
        the users are over and no load is under way, every table left is ready (the import itself loads them
        in order, and says why one cannot load).
        """
        if self.meta is None:
            return []
        left = [e for e in self.remaining if e.key not in self.loading]
        if self.export_over and self.users_over and not self.loading:
            return left
        keys = {e.key for e in self.meta.tables}
        chosen: list[TableEntry] = []
        for group in catalog.load_order(e.table for e in left):
            entries = [self.meta.entry(*t.key) for t in group]
            mine = {e.key for e in entries}
            parents = {(fk.ref_schema, fk.ref_table) for t in group for fk in t.foreign_keys} & keys
            if (mine <= self.exported and (self.users_over or not any(self._holds_user_ids(t) for t in group))
                    and (self.disable_fk or parents - mine <= self.loaded | {e.key for e in chosen})):
                chosen += entries
        return chosen
