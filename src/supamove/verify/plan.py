"""Which tables verify compares, and for each the columns and key compared on either side."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from supamove import catalog, userids
from supamove.catalog import Column, Table
from supamove.db import Endpoint, connect
from supamove.errors import ConfigError, DataFileError
from supamove.metadata import Metadata, TableEntry
from supamove.paths import DataDir
from supamove.verify.checksum import BY_VALUE_TYPES, Relation
from supamove.verify.model import TableCheck, VerifyOptions


@dataclass
class TableComparison:
    """What is compared for one table, from the export's view and both live catalogs."""

    table: Table  # from metadata.json, else the source catalog
    source: Table | None
    target: Table | None
    map_user_ids: bool
    by_value: bool = False  # both servers hash records (PostgreSQL 14+): see verify.checksum
    json_ids: frozenset[str] = frozenset()  # JSON columns the export found user ids in (metadata.json)
    exported_rows: int | None = None  # the rows metadata.json records for it (None: no export, or not recorded)
    exported_xids: str | None = None  # the transactions its export's snapshot saw (None: not recorded)

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns on both sides, in name order; user-id columns only when they can be mapped back."""
        assert self.source and self.target
        theirs = {c.name for c in self.target.columns}
        skip = self.derived_from_user_ids() if self.map_user_ids else set(self.table.user_id_columns)
        return tuple(sorted(c.name for c in self.source.columns if c.name in theirs and c.name not in skip))

    def derived_from_user_ids(self) -> set[str]:
        """Generated columns computed from user ids: the target computes them from the Stack Auth ids, so the
        two sides differ however faithful the import, and no mapping reads one back."""
        assert self.source
        ids = set(self.table.user_id_columns)
        return {c.name for c in self.source.columns if c.generated and ids & set(c.reads)}

    @property
    def row_key(self) -> tuple[str, ...]:
        """The columns that name a row in the report, when all are compared."""
        key = self.table.row_key
        return key if key and set(key) <= set(self.columns) else ()

    @property
    def key(self) -> tuple[str, ...]:
        """The key that ranges are cut on: none when it holds user ids, which sort apart on the two sides."""
        key = self.row_key
        return () if self.map_user_ids and set(key) & set(self.table.user_id_columns) else key

    def relation(self, side: str) -> Relation:
        """The table as one side's queries read it; the target's user ids are mapped back when possible."""
        live = self.source if side == "source" else self.target
        assert live is not None
        mapped: dict[str, bool] = {}
        flattened: set[str] = set()  # the source's user-id arrays, read as the target's are mapped back
        lowered: set[str] = set()  # the source's user ids kept as text: the import maps them in any case
        for name in self.table.user_id_columns if self.map_user_ids else ():
            col = live.column(name)
            if col is not None and name in self.columns:
                if side == "target":
                    mapped[name] = _is_array(col)
                elif _is_array(col):
                    flattened.add(name)
                elif userids.family(col) == "text":  # text, varchar, bpchar, citext
                    lowered.add(name)
        return Relation(live.schema, live.name, live.partitioned, self.columns, self.key, mapped, self.hashed_by_value(),
                        self.padded(), frozenset(flattened), frozenset(lowered), self.named(), self.json_back(side))

    def json_back(self, side: str) -> dict[str, bool]:
        """The target's compared JSON columns with user ids, whose Stack Auth ids read back (with a mapping):
        True for jsonb (a domain over it too)."""
        if side != "target" or not self.map_user_ids or self.target is None:
            return {}
        types = {c.name: c.base_type or c.type for c in self.target.columns}
        return {c: types.get(c) == "jsonb" for c in self.json_ids if c in self.columns}

    def named(self) -> dict[str, str]:
        """The compared reg* columns, of one such type on both sides: the catalog their values name objects of."""
        assert self.source and self.target
        ours, theirs = ({c.name: c.names_in for c in t.columns} for t in (self.source, self.target))
        return {c: catalog for c in self.columns if (catalog := ours[c]) is not None and catalog == theirs[c]}

    def padded(self) -> frozenset[str]:
        """The compared columns of a character type on both sides (read the same way on each)."""
        assert self.source and self.target
        ours, theirs = ({c.name: c.padded for c in t.columns} for t in (self.source, self.target))
        return frozenset(c for c in self.columns if ours[c] and theirs[c])

    def hashed_by_value(self) -> dict[str, str]:
        """The compared columns of one type on both sides whose values the checksums hash without their text;
        none unless both servers can (a row is hashed the same way on both sides, or the sums differ)."""
        assert self.source and self.target
        if not self.by_value:
            return {}
        ours, theirs = _types(self.source), _types(self.target)
        mapped = set(self.table.user_id_columns) if self.map_user_ids else set()
        return {c: ours[c] for c in self.columns
                if c not in mapped and ours[c] == theirs[c] and ours[c] in BY_VALUE_TYPES}

    def column_warnings(self, checksums: bool = True) -> list[str]:
        """Why some columns are not compared: in the target only, or user ids with no mapping yet."""
        assert self.source and self.target
        ours, theirs = {c.name for c in self.source.columns}, {c.name for c in self.target.columns}
        # a column in the source only fails the table's structure comparison
        notes = [f"column {c} is in the target only: not compared" for c in sorted(theirs - ours)]
        notes += [f"column {c} is generated from user ids: not compared (the target computes it from the Stack Auth "
                  "ids)" for c in sorted(self.derived_from_user_ids() & theirs) if self.map_user_ids]
        unmapped = [c for c in self.table.user_id_columns if c in ours & theirs]
        if unmapped and not self.map_user_ids and checksums:
            notes.append(f"user-id column{'s' if len(unmapped) > 1 else ''} {', '.join(unmapped)} not compared: "
                         "no user-mapping.json yet (run `supamove migrate-users`)")
        return notes


def _types(table: Table) -> dict[str, str]:
    return {c.name: c.base_type or c.type for c in table.columns}


def _is_array(col: Column) -> bool:
    return (col.base_type or col.type).endswith("]")


@dataclass
class VerifyPlan:
    """The tables to compare, where their list came from, and what the export's coverage showed."""

    tables: list[TableComparison]
    origin: str  # "metadata.json" or "source catalog"
    left_out: list[TableCheck] = field(default_factory=list)  # source tables the export does not hold
    sequences: list[tuple[str, str]] = field(default_factory=list)  # the export's sequences no table uses
    kept: set[tuple[str, str, str]] = field(default_factory=set)  # columns that may keep Supabase ids
    view_schemas: list[str] = field(default_factory=list)  # whose materialized views are checked (none with --tables)
    exported: frozenset[tuple[str, str]] | None = None  # the tables the export holds (None: no export yet)


