"""The plan of an import and every reason it cannot succeed, read from the files and the target."""

from __future__ import annotations

import re
import time

import psycopg
from psycopg import sql

from supamove import catalog
from supamove.catalog import Column, Table
from supamove.db import Endpoint, connection
from supamove.errors import DataFileError, SupamoveError
from supamove.importer.mapping import check_unmapped, mapping_for, reader, unmapped_users
from supamove.importer.model import ColumnLoad, ImportOptions, ImportPlan, TablePlan
from supamove.importer.scan import SCAN_JOBS, check_files
from supamove.log import get_logger
from supamove.metadata import Metadata, TableEntry
from supamove.paths import DataDir

log = get_logger("import")


# Whether a value of the exported type can be read by the target column's type. The exported type is found
# by its name, else (an extension's type the target keeps in another schema: extensions.citext there,
# public.citext here) as the extension's type of that name, wherever it is.
COMPATIBLE_SQL = """
WITH exported AS (
    SELECT coalesce(to_regtype(%(source)s),
                    (SELECT CASE WHEN %(array)s THEN e.typarray ELSE e.oid END FROM pg_type e
                     JOIN pg_depend d ON d.classid = 'pg_type'::regclass AND d.objid = e.oid AND d.deptype = 'e'
                     WHERE e.typname = %(name)s ORDER BY e.oid LIMIT 1)) AS oid)
SELECT s.oid IS NOT NULL AND (s.oid = t.oid OR s.typcategory = t.typcategory OR t.typcategory = 'S'
       OR EXISTS (SELECT 1 FROM pg_cast c WHERE c.castsource = s.oid AND c.casttarget = t.oid
                  AND c.castcontext IN ('i', 'a')))
FROM pg_type t LEFT JOIN pg_type s ON s.oid = (SELECT oid FROM exported)
WHERE t.oid = to_regtype(%(target)s)
"""
QUALIFIER = re.compile(r'^(?:"(?:[^"]|"")+"|[^."]+)\.')


# Columns the target fills itself when the export has no value for them.
DEFAULTED_SQL = """
SELECT a.attname FROM pg_attribute a
WHERE a.attrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND a.attnum > 0 AND NOT a.attisdropped
  AND (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' OR NOT a.attnotnull)
"""


def plan_import(target: Endpoint, datadir: DataDir, options: ImportOptions) -> ImportPlan:
    """What the import would do and every reason it cannot (--dry-run): reads the files and the target only."""
    with connection(target, autocommit=True) as conn:
        return make_plan(conn, target, datadir, options, full_scan=True)


def make_plan(conn: psycopg.Connection, target: Endpoint, datadir: DataDir, options: ImportOptions,
              full_scan: bool = False) -> ImportPlan:
    """The plan, read on an open connection to the target; every file read in full only with `full_scan`."""
    meta = Metadata.load(datadir, require_complete=options.only is None)
    entries = [e for e in meta.tables if options.only is None or e.key in options.only]
    problems: list[SupamoveError] = []
    if not meta.tables:  # the export refuses to write none: this metadata.json was edited
        problems.append(DataFileError(f"{datadir.metadata} lists no table to import",
                                      fix="restore the file, or run `supamove export --force` to write it again"))
    schemas = sorted({e.schema for e in entries})
    targets = {t.key: t for t in catalog.read_relations(conn, schemas, [e.key for e in entries])} if schemas else {}
    # Its checks read the tables (empty? loaded?): the policies must not hide their rows.
    catalog.refuse_rls_filtering(conn, target, [targets[e.key] for e in entries if e.key in targets])
    if fix := catalog.progress_schema_fix(conn):  # its state is read next
        raise target.error(f"the user in {target.setting} {catalog.PROGRESS_SCHEMA_CLOSED}", fix)
    done = set() if options.truncate_first else _read_state(conn)
    json_ids = meta.json_user_id_columns()
    plans = [_plan_table(conn, target, datadir, e, targets.get(e.key), json_ids.get(e.key, frozenset()), problems)
             for e in entries]
    for plan in plans:
        plan.done = plan.state_key in done
    groups = _group(plans)
    started = time.monotonic()
    read_mapping = reader(datadir, options.stack_auth_project)
    check_files([p for p in plans if not p.done], problems, SCAN_JOBS, full_scan,
                unmapped_users(plans, datadir, read_mapping))
    log.debug("timing: files checked in %.3fs", time.monotonic() - started)
    mapping, loaded = mapping_for(plans, datadir, read_mapping, problems)
    check_unmapped(target, plans, mapping, loaded, options, problems)
    if not options.truncate_first:
        _check_split(_read_splits(conn), plans, target, problems)
        _check_empty(conn, target, plans, problems)
    if options.disable_fk:
        _check_replica_role(conn, target, problems)
    _check_privileges(conn, target, [p.key for p in plans if p.target is not None and not p.done], problems)
    _check_sequences(conn, target, _sequences_set(plans, meta), problems)
    # The views are refreshed once every table is loaded: a run loading some of them (`only`) needs none.
    views = _views(conn, meta) if options.only is None else []
    return ImportPlan(groups, problems, mapping, meta, options, views)


