"""`metadata.json`: the export's table of contents, a public contract (see the README)."""

from __future__ import annotations

import re
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from supamove import __version__, catalog
from supamove.authstate import Fingerprint
from supamove.catalog import Column, ForeignKey, QualifiedName, SequenceRef, Table
from supamove.clock import age, parse_iso
from supamove.errors import ConfigError, DataFileError, SupamoveError
from supamove.files import read_json, write_json
from supamove.paths import FORMAT_VERSION, READ_VERSIONS, DataDir

# The keys of a table entry this version writes, in their order; any other key is kept as it is.
ENTRY_KEYS = ("schema", "name", "file", "partitioned", "columns", "primaryKey", "uniqueKeys", "foreignKeys",
              "userIdColumns", "userIdFoundBy", "sequences", "estimatedRows", "complete", "rowCount", "bytes",
              "sha256", "snapshot", "exportedAt", "fingerprint", "snapshotXids", "format")
# The top-level keys, in the order this version writes them.
HEADER_KEYS = ("formatVersion", "tool", "source", "snapshot", "snapshotsDiffer", "startedAt", "finishedAt",
               "schemas", "skippedSchemas", "unexportedSchemas", "options", "loadOrder", "sequences",
               "materializedViews", "tables", "auth", "userIdValueCheck")
# What `source` records of the database the export read (guard.ServerIdentity.recorded()); absent in older exports.
SOURCE_IDENTITY = ("systemIdentifier", "database", "databaseOid")


def _column_to_dict(c: Column, encoding: str) -> dict[str, Any]:
    return {"name": c.name, "type": c.type, "baseType": c.base_type, "nullable": c.nullable,
            "generated": c.generated, "identity": c.identity, "encoding": encoding}


def _fk_to_dict(fk: ForeignKey) -> dict[str, Any]:
    return {"name": fk.name, "columns": list(fk.columns), "refSchema": fk.ref_schema, "refTable": fk.ref_table,
            "refColumns": list(fk.ref_columns), "deferrable": fk.deferrable}


def _table_from_dict(entry: dict[str, Any]) -> Table:
    return Table(
        schema=entry["schema"],
        name=entry["name"],
        columns=tuple(Column(c["name"], c["type"], c["nullable"], c["generated"], c["identity"],
                             c.get("baseType", c["type"])) for c in entry["columns"]),
        primary_key=tuple(entry["primaryKey"]),
        foreign_keys=tuple(ForeignKey(f["name"], tuple(f["columns"]), f["refSchema"], f["refTable"],
                                      tuple(f["refColumns"]), f["deferrable"]) for f in entry["foreignKeys"]),
        partitioned=entry.get("partitioned", False),
        estimated_rows=entry.get("estimatedRows", 0),
        user_id_columns=tuple(entry["userIdColumns"]),
        user_id_found_by=tuple(entry.get("userIdFoundBy", {}).items()),
        sequences=tuple(SequenceRef(s["column"], s["schema"], s["name"]) for s in entry["sequences"]),
        unique_keys=tuple(tuple(k) for k in entry.get("uniqueKeys", [])),
    )