def plan_tables(source: Endpoint, target: Endpoint, datadir: DataDir, options: VerifyOptions,
                has_mapping: bool) -> VerifyPlan:
    """The tables to compare: those of metadata.json, else the source catalog's public tables."""
    meta = export_to_verify(datadir, options.before_export)
    with connect(source, autocommit=True) as conn:
        by_value = hashes_records(conn)
        if meta is not None:
            tables, origin = [e.table for e in meta.tables], "metadata.json"
        else:
            tables, origin = catalog.read_tables(conn, ["public"]), "source catalog"
        exported = sorted(set(meta.schemas if meta else []) | {t.schema for t in tables})
        everything = catalog.read_relations(conn, exported)
        kept = kept_columns(tables, options.keep_supabase_ids)
        catalog.check_patterns(tables, [], options.tables, (), "verify")  # each pattern: a typo is no pass
        tables = [t for t in tables if catalog.selected(t, options.tables)]
        schemas = sorted({t.schema for t in tables})
        ours = {t.key: t for t in everything if t.schema in schemas}
        catalog.refuse_rls_filtering(conn, source, [t for t in tables if t.key in ours])
    with connect(target, autocommit=True) as conn:
        theirs = {t.key: t for t in catalog.read_relations(conn, schemas)}
        by_value = by_value and hashes_records(conn)
        catalog.refuse_rls_filtering(conn, target, [t for t in tables if t.key in theirs])
    json_ids = meta.json_user_id_columns() if meta is not None else {}
    entries = {e.key: e for e in meta.tables} if meta is not None else {}
    plan = VerifyPlan([TableComparison(t, ours.get(t.key), theirs.get(t.key), has_mapping, by_value,
                                       json_ids.get(t.key, frozenset()), *_exported(entries.get(t.key)))
                       for t in tables], origin,
                      kept=kept, view_schemas=[] if options.tables else exported)
    if meta is not None:
        plan.exported = frozenset(e.key for e in meta.tables)
        recorded = meta.options or {}
        plan.left_out = left_out(everything, meta.tables, recorded, options.tables)
        used = {(s.schema, s.name) for t in everything for s in t.sequences + t.default_sequences}
        plan.sequences = sorted({s.key for s in meta.sequences} - used)
        plan.kept |= {catalog.parse_column_ref(r, "--not-user-id-column") for r in recorded.get("notUserIdColumns", [])}
    return plan