def _views(conn: psycopg.Connection, meta: Metadata) -> list[catalog.MaterializedView]:
    """The target's materialized views to refresh once every table is loaded, in order: those the source
    has populated (every one of the exported schemas when the export is older than that record)."""
    views = catalog.materialized_views(conn, sorted(set(meta.schemas) | {e.schema for e in meta.tables}))
    if meta.materialized_views is None:
        return views
    populated = {(v["schema"], v["name"]) for v in meta.materialized_views if v.get("populated")}
    return [v for v in views if v.key in populated]


def _plan_table(conn: psycopg.Connection, endpoint: Endpoint, datadir: DataDir, entry: TableEntry,
                target: Table | None, json_ids: frozenset[str], problems: list[SupamoveError]) -> TablePlan:
    plan = TablePlan(entry, target, datadir.export_file(entry.file))
    if not entry.complete:
        problems.append(DataFileError(f"the export of {plan.qualified} is not finished",
                                      fix="run `supamove export` again to complete it"))
    if target is None:
        problems.append(endpoint.error(f"table {plan.qualified} does not exist in the target",
                                      "create the application schema on the target first: `supamove schema --apply` (or your own migrations)"))
        return plan
    _plan_columns(conn, endpoint, plan, target, json_ids, problems)
    for name, source in {c.name: c for c in entry.table.columns}.items():
        if target.column(name) is None:
            plan.missing_in_target.append(name)
            if not source.generated:
                problems.append(endpoint.error(
                    f"column {plan.qualified}.{name} ({source.type}) is in the export but not in the target",
                    f"add the column to {plan.qualified} on the target (the import never drops data)"))
    return plan


def _plan_columns(conn: psycopg.Connection, endpoint: Endpoint, plan: TablePlan, target: Table,
                  json_ids: frozenset[str], problems: list[SupamoveError]) -> None:
    """The target's columns the import writes, and those it cannot fill or whose type cannot take the export's."""
    where, entry = plan.qualified, plan.entry
    exported = {c.name: c for c in entry.table.columns}
    defaulted = {r[0] for r in conn.execute(DEFAULTED_SQL, (target.schema, target.name))}
    for col in target.columns:
        source = exported.get(col.name)
        if source is None:
            plan.missing_in_export.append(col.name)
            if col.name not in defaulted:
                problems.append(endpoint.error(
                    f"column {where}.{col.name} is NOT NULL without a default in the target but not in the export",
                    "give it a default or make it nullable on the target, or export it from the source"))
            continue
        if col.generated:
            continue
        if not _compatible(conn, source, col.type):
            problems.append(endpoint.error(
                f"column {where}.{col.name} is {col.type} in the target but {source.type} in the export",
                f"change the target column to {source.type} (or a type that accepts its values)"))
        array = source.type.endswith("[]") or source.base_type.endswith("[]")
        plan.columns.append(ColumnLoad(col.name, entry.encoding(col.name), col.name in entry.table.user_id_columns,
                                       array, col.name in json_ids))
    if entry.format == "copy":  # sent in the file's order: a file whose columns all load goes as it is
        order = {name: i for i, name in enumerate(plan.file_columns)}
        plan.columns.sort(key=lambda c: order[c.name])


def _compatible(conn: psycopg.Connection, source: Column, target_type: str) -> bool:
    if source.type == target_type:
        return True
    exported = source.base_type or source.type
    array = exported.endswith("[]")
    name = QUALIFIER.sub("", exported.removesuffix("[]"))
    name = name[1:-1].replace('""', '"') if name.startswith('"') else name
    row = conn.execute(COMPATIBLE_SQL, {"source": exported, "array": array, "name": name,
                                        "target": target_type}).fetchone()
    return bool(row and row[0])


