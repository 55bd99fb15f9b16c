"""What `supamove schema` works on: its options, pg_dump's table of contents, and the report."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Decision = Literal["kept", "changed", "left-out"]
REPORT_FORMAT_VERSION = 1
# The roles Supabase's API (PostgREST) switches to; --keep-roles creates them on the target.
API_ROLES = ("anon", "authenticated", "service_role")
# The functions of Supabase's auth schema that the compatibility schema provides.
SHIM_FUNCTIONS = frozenset({"auth.uid()", "auth.jwt()", "auth.role()", "auth.email()"})
# Entries that set up the restore session; not database objects, so not in the report.
SESSION_ENTRIES = frozenset({"ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE", "DATABASE PROPERTIES"})


@dataclass
class SchemaOptions:
    schemas: list[str] = field(default_factory=lambda: ["public"])
    tables: list[str] = field(default_factory=list)
    exclude_tables: list[str] = field(default_factory=list)
    auth_shim: bool = True
    keep_roles: bool = False
    owner: str | None = None  # --owner: the role --apply runs as, which owns what it creates (not in schema.sql)


@dataclass
class TocEntry:
    """One line of `pg_restore -l -v`: `215; 1259 16386 TABLE public notes owner` and its dependencies."""

    dump_id: int
    classid: int  # the catalog holding the object (1259 is pg_class), 0 for ACLs and comments
    objid: int
    type: str
    schema: str
    name: str
    owner: str
    depends_on: tuple[int, ...] = ()
    line: str = ""
    decision: Decision = "kept"
    reason: str = ""
    only_revokes: bool = False  # an ACL entry of which only its REVOKE ... FROM PUBLIC goes to the target

    @property
    def key(self) -> tuple[int, int]:
        return (self.classid, self.objid)

    @property
    def label(self) -> str:
        """`TABLE app.notes`, `ACL on TABLE app.notes`, `POLICY app.notes Owners read their notes`."""
        prefix = "" if self.schema == "-" else f"{self.schema}."
        if self.type in ("ACL", "COMMENT", "SECURITY LABEL"):  # named "<kind> <object>" by pg_dump
            kind, _, name = self.name.partition(" ")
            return f"{self.type} on {kind} {prefix}{name}"
        return f"{self.type} {prefix}{self.name}"

    def decide(self, decision: Decision, reason: str) -> None:
        self.decision, self.reason = decision, reason


@dataclass(frozen=True)
class Extension:
    """An extension the application uses, created on the target in the schema it has on the source."""

    name: str
    schema: str
    version: str


@dataclass(frozen=True)
class ReportItem:
    """An object the dump does not hold but a Supabase project has (a trigger on auth.users, a cron job)."""

    type: str
    schema: str
    name: str
    decision: Decision
    reason: str


@dataclass(frozen=True)
class SecurityDefiner:
    """A SECURITY DEFINER function (or procedure) schema.sql creates: it runs with its owner's rights."""

    kind: str  # FUNCTION or PROCEDURE, as ALTER names it
    name: str  # schema.name(arguments), as ALTER FUNCTION takes it
    source_owner: str


def path_text(schemas: list[str]) -> str:
    """A search_path's schemas as its setting writes them: `"$user", public, extensions`."""
    return ", ".join(s if re.fullmatch(r"[a-z_][a-z0-9_]*", s) else '"' + s.replace('"', '""') + '"' for s in schemas)


@dataclass
class SchemaReport:
    """schema-report.json: every object kept, changed or left out, with the reason."""

    options: SchemaOptions
    server_version: str
    pg_dump: str
    entries: list[TocEntry]
    extensions: list[Extension]
    others: list[ReportItem]
    created_at: str = ""
    search_path: list[str] = field(default_factory=list)  # set on the target's database by schema.sql, if any
    security_definers: list[SecurityDefiner] = field(default_factory=list)

    @property
    def objects(self) -> list[TocEntry]:
        return [e for e in self.entries if e.type not in SESSION_ENTRIES]

    @property
    def tables(self) -> list[str]:
        """The tables schema.sql creates, schema.name."""
        return [f"{e.schema}.{e.name}" for e in self.entries if e.type == "TABLE" and e.decision != "left-out"]

    @property
    def counts(self) -> dict[str, int]:
        decisions = [e.decision for e in self.objects] + [o.decision for o in self.others]
        return {d: decisions.count(d) for d in ("kept", "changed", "left-out")}

    def to_dict(self) -> dict[str, Any]:
        counts = self.counts
        return {
            "formatVersion": REPORT_FORMAT_VERSION,
            "createdAt": self.created_at,
            "source": {"serverVersion": self.server_version, "pgDump": self.pg_dump},
            "options": {"schemas": self.options.schemas, "tables": self.options.tables,
                        "excludeTables": self.options.exclude_tables, "authShim": self.options.auth_shim,
                        "keepRoles": self.options.keep_roles},
            "summary": {"kept": counts["kept"], "changed": counts["changed"], "leftOut": counts["left-out"]},
            "tables": self.tables,
            "extensions": [{"name": x.name, "schema": x.schema, "version": x.version} for x in self.extensions],
            "roles": list(API_ROLES) if self.options.keep_roles else [],
            "searchPath": path_text(self.search_path) if self.search_path else None,
            "securityDefiner": [{"kind": d.kind, "name": d.name, "sourceOwner": d.source_owner}
                                for d in self.security_definers],
            "objects": [{"id": e.dump_id, "type": e.type, "schema": None if e.schema == "-" else e.schema,
                         "name": e.name, "decision": e.decision, "reason": e.reason} for e in self.objects]
                       + [{"id": None, "type": o.type, "schema": None if o.schema == "-" else o.schema, "name": o.name,
                           "decision": o.decision, "reason": o.reason} for o in self.others],
        }