@dataclass
class TableEntry(QualifiedName):
    """One table of the export: its definition at the export and, once its file is whole, the file's facts."""

    table: Table
    file: str  # relative to the data directory: tables/public.readings.copy
    encodings: dict[str, str]  # how a JSON Lines file writes each column: "number", "boolean" or "text"
    complete: bool = False
    row_count: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    snapshot: str | None = None
    exported_at: str | None = None
    fingerprint: Fingerprint | None = None  # an auth table's, in the export's snapshot (authstate)
    # The transactions its snapshot saw (pg_current_snapshot(), `xmin:xmax:xip,...`): verify counts the source
    # rows written after it. Absent in exports of older versions.
    snapshot_xids: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys of other versions, written back untouched
    format: str = "copy"  # the file's: "copy" (COPY text) or "jsonl" (JSON Lines: auth tables, format version 1)

    @property
    def schema(self) -> str:
        return self.table.schema

    @property
    def name(self) -> str:
        return self.table.name

    def encoding(self, column: str) -> str:
        return self.encodings[column]

    @classmethod
    def new(cls, table: Table, datadir: DataDir, fmt: str = "copy") -> TableEntry:
        """The entry of a table about to be exported: no file yet."""
        path = datadir.table_file(table.schema, table.name, fmt).relative_to(datadir.root)
        return cls(table, str(path), {c.name: c.encoding for c in table.columns},
                   format="jsonl" if path.suffix == ".jsonl" else "copy")

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> TableEntry:
        table = _table_from_dict(entry)
        encodings = {c["name"]: c.get("encoding") or col.encoding
                     for c, col in zip(entry["columns"], table.columns, strict=True)}
        return cls(table, entry["file"], encodings, bool(entry.get("complete")), _count(entry, "rowCount"),
                   _count(entry, "bytes"), entry.get("sha256"), entry.get("snapshot"), entry.get("exportedAt"),
                   Fingerprint.from_dict(entry.get("fingerprint")), _snapshot_xids(entry),
                   {k: v for k, v in entry.items() if k not in ENTRY_KEYS}, _file_format(entry))

    def to_dict(self) -> dict[str, Any]:
        t = self.table
        return {
            "schema": t.schema, "name": t.name, "file": self.file, "format": self.format, "partitioned": t.partitioned,
            "columns": [_column_to_dict(c, self.encodings[c.name]) for c in t.columns],
            "primaryKey": list(t.primary_key), "uniqueKeys": [list(k) for k in t.unique_keys],
            "foreignKeys": [_fk_to_dict(fk) for fk in t.foreign_keys],
            "userIdColumns": list(t.user_id_columns), "userIdFoundBy": dict(t.user_id_found_by),
            "sequences": [{"column": s.column, "schema": s.schema, "name": s.name} for s in t.sequences],
            "estimatedRows": t.estimated_rows, "complete": self.complete, "rowCount": self.row_count,
            "bytes": self.bytes, "sha256": self.sha256, "snapshot": self.snapshot, "exportedAt": self.exported_at,
            **({"fingerprint": self.fingerprint.to_dict()} if self.fingerprint else {}),
            **({"snapshotXids": self.snapshot_xids} if self.snapshot_xids else {}),
            **self.extra,
        }

    def same_columns(self, other: TableEntry) -> bool:
        """Whether the two entries' files would hold the same columns, written the same way."""
        return self.table.columns == other.table.columns and self.encodings == other.encodings


@dataclass(frozen=True)
class SequenceState(QualifiedName):
    """A sequence's state at the export, for the target to continue from."""

    schema: str
    name: str
    last_value: int
    is_called: bool

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequenceState:
        return cls(data["schema"], data["name"], int(data["lastValue"]), bool(data["isCalled"]))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "name": self.name, "lastValue": self.last_value, "isCalled": self.is_called}


