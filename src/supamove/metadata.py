"""`metadata.json`: the export's table of contents, a public contract (see the README)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from supamove import __version__
from supamove.catalog import Column, ForeignKey, SequenceRef, Table
from supamove.errors import DataFileError
from supamove.files import read_json, write_json
from supamove.paths import FORMAT_VERSION, DataDir


def table_to_dict(table: Table, datadir: DataDir) -> dict[str, Any]:
    return {
        "schema": table.schema,
        "name": table.name,
        "file": str(datadir.table_file(table.schema, table.name).relative_to(datadir.root)),
        "partitioned": table.partitioned,
        "columns": [
            {"name": c.name, "type": c.type, "baseType": c.base_type, "nullable": c.nullable,
             "generated": c.generated, "identity": c.identity, "encoding": c.encoding}
            for c in table.columns
        ],
        "primaryKey": list(table.primary_key),
        "uniqueKeys": [list(k) for k in table.unique_keys],
        "foreignKeys": [
            {"name": fk.name, "columns": list(fk.columns), "refSchema": fk.ref_schema,
             "refTable": fk.ref_table, "refColumns": list(fk.ref_columns), "deferrable": fk.deferrable}
            for fk in table.foreign_keys
        ],
        "userIdColumns": list(table.user_id_columns),
        "userIdFoundBy": dict(table.user_id_found_by),
        "sequences": [{"column": s.column, "schema": s.schema, "name": s.name} for s in table.sequences],
        "estimatedRows": table.estimated_rows,
        "complete": False,
        "rowCount": None,
        "bytes": None,
        "sha256": None,
        "snapshot": None,
        "exportedAt": None,
    }


def table_from_dict(entry: dict[str, Any]) -> Table:
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
class Metadata:
    """The parsed metadata.json, saved atomically (and thread-safely) after every table."""

    datadir: DataDir
    data: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def tables(self) -> list[dict[str, Any]]:
        return list(self.data["tables"])

    @property
    def auth_tables(self) -> list[dict[str, Any]]:
        return list(self.data.get("auth", []))

    @property
    def complete(self) -> bool:
        return self.data.get("finishedAt") is not None

    def entry(self, schema: str, name: str) -> dict[str, Any]:
        entries: list[dict[str, Any]] = self.data["tables"] + self.data.get("auth", [])
        for entry in entries:
            if (entry["schema"], entry["name"]) == (schema, name):
                return entry
        raise KeyError(f"{schema}.{name}")

    def update(self, schema: str, name: str, **values: Any) -> None:
        with self._lock:
            self.entry(schema, name).update(values)
            self.save_locked()

    def save(self) -> None:
        with self._lock:
            self.save_locked()

    def save_locked(self) -> None:
        write_json(self.datadir.metadata, self.data)

    @classmethod
    def load(cls, datadir: DataDir, require_complete: bool = True) -> Metadata:
        data = read_json(datadir.metadata, "export")
        if not isinstance(data, dict) or data.get("formatVersion") != FORMAT_VERSION:
            version = data.get("formatVersion") if isinstance(data, dict) else None
            raise DataFileError(
                f"{datadir.metadata} is format version {version}, this supamove reads version {FORMAT_VERSION}",
                fix="run `supamove export` again with this version of supamove")
        meta = cls(datadir, data)
        if require_complete and not meta.complete:
            raise DataFileError(f"the export in {datadir.root} is not finished",
                                fix="run `supamove export` again to complete it")
        return meta

    @classmethod
    def new(cls, datadir: DataDir, **header: Any) -> Metadata:
        data = {"formatVersion": FORMAT_VERSION, "tool": f"supamove {__version__}", **header}
        return cls(datadir, data)