def _read_state(conn: psycopg.Connection) -> set[tuple[str, str, str, str]]:
    exists = conn.execute("SELECT to_regclass('_supamove.import_state') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set()
    rows = conn.execute("SELECT schema_name, table_name, snapshot, sha256 FROM _supamove.import_state")
    return {tuple(r) for r in rows}


def _read_splits(conn: psycopg.Connection) -> dict[tuple[str, str], tuple[str, str, str, str]]:
    """The tables a crashed run was loading as ranges: the state key of the file it was loading."""
    exists = conn.execute("SELECT to_regclass('_supamove.import_split') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT schema_name, table_name, snapshot, sha256 FROM _supamove.import_split")
    return {(r[0], r[1]): tuple(r) for r in rows}


def _check_split(splits: dict[tuple[str, str], tuple[str, str, str, str]], plans: list[TablePlan],
                 target: Endpoint, problems: list[SupamoveError]) -> None:
    """A table partly loaded as ranges resumes when its file is the same; another file cannot go on top."""
    for plan in plans:
        state = splits.get(plan.key)
        if state is None or plan.done:
            continue
        if state == plan.state_key:
            plan.resume_split = True
            continue
        problems.append(target.error(
            f"target table {plan.qualified} holds part of an interrupted load of another export (snapshot "
            f"{state[2]}); its indexes and triggers are set aside until that load ends",
            "run `supamove import --truncate-first`: it empties the table, puts them back and loads this export"))


def _group(plans: list[TablePlan]) -> list[list[TablePlan]]:
    """The target's FK order: parents first, a cycle's tables in one group; unmatched tables last."""
    by_key = {p.key: p for p in plans}
    matched = [p.target for p in plans if p.target is not None]
    groups = [[by_key[t.key] for t in g] for g in catalog.load_order(matched)]
    return groups + [[p] for p in plans if p.target is None]


HOLDS_ROWS_FIX = "empty them, or run `supamove import --truncate-first` to replace their contents"


def _check_empty(conn: psycopg.Connection, target: Endpoint, plans: list[TablePlan], problems: list[SupamoveError]) -> None:
    """Tables to load must be empty; tables an earlier run loaded must not be (their rows deleted since:
    a rerun would skip them and say every table is loaded)."""
    emptied = []
    for plan in plans:
        if plan.target is None or plan.resume_split or (plan.done and not plan.rows):
            continue
        row = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(plan.alone)).fetchone()
        if plan.done and not (row and row[0]):
            emptied.append(plan.qualified)
        plan.has_rows = not plan.done and bool(row and row[0])
    full = [p.qualified for p in plans if p.has_rows]
    if full:
        problems.append(target.error(
            f"target tables already hold rows: {', '.join(full)}",
            HOLDS_ROWS_FIX))
    if emptied:
        problems.append(target.error(
            f"tables an earlier run loaded are empty now (their rows were deleted since): {', '.join(emptied)}",
            "run `supamove import --truncate-first`: it empties every table of the export and loads them all again"))


# Of the tables to load and their partitions, each the target's user does not own (its indexes, keys and triggers
# are set aside for the load, which only the owner may do) or whose schema it may not create in (its keys and
# indexes are made again).
PRIVILEGES_SQL = """
WITH planned AS (SELECT format('%%I.%%I', s, t)::regclass AS oid FROM unnest(%s::text[], %s::text[]) u(s, t)),
-- a partition's triggers are set aside too (pg_partition_tree lists nothing for a table not partitioned)
tree AS (SELECT oid FROM planned UNION SELECT p.relid FROM planned, pg_partition_tree(planned.oid) p)
SELECT n.nspname, c.relname, pg_has_role(c.relowner, 'USAGE'), has_schema_privilege(n.oid, 'CREATE'), current_user
FROM tree JOIN pg_class c ON c.oid = tree.oid JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"
"""


def _check_privileges(conn: psycopg.Connection, target: Endpoint, keys: list[tuple[str, str]],
                      problems: list[SupamoveError]) -> None:
    """The load needs the tables' owner, able to create in their schemas: named before anything is written
    (the load stopped at its first table with "unexpected InsufficientPrivilege")."""
    if not keys:
        return
    rows = conn.execute(PRIVILEGES_SQL, ([k[0] for k in keys], [k[1] for k in keys])).fetchall()
    user = str(rows[0][4]) if rows else ""  # named in a fix, when there is one
    others = [catalog.qualify(r[0], r[1]) for r in rows if not r[2]]
    if others:
        problems.append(target.error(
            f"the user in {target.setting} does not own {catalog.listed(others)}: the load sets their indexes, keys and "
            "triggers aside and makes them again, which only a table's owner may do",
            catalog.owner_fix(user)))
    closed = sorted({r[0] for r in rows if r[2] and not r[3]})
    if closed:
        problems.append(target.error(
            f"the user in {target.setting} may not create in schema {', '.join(closed)}: the load makes the "
            "tables' keys and indexes again there",
            "; ".join(sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(
                sql.Identifier(s), sql.Identifier(user)).as_string(None) for s in closed)))