@dataclass
class Metadata:
    """The parsed metadata.json, saved atomically (and thread-safely) after every table."""

    datadir: DataDir
    # serverVersion, url (password redacted), and the database's SOURCE_IDENTITY
    source: dict[str, Any] = field(default_factory=dict)
    snapshot: str | None = None  # the snapshot of the latest run
    started_at: str | None = None
    finished_at: str | None = None
    schemas: list[str] = field(default_factory=list)
    skipped_schemas: list[str] = field(default_factory=list)
    load_order: list[list[str]] = field(default_factory=list)
    sequences: list[SequenceState] = field(default_factory=list)
    tables: list[TableEntry] = field(default_factory=list)
    auth: list[TableEntry] = field(default_factory=list)
    unexported_schemas: list[dict[str, Any]] | None = None  # absent in exports of older versions
    user_id_value_check: dict[str, Any] | None = None  # absent in exports of older versions
    snapshots_differ: bool | None = None  # absent in exports of older versions
    # The latest run's --tables, --exclude-tables, --user-id-column, --not-user-id-column; absent in older exports.
    options: dict[str, Any] | None = None
    tool: str = f"supamove {__version__}"
    # The source's materialized views of the exported schemas: {schema, name, populated}; absent in older exports.
    materialized_views: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys of other versions, written back untouched
    # Each snapshot of this run (its id) -> the transactions it saw: given to the tables exported in it.
    snapshot_xids: dict[str, str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def complete(self) -> bool:
        return self.finished_at is not None

    @property
    def entries(self) -> list[TableEntry]:
        return self.tables + self.auth

    def json_user_id_columns(self) -> dict[tuple[str, str], frozenset[str]]:
        """The json/jsonb columns the export's value check found user ids in, by table (the import rewrites
        them; verify reads them back)."""
        found: dict[tuple[str, str], set[str]] = {}
        for key in (self.user_id_value_check or {}).get("jsonKeys") or []:
            found.setdefault((key["schema"], key["table"]), set()).add(key["column"])
        return {table: frozenset(columns) for table, columns in found.items()}

    def entry(self, schema: str, name: str) -> TableEntry:
        for entry in self.entries:
            if entry.key == (schema, name):
                return entry
        raise KeyError(f"{schema}.{name}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON of metadata.json, keys in the order this version writes them; absent optional keys stay absent."""
        values: dict[str, Any] = {
            "formatVersion": FORMAT_VERSION, "tool": self.tool, "source": self.source, "snapshot": self.snapshot,
            "snapshotsDiffer": self.snapshots_differ, "startedAt": self.started_at,
            "finishedAt": self.finished_at, "schemas": self.schemas, "skippedSchemas": self.skipped_schemas,
            "unexportedSchemas": self.unexported_schemas, "options": self.options, "loadOrder": self.load_order,
            "sequences": [s.to_dict() for s in self.sequences], "materializedViews": self.materialized_views,
            "tables": [e.to_dict() for e in self.tables],
            "auth": [e.to_dict() for e in self.auth], "userIdValueCheck": self.user_id_value_check}
        optional = {"snapshotsDiffer", "unexportedSchemas", "options", "materializedViews", "userIdValueCheck"}
        data = {k: v for k, v in values.items() if v is not None or k not in optional}
        return {**data, **self.extra}

    def save(self) -> None:
        with self._lock:
            write_json(self.datadir.metadata, self.to_dict())

    @classmethod
    def from_dict(cls, datadir: DataDir, data: dict[str, Any]) -> Metadata:
        try:
            return cls(
                datadir, data["source"], data.get("snapshot"), data.get("startedAt"), data.get("finishedAt"),
                list(data.get("schemas", [])), list(data.get("skippedSchemas", [])), list(data.get("loadOrder", [])),
                [SequenceState.from_dict(s) for s in data.get("sequences", [])],
                [TableEntry.from_dict(e) for e in data["tables"]], [TableEntry.from_dict(e) for e in data.get("auth", [])],
                data.get("unexportedSchemas"), data.get("userIdValueCheck"), data.get("snapshotsDiffer"),
                data.get("options"), str(data.get("tool", "")), materialized_views=data.get("materializedViews"),
                extra={k: v for k, v in data.items() if k not in HEADER_KEYS})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataFileError(f"{datadir.metadata} is damaged: {type(exc).__name__} {exc}",
                                fix="restore it, or run `supamove export --force` to export again") from exc

    @classmethod
    def load(cls, datadir: DataDir, require_complete: bool = True) -> Metadata:
        data = read_json(datadir.metadata, "export")
        if not isinstance(data, dict) or data.get("formatVersion") not in READ_VERSIONS:
            version = data.get("formatVersion") if isinstance(data, dict) else None
            if not isinstance(version, int) or isinstance(version, bool):  # "1", null, no key: not a version
                raise DataFileError(f"{datadir.metadata} has no formatVersion number "
                                    f"({orjson.dumps(version).decode()[:40]} instead)",
                                    fix="restore it, or run `supamove export --force` to export again")
            raise DataFileError(
                f"{datadir.metadata} is format version {version}, this supamove reads versions "
                f"{' and '.join(map(str, READ_VERSIONS))}",
                fix="run `supamove export --force` to export again with this version of supamove")
        meta = cls.from_dict(datadir, data)
        if require_complete and not meta.complete:
            raise DataFileError(f"the export in {datadir.root} is not finished",
                                fix="run `supamove export` again to complete it")
        return meta

    @classmethod
    def previous(cls, datadir: DataDir) -> Metadata | None:
        """The metadata.json an earlier export left, finished or not; None when there is none or it is unreadable."""
        if not datadir.metadata.exists():
            return None
        try:
            return cls.load(datadir, require_complete=False)
        except SupamoveError:
            return None  # a damaged one is written anew, as no export had run

    # The export's bookkeeping: what an earlier run finished, what this run must (re)write.

    def refuse_rerun(self) -> None:
        """A finished export is not exported again without --force: its files may already be loaded."""
        when = self.finished_at
        if when is None:
            return
        try:
            ago = f" ({age(parse_iso(when))} ago)"
        except ValueError:
            ago = ""
        raise ConfigError(
            f"the export in {self.datadir.root} finished at {when}{ago}",
            fix="run `supamove export --force` to export again (`--force --tables SCHEMA.TABLE` re-exports some "
                "tables only), or set --data-dir to a new directory")

    def from_other_source(self, identity: dict[str, Any]) -> bool:
        """Whether this export was read from another database than `identity` (ServerIdentity.recorded()).

        An export of an older version records no identity: taken for this source's. A system identifier
        that either run's user could not read is not compared; the database's oid and name always are.
        """
        recorded = {key: self.source.get(key) for key in SOURCE_IDENTITY}
        if recorded["databaseOid"] is None:
            return False
        systems = (recorded["systemIdentifier"], identity["systemIdentifier"])
        if None not in systems and systems[0] != systems[1]:
            return True
        return (recorded["database"], recorded["databaseOid"]) != (identity["database"], identity["databaseOid"])

    def other_source_error(self, identity: dict[str, Any], url: str) -> ConfigError:
        """The refusal to add another source's rows to this export: its files would mix two databases."""
        return ConfigError(
            f"the export in {self.datadir.root} was read from another database: {self.source.get('url')} "
            f"({_described(self.source)}); SUPABASE_DB_URL now names {url} ({_described(identity)})",
            fix="run `supamove export --force` to export everything again from this source, or set --data-dir "
                "to another directory")

    def is_done(self, key: tuple[str, str]) -> bool:
        """The table's file is whole, as recorded: a rerun keeps it."""
        entry = self.entry(*key)
        if not entry.complete:
            return False
        path = self.datadir.export_file(entry.file)
        return path.exists() and path.stat().st_size == entry.bytes

    def finish_table(self, key: tuple[str, str], rows: int, size: int, sha256: str, snapshot: str,
                     exported_at: str) -> None:
        with self._lock:
            entry = self.entry(*key)
            entry.complete, entry.row_count, entry.bytes, entry.sha256 = True, rows, size, sha256
            entry.snapshot, entry.exported_at = snapshot, exported_at
            entry.snapshot_xids = self.snapshot_xids.get(snapshot)
            write_json(self.datadir.metadata, self.to_dict())

    def record_fingerprints(self, fingerprints: dict[tuple[str, str], Fingerprint]) -> None:
        """The auth tables' fingerprints, written with the entries in one go."""
        with self._lock:
            for key, fingerprint in fingerprints.items():
                self.entry(*key).fingerprint = fingerprint
            write_json(self.datadir.metadata, self.to_dict())

    def set_user_id_columns(self, table: Table) -> None:
        """Which columns hold user ids, as the value check decided: recorded even for a kept file."""
        with self._lock:
            entry = self.entry(*table.key)
            entry.table = replace(entry.table, user_id_columns=table.user_id_columns,
                                  user_id_found_by=table.user_id_found_by)

    def record_value_check(self, check: dict[str, Any], checked: set[tuple[str, str]]) -> None:
        """The value check of this run's tables, beside what an earlier run found in the tables it kept."""
        old = self.user_id_value_check or {}
        others = {e.key for e in self.tables} - checked  # tables kept from an earlier run
        kept = {k: [x for x in old.get(k, []) if (x["schema"], x["table"]) in others] for k in ("columns", "jsonKeys")}
        self.user_id_value_check = {**check, "columns": kept["columns"] + check["columns"],
                                    "jsonKeys": kept["jsonKeys"] + check["jsonKeys"]}
        self.save()

    def finish(self, finished_at: str) -> None:
        """The export is complete; `snapshotsDiffer` says whether its tables were read at different moments."""
        snapshots = {e.snapshot for e in self.entries if e.complete}
        self.snapshots_differ = len(snapshots) > 1
        self.finished_at = finished_at
        self.save()

    def carry_over(self, old: Metadata | None, forced: set[tuple[str, str]], exclude: Sequence[str] = (),
                   gone: Collection[tuple[str, str]] = ()) -> None:
        """Take over what an earlier run finished and this run need not write again.

        A table of this run keeps its earlier file when it is whole, its columns are unchanged and
        it is not `forced`; a finished table this run does not select keeps its entry (its file
        stays, with its own snapshot), as do its sequences and value-check findings, unless an
        `exclude` pattern names it or the source no longer has it (`gone`): then it leaves the export.
        """
        if old is None:
            return
        for entries in (self.tables, self.auth):
            for i, entry in enumerate(entries):
                before = self._finished(old, entry.key)
                if before is not None and entry.key not in forced and before.same_columns(entry):
                    # the file is kept; which columns hold user ids is decided anew on every run
                    entries[i] = replace(before, table=replace(before.table, user_id_columns=entry.table.user_id_columns,
                                                               user_id_found_by=entry.table.user_id_found_by))
        self._keep_unselected(old, exclude, gone)

    @staticmethod
    def _finished(meta: Metadata, key: tuple[str, str]) -> TableEntry | None:
        entry = next((e for e in meta.entries if e.key == key), None)
        return entry if entry is not None and entry.complete else None

    def _keep_unselected(self, old: Metadata, exclude: Sequence[str], gone: Collection[tuple[str, str]]) -> None:
        """The finished tables of `old` this run does not export stay, in one load order with the rest."""
        present = {e.key for e in self.entries}
        kept = [e for e in old.tables if e.complete and e.key not in present and e.key not in gone
                and catalog.selected(e.table, [], exclude)]
        if not kept:
            return
        by_key = {e.key: e for e in self.tables + kept}
        groups = catalog.load_order(e.table for e in by_key.values())
        self.tables = [by_key[t.key] for group in groups for t in group]
        self.load_order = [[t.qualified for t in group] for group in groups]
        self.schemas += [s for s in dict.fromkeys(e.schema for e in kept) if s not in self.schemas]
        if self.unexported_schemas is not None:
            self.unexported_schemas = [s for s in self.unexported_schemas if s.get("name") not in self.schemas]
        # a dropped table's own sequences (serial, identity) went with it: the import could not continue them
        read = {s.key for s in self.sequences} | {(r.schema, r.name) for e in old.tables if e.key in gone
                                                  for r in e.table.sequences}
        self.sequences += [s for s in old.sequences if s.key not in read]
        self.user_id_value_check = old.user_id_value_check
        self._keep_column_options(old, {e.key for e in kept})

    def _keep_column_options(self, old: Metadata, kept: set[tuple[str, str]]) -> None:
        """The user-id column options an earlier run gave for the tables kept from it still hold for them."""
        if self.options is None or not old.options:
            return
        for key in ("userIdColumns", "notUserIdColumns"):
            ours = list(self.options.get(key, []))
            ours += [r for r in old.options.get(key, []) if tuple(r.split(".")[:2]) in kept and r not in ours]
            self.options[key] = ours


def _described(identity: dict[str, Any]) -> str:
    """`database postgres, oid 5, system identifier 7321...`: what tells the database from another."""
    system = identity.get("systemIdentifier")
    return (f"database {identity.get('database')}, oid {identity.get('databaseOid')}"
            + (f", system identifier {system}" if system else ""))


SNAPSHOT_XIDS = re.compile(r"\d+:\d+:(\d+(,\d+)*)?")  # pg_snapshot's text form


def _snapshot_xids(entry: dict[str, Any]) -> str | None:
    value = entry.get("snapshotXids")
    if value is not None and (not isinstance(value, str) or not SNAPSHOT_XIDS.fullmatch(value)):
        raise ValueError(f"snapshotXids of {entry.get('schema')}.{entry.get('name')} is "
                         f"{orjson.dumps(value).decode()[:40]}, not a snapshot (xmin:xmax:xip,...)")
    return value


def _file_format(entry: dict[str, Any]) -> str:
    """An entry's file format: JSON Lines in exports of format version 1, which name none."""
    fmt = entry.get("format", "jsonl")
    if fmt not in ("copy", "jsonl"):
        raise ValueError(f"table {entry.get('schema')}.{entry.get('name')} has file format {fmt!r}")
    return str(fmt)


def _count(entry: dict[str, Any], key: str) -> int | None:
    """A row count or a size: a whole number, or absent (a table not exported yet)."""
    value = entry.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ValueError(f"{key} of {entry.get('schema')}.{entry.get('name')} is {orjson.dumps(value).decode()[:40]}, "
                         "not a count")
    return value