def _exported(entry: TableEntry | None) -> tuple[int | None, str | None]:
    """The rows the export recorded of a table, and the transactions its snapshot saw."""
    return (entry.row_count, entry.snapshot_xids) if entry is not None else (None, None)


def export_to_verify(datadir: DataDir, before_export: bool) -> Metadata | None:
    """The export verify compares; None with --before-export. A directory without one is an error, not a pass:
    a mistyped --data-dir would otherwise verify the source's catalog and say nothing of the export."""
    if before_export:
        if datadir.metadata.exists():
            raise ConfigError(f"--before-export compares the source's public tables, but {datadir.root} holds an "
                              "export (metadata.json)", fix="drop --before-export to verify the export's tables")
        return None
    if not datadir.metadata.exists():
        raise DataFileError(
            f"{datadir.metadata} not found: {datadir.root} holds no export to verify",
            fix="check that --data-dir (or MIGRATION_DATA_DIR) names the export's directory, or run `supamove export` "
                "first; before the export, `supamove verify --before-export` compares the source's public tables")
    return Metadata.load(datadir)


def hashes_records(conn: psycopg.Connection) -> bool:
    """Whether the server hashes records (`hash_record_extended`, PostgreSQL 14+)."""
    return conn.info.server_version >= 140000


def left_out(source: list[Table], entries: list[TableEntry], recorded: dict[str, Any],
             patterns: list[str]) -> list[TableCheck]:
    """The source tables of the exported schemas the export does not hold: a failure, unless excluded on purpose."""
    exported = {e.key for e in entries}
    include, exclude = recorded.get("tables", []), recorded.get("excludeTables", [])
    checks = []
    for table in source:
        if table.key in exported or not catalog.selected(table, patterns):
            continue
        check = TableCheck(table.schema, table.name)
        pattern = next((p for p in exclude if not catalog.selected(table, [], [p])), None)
        if pattern is not None:
            check.warnings.append(f"not exported (--exclude-tables {pattern}): not compared")
        elif include and not catalog.selected(table, include):
            check.failures.append(f"source table {table.qualified} is not in the export: "
                                  f"add --tables {table.qualified} to `supamove export` and run it again")
        else:
            check.failures.append(f"source table {table.qualified} is not in the export (created after it?): "
                                  "run `supamove export` again")
        checks.append(check)
    return checks


def kept_columns(tables: list[Table], refs: list[str]) -> set[tuple[str, str, str]]:
    """The columns of --keep-supabase-ids, each checked to be a column of a table verify compares."""
    kept = set()
    for ref in refs:
        schema, name, column = catalog.parse_column_ref(ref, "--keep-supabase-ids")
        match = next((t for t in tables if t.key == (schema, name)), None)
        if match is None or match.column(column) is None:
            raise ConfigError(f"--keep-supabase-ids {ref}: no such exported column",
                              fix="name a column of an exported table as schema.table.column")
        kept.add((schema, name, column))
    return kept
