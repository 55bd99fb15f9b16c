"""The schema step: dump, select, write schema.sql and its report, and apply it when asked."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from supamove import catalog
from supamove.clock import now_iso
from supamove.db import Endpoint, connection
from supamove.errors import ConfigError
from supamove.files import atomic_writer, write_json
from supamove.log import get_logger
from supamove.paths import DataDir
from supamove.schema.apply import BANNER_START, ApplyResult, apply_schema
from supamove.schema.dump import Programs, dump_schema, public_revokes, read_toc, render
from supamove.schema.facts import read_facts, read_unread_refs
from supamove.schema.model import API_ROLES, SchemaOptions, SchemaReport
from supamove.schema.select import kept_security_definers, search_path_setting, select_entries
from supamove.schema.shim import prelude
from supamove.words import counted

log = get_logger("schema")


@dataclass
class SchemaResult:
    report: SchemaReport
    sql: str
    written: bool
    applied: ApplyResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """`schema --dry-run --json`: the report schema-report.json would hold."""
        return self.report.to_dict()


def run_schema(source: Endpoint, target: Endpoint | None, datadir: DataDir, options: SchemaOptions,
               dry_run: bool = False) -> SchemaResult:
    """Make schema.sql and schema-report.json from the source; apply them to `target` when given."""
    if target is not None and dry_run:
        raise ConfigError("--apply and --dry-run exclude each other", fix="give one of them")
    if options.owner is not None and target is None:
        raise ConfigError(f"--owner {options.owner} names who owns what --apply creates, and --apply was not given",
                          fix="add --apply, or leave --owner out")
    catalog.selected_schemas(options.schemas, [])  # a platform schema is a wrong option, before any connection
    with connection(source) as conn, tempfile.TemporaryDirectory(prefix="supamove-schema-") as tmp:
        schemas = catalog.selected_schemas(options.schemas, catalog.application_schemas(conn))
        report, text = make_schema(conn, source, schemas, options, Path(tmp))
    result = SchemaResult(report, text, written=False)
    if dry_run:
        return result
    datadir.ensure()
    with atomic_writer(datadir.schema_sql) as handle:
        handle.write(text.encode())
    write_json(datadir.schema_report, report.to_dict())
    result.written = True
    if target is not None:
        roles = API_ROLES if options.keep_roles else ()
        result.applied = apply_schema(target, datadir, report.tables, report.extensions, roles, report.search_path,
                                      report.security_definers, options.owner)
    return result


def make_schema(conn: psycopg.Connection, source: Endpoint, schemas: list[str], options: SchemaOptions,
                folder: Path) -> tuple[SchemaReport, str]:
    """The report and the SQL: pg_dump's table of contents, decided entry by entry by the catalog."""
    catalog.refuse_missing_schemas(conn, schemas, catalog.application_schemas(conn))
    _check_partitions_selected(conn, schemas)
    major = int(str(conn.execute("SHOW server_version_num").fetchone()[0])) // 10000  # type: ignore[index]
    programs = Programs.find(major)
    tables = _selected_tables(conn, schemas, options)
    unread = _unreadable_left_out(conn, source, schemas, tables)
    dump = dump_schema(programs, source, schemas, folder, unread)
    entries = read_toc(programs, dump, schemas)
    facts = read_facts(conn, schemas, {t.key for t in tables}, {e.key for e in entries})
    facts.unread_refs = read_unread_refs(conn, unread)
    extensions = select_entries(entries, facts, options)
    kept = [e for e in entries if e.decision != "left-out" and e.type != "SCHEMA"]
    body = render(programs, dump, [e for e in kept if not e.only_revokes], folder)
    body += public_revokes(programs, dump, [e for e in kept if e.only_revokes], folder)
    created = [e.name for e in entries if e.type == "SCHEMA"]
    path, setting = search_path_setting(facts.search_path, {*created, *(x.schema for x in extensions)}
                                        | ({"auth"} if options.auth_shim else set()))
    report = SchemaReport(options, facts.server_version, programs.version(), entries, extensions,
                          facts.others + ([setting] if setting else []), created_at=now_iso(), search_path=path,
                          security_definers=kept_security_definers(entries, facts))
    head = prelude(conn, created, extensions, options.auth_shim, options.keep_roles, path)
    log.debug("schema: %s", ", ".join(f"{n} {d}" for d, n in report.counts.items()))
    return report, _banner(report) + head + body


def _selected_tables(conn: psycopg.Connection, schemas: list[str], options: SchemaOptions) -> list[catalog.Table]:
    """The tables --tables/--exclude-tables select; a pattern matching none stops the run, as it stops the export
    (it wrote a schema of types and functions without a single table, and exited 0)."""
    every = catalog.read_relations(conn, schemas)
    auth = catalog.read_relations(conn, ["auth"]) if options.tables else []  # as export --tables auth.users
    catalog.check_patterns(every, auth, options.tables, options.exclude_tables, "create")
    return [t for t in every if catalog.selected(t, options.tables, options.exclude_tables)]


def _unreadable_left_out(conn: psycopg.Connection, source: Endpoint, schemas: list[str],
                         tables: list[catalog.Table]) -> list[tuple[str, str]]:
    """The tables pg_dump must leave alone: those this user may not read that --tables/--exclude-tables leave
    out (pg_dump locks every table it dumps, and stopped at the first it could not: the operator's fix, the
    option, did not help). A selected one (of `tables`) stops the run here, named with its GRANT, as the export
    would."""
    catalog.refuse_unreadable(conn, source, tables)
    return catalog.unreadable_left_out(conn, schemas, tables)


# Partitions of the dumped schemas' partitioned tables that live in a schema not dumped.
STRAY_PARTITIONS_SQL = """
SELECT n.nspname, c.relname, pn.nspname, pc.relname
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE c.relispartition AND pn.nspname = ANY(%(schemas)s) AND NOT n.nspname = ANY(%(schemas)s)
ORDER BY 1, 2
"""


def _check_partitions_selected(conn: psycopg.Connection, schemas: list[str]) -> None:
    """A partition in a schema this run does not dump would be missing on the target, and its rows, which the
    export reads through the partitioned table, would find no partition there."""
    stray = conn.execute(STRAY_PARTITIONS_SQL, {"schemas": schemas}).fetchall()
    if stray:
        where = sorted({row[0] for row in stray})
        schema, name, parent_schema, parent = stray[0]
        more = f" ({len(stray) - 1} more such)" if len(stray) > 1 else ""
        raise ConfigError(f"partition {catalog.qualify(schema, name)} of {catalog.qualify(parent_schema, parent)} is "
                          f"in schema {schema}, which this run does not select{more}",
                          fix=" ".join(f"add --schema {s}" for s in where) + " (to `supamove export` too)")


def _banner(report: SchemaReport) -> str:
    counts = report.counts
    return (f"{BANNER_START}{report.created_at}\n"
            f"-- from PostgreSQL {report.server_version} with {report.pg_dump}.\n"
            f"-- {counted(counts['kept'], 'object')} kept, {counts['changed']} changed, {counts['left-out']} left out: "
            "see schema-report.json.\n"
            "-- Apply with `supamove schema --apply` (one transaction).\n\n")