# The sequences of `keys` the target has and this user may not read and set (the import reads each one's
# state, then calls setval): ownership of the tables does not bring those no column owns.
SEQUENCE_PRIVILEGES_SQL = """
SELECT n.nspname, c.relname, current_user FROM unnest(%s::text[], %s::text[]) u(s, q)
JOIN pg_namespace n ON n.nspname = u.s JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.q
WHERE c.relkind = 'S' AND NOT (has_sequence_privilege(c.oid, 'SELECT') AND has_sequence_privilege(c.oid, 'UPDATE'))
ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"
"""


def _sequences_set(plans: list[TablePlan], meta: Metadata) -> list[tuple[str, str]]:
    """Every sequence the import may move: its tables' (owned or named by a default) and the export's."""
    keys = {s.key for p in plans if p.target is not None and not p.done
            for s in p.target.sequences + p.target.default_sequences}
    return sorted(keys | {s.key for s in meta.sequences})


def _check_sequences(conn: psycopg.Connection, target: Endpoint, keys: list[tuple[str, str]],
                     problems: list[SupamoveError]) -> None:
    """Named before the load: one owned by another user stopped it with "unexpected InsufficientPrivilege:
    permission denied for sequence", after every table was loaded for one no table uses."""
    if not keys:
        return
    rows = conn.execute(SEQUENCE_PRIVILEGES_SQL, ([k[0] for k in keys], [k[1] for k in keys])).fetchall()
    if not rows:
        return
    user = sql.Identifier(str(rows[0][2]))
    names = sql.SQL(", ").join(sql.Identifier(schema, name) for schema, name, _ in rows)
    problems.append(target.error(
        f"the user in {target.setting} may not set sequence {catalog.listed([catalog.qualify(*r[:2]) for r in rows])}: "
        "the import continues each one from the source's value",
        sql.SQL("GRANT SELECT, UPDATE ON SEQUENCE {} TO {}").format(names, user).as_string(None)))


def check_load_target(target: Endpoint, options: ImportOptions) -> None:
    """What the options need of the target's user, before anything is read or written: `migrate` loads only
    after its export and its users, which a refusal found then would have come after."""
    problems: list[SupamoveError] = []
    if options.disable_fk:
        with connection(target, autocommit=True) as conn:
            _check_replica_role(conn, target, problems)
    if problems:
        raise problems[0]


def check_target_tables(target: Endpoint, keys: list[tuple[str, str]], sequences: list[tuple[str, str]]) -> None:
    """The target tables of `keys` that hold rows no import recorded, or that this user may not load (not their
    owner), and the `sequences` it may not set, found before `migrate` exports or creates a user: the load would
    refuse them after both. A table an import recorded is left to the import's own plan, which tells a finished
    load from rows of another export."""
    problems: list[SupamoveError] = []
    with connection(target, autocommit=True) as conn:
        recorded = {state[:2] for state in _read_state(conn)} | set(_read_splits(conn))  # a split load's ranges too
        names = [[schema for schema, _ in keys], [name for _, name in keys]]
        found = [(str(schema), str(name)) for schema, name in conn.execute(TABLES_SQL, names).fetchall()
                 if (schema, name) not in recorded]
        full = [catalog.qualify(*key) for key in found if _holds_rows(conn, *key)]
        _check_privileges(conn, target, found, problems)
        _check_sequences(conn, target, sequences, problems)
    if full:
        raise target.error(f"target tables already hold rows: {', '.join(full)}",
                           f"if those rows are not to be kept, empty the tables (`TRUNCATE {', '.join(full)}` in the "
                           "target database), then run the same command again")
    if problems:
        raise problems[0]


# The tables of these names the target has (one missing is the import's plan's to name).
TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN unnest(%s::text[], %s::text[]) AS k(schema_name, table_name) ON (k.schema_name, k.table_name) = (n.nspname, c.relname)
WHERE c.relkind IN ('r', 'p') ORDER BY 1, 2
"""


def _holds_rows(conn: psycopg.Connection, schema: str, name: str) -> bool:
    try:
        row = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(schema, name))).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return False  # the import's plan names what its user may not read
    return bool(row and row[0])


def _check_replica_role(conn: psycopg.Connection, target: Endpoint, problems: list[SupamoveError]) -> None:
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL session_replication_role = replica")
    except psycopg.errors.InsufficientPrivilege:
        problems.append(replica_refused(target))


def replica_refused(target: Endpoint) -> SupamoveError:
    return target.error(
        "--disable-fk needs to SET session_replication_role, which this user may not do",
        "run without --disable-fk (constraints are then checked before each table commits), "
        "or use a superuser in DATABASE_URL")
