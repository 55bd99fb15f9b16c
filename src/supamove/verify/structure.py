"""The tables' structure on both sides: columns, keys, check constraints, indexes, triggers and row-level
security, compared by name.

Each kind is read with one query per side for every table at once. Both sessions read with
search_path = pg_catalog, so every name in a type, default or definition is written with its schema
on both sides alike; a column's type is compared by identity (an extension's type by its extension),
so `extensions.citext` on the source and `public.citext` on the target are the same type.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from supamove.catalog import PLATFORM_SCHEMAS
from supamove.db import Endpoint, connect, first_line

TableKey = tuple[str, str]
# The tables asked for, as two parallel text[] parameters (schemas, names).
WANTED = sql.SQL("(n.nspname, c.relname) IN (SELECT * FROM unnest(%(schemas)s::text[], %(names)s::text[]))")

# Each column: its type (as written, and its identity), nullability, default, and generated or identity kind.
COLUMNS_SQL = sql.SQL("""
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       coalesce((SELECT x.extname || ' extension' FROM pg_depend d JOIN pg_extension x ON x.oid = d.refobjid
                 WHERE d.classid = 'pg_type'::regclass AND d.objid = b.oid AND d.deptype = 'e'), bn.nspname)
           || '.' || b.typname || CASE WHEN t.typcategory = 'A' THEN '[]' ELSE '' END || ':' || a.atttypmod,
       a.attnotnull,
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
       CASE WHEN a.attgenerated <> '' THEN 'generated' WHEN a.attidentity = 'a' THEN 'identity always'
            WHEN a.attidentity = 'd' THEN 'identity by default' ELSE '' END,
       CASE WHEN a.attgenerated <> '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
       CASE WHEN a.attcollation <> t.typcollation THEN (SELECT collname FROM pg_collation WHERE oid = a.attcollation) END,
       CASE WHEN eb.typtype = 'e' THEN format_type(eb.oid, NULL) END,
       CASE WHEN eb.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = eb.oid
                                             ORDER BY e.enumsortorder) END
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type b ON b.oid = CASE WHEN t.typcategory = 'A' AND t.typelem <> 0 THEN t.typelem ELSE t.oid END
JOIN pg_namespace bn ON bn.oid = b.typnamespace
JOIN pg_type eb ON eb.oid = CASE WHEN b.typtype = 'd' THEN b.typbasetype ELSE b.oid END  -- a domain's enum
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND {wanted}
""")

# Primary, unique, foreign-key, check and exclusion constraints, but foreign keys into platform schemas.
CONSTRAINTS_SQL = sql.SQL("""
SELECT n.nspname, c.relname, con.conname, con.contype, pg_get_constraintdef(con.oid), rn.nspname, rc.relname
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class rc ON rc.oid = con.confrelid LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
WHERE con.contype IN ('p', 'u', 'f', 'c', 'x') AND con.conparentid = 0
  AND (rn.nspname IS NULL OR NOT rn.nspname = ANY(%(platform)s)) AND {wanted}
""")

# Indexes that no primary key, unique or exclusion constraint stands for (those compare as constraints).
INDEXES_SQL = sql.SQL("""
SELECT n.nspname, c.relname, ic.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid
                  AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x'))
  AND {wanted}
""")

# Indexes, those of constraints included, that the server does not use or keep: a failed CREATE INDEX
# CONCURRENTLY leaves one, and so does pg_index edited by hand. A unique one enforces nothing.
INVALID_INDEXES_SQL = sql.SQL("""
SELECT n.nspname, c.relname, ic.relname
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT (i.indisvalid AND i.indisready AND i.indislive) AND {wanted}
""")

# The application's triggers (not the internal ones behind foreign keys), with whether each fires.
TRIGGERS_SQL = sql.SQL("""
SELECT n.nspname, c.relname, t.tgname, t.tgenabled <> 'D', pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND {wanted}
""")

# Row-level security: on or not, forced or not.
SECURITY_SQL = sql.SQL("""
SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {wanted}
""")

KINDS = {"p": "primary key", "u": "unique constraint", "f": "foreign key", "c": "check constraint",
         "x": "exclusion constraint"}


@dataclass(frozen=True)
class ColumnShape:
    type: str  # as written, e.g. "extensions.citext"
    identity: str  # the same type in any database, e.g. "citext extension.citext:-1"
    not_null: bool
    default: str | None
    kind: str  # "generated", "identity always", "identity by default" or ""
    expression: str | None  # a generated column's expression
    collation: str | None  # the column's own, when not its type's: sorting, comparing, unique keys differ
    enum: str | None  # the enum a column (an array of, a domain over) holds
    labels: list[str] | None  # that enum's labels in their order


@dataclass
class Shape:
    """One table's structure on one side: columns, constraints (name -> kind, definition) and indexes."""

    columns: dict[str, ColumnShape] = field(default_factory=dict)
    constraints: dict[str, tuple[str, str]] = field(default_factory=dict)
    indexes: dict[str, str] = field(default_factory=dict)
    references: dict[str, TableKey] = field(default_factory=dict)  # a foreign key -> the table it references
    invalid_indexes: set[str] = field(default_factory=set)
    triggers: dict[str, tuple[bool, str]] = field(default_factory=dict)  # name -> (fires, definition)
    security: tuple[bool, bool] = (False, False)  # row-level security on, forced


@dataclass
class Findings:
    """What the structure comparison found in one table."""

    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_shapes(conn: psycopg.Connection, tables: Iterable[TableKey]) -> dict[TableKey, Shape]:
    """The structure of each of `tables` that exists, from three catalog queries."""
    keys = list(tables)
    params = {"schemas": [k[0] for k in keys], "names": [k[1] for k in keys], "platform": sorted(PLATFORM_SCHEMAS)}
    shapes: dict[TableKey, Shape] = {}
    for schema, name, column, *rest in conn.execute(COLUMNS_SQL.format(wanted=WANTED), params):
        shapes.setdefault((schema, name), Shape()).columns[column] = ColumnShape(*rest)
    for schema, name, con, kind, definition, ref_schema, ref_table in conn.execute(
            CONSTRAINTS_SQL.format(wanted=WANTED), params):
        shape = shapes.setdefault((schema, name), Shape())
        shape.constraints[con] = (kind, definition)
        if ref_table is not None:
            shape.references[con] = (ref_schema, ref_table)
    for schema, name, index, definition in conn.execute(INDEXES_SQL.format(wanted=WANTED), params):
        shapes.setdefault((schema, name), Shape()).indexes[index] = definition
    for schema, name, index in conn.execute(INVALID_INDEXES_SQL.format(wanted=WANTED), params):
        shapes.setdefault((schema, name), Shape()).invalid_indexes.add(index)
    for schema, name, trigger, fires, definition in conn.execute(TRIGGERS_SQL.format(wanted=WANTED), params):
        shapes.setdefault((schema, name), Shape()).triggers[trigger] = (fires, definition)
    for schema, name, enabled, forced in conn.execute(SECURITY_SQL.format(wanted=WANTED), params):
        shapes.setdefault((schema, name), Shape()).security = (enabled, forced)
    return shapes


def read_both(source: Endpoint, target: Endpoint,
              tables: list[TableKey]) -> tuple[dict[TableKey, Shape], dict[TableKey, Shape]]:
    """Both sides' structures, read at the same time."""
    with ThreadPoolExecutor(2, "structure") as pool:
        ours, theirs = (pool.submit(_read_side, endpoint, tables) for endpoint in (source, target))
        return ours.result(), theirs.result()


def _read_side(endpoint: Endpoint, tables: list[TableKey]) -> dict[TableKey, Shape]:
    try:
        with connect(endpoint, autocommit=True) as conn:
            conn.execute("SET search_path = pg_catalog")  # every other schema's names come qualified
            return read_shapes(conn, tables)
    except psycopg.Error as exc:
        raise endpoint.error(f"could not read the {endpoint.side}'s table structure: {first_line(exc)}",
                             "check the server is up, then run `supamove verify` again") from None


def compare_shapes(ours: Shape, theirs: Shape, exported: frozenset[TableKey] | None = None) -> Findings:
    """A missing column, constraint or index fails; what the target has more, or writes otherwise, warns.

    A foreign key into a table the export left out (`exported`: the tables it holds) only warns: `supamove
    schema` left it out with that table, on purpose."""
    found = Findings()
    for name, column in ours.columns.items():
        other = theirs.columns.get(name)
        if other is None:
            found.failures.append(f"column {name} is missing in the target")
        else:
            _compare_column(name, column, other, found)
    left_out = {name: ref for name, ref in ours.references.items() if exported is not None and ref not in exported}
    _compare_constraints(ours.constraints, theirs.constraints, found, left_out)
    _compare_indexes(ours.indexes, theirs.indexes, found)
    found.failures += [f"index {name} is not valid in the target (it enforces and speeds up nothing): REINDEX it"
                       for name in sorted(theirs.invalid_indexes - ours.invalid_indexes)]
    _compare_triggers(ours.triggers, theirs.triggers, found)
    _compare_security(ours, theirs, found)
    return found


def _compare_triggers(ours: dict[str, tuple[bool, str]], theirs: dict[str, tuple[bool, str]],
                      found: Findings) -> None:
    """A trigger the target has but never fires fails (a load that set it aside and stopped leaves one); one
    missing warns, since `supamove schema` leaves out those that call Supabase's platform (webhooks)."""
    for name, (fires, definition) in sorted(ours.items()):
        other = theirs.get(name)
        if other is None:
            found.warnings.append(f"trigger {name} is missing in the target ({definition})")
        elif fires and not other[0]:
            found.failures.append(f"trigger {name} is disabled in the target (ALTER TABLE ... ENABLE TRIGGER {name})")
        elif other[1] != definition:
            found.warnings.append(f"trigger {name} differs: source {definition}, target {other[1]}")
    found.warnings += [f"trigger {name} is in the target only" for name in sorted(theirs) if name not in ours]


def _compare_security(ours: Shape, theirs: Shape, found: Findings) -> None:
    """Row-level security off in the target warns: its rows are open to every user the policies held back.
    The policies themselves are `supamove schema`'s to report (it leaves out those of Supabase's API roles)."""
    for on, label in ((0, "row-level security"), (1, "FORCE ROW LEVEL SECURITY")):
        if ours.security[on] and not theirs.security[on]:
            found.warnings.append(f"{label} is on in the source, off in the target")


def _compare_column(name: str, ours: ColumnShape, theirs: ColumnShape, found: Findings) -> None:
    if ours.identity != theirs.identity:
        found.failures.append(f"column {name} is {ours.type} in the source, {theirs.type} in the target")
    if ours.not_null and not theirs.not_null:
        found.failures.append(f"column {name} is NOT NULL in the source only")
    elif theirs.not_null and not ours.not_null:
        found.warnings.append(f"column {name} is NOT NULL in the target only")
    if ours.kind != theirs.kind:
        found.failures.append(f"column {name} is {ours.kind or 'a plain column'} in the source, "
                              f"{theirs.kind or 'a plain column'} in the target")
    elif ours.expression != theirs.expression:
        found.warnings.append(f"column {name} is generated differently: source {ours.expression}, "
                              f"target {theirs.expression}")
    if ours.collation != theirs.collation:
        found.warnings.append(f"column {name} is collated {theirs.collation or 'as its type'} in the target, "
                              f"{ours.collation or 'as its type'} in the source (order and equality may differ)")
    if ours.identity == theirs.identity and ours.enum is not None and ours.labels != theirs.labels:
        _compare_labels(name, ours, theirs.labels or [], found)
    if ours.default is not None and theirs.default is None:
        found.failures.append(f"column {name} has no default in the target (source: {ours.default})")
    elif ours.default != theirs.default:
        found.warnings.append(f"column {name} has another default in the target: source {ours.default}, "
                              f"target {theirs.default}")


def _compare_labels(name: str, ours: ColumnShape, theirs: list[str], found: Findings) -> None:
    """A label the target's enum lacks fails even when no row holds it yet: the application writes it after the
    cutover and the target refuses. One the target has more, or another order (how < sorts), warns."""
    enum, labels = ours.enum, ours.labels or []
    missing = [label for label in labels if label not in theirs]
    extra = [label for label in theirs if label not in labels]
    if missing:
        how = "add it there" if len(missing) == 1 else "add each there, in the source's order"
        found.failures.append(f"column {name}: enum {enum} lacks {_quoted(missing)} in the target "
                              f"({how}: ALTER TYPE {enum} ADD VALUE {_quoted(missing[:1])}"
                              f"{_placed(missing[0], labels, theirs)})")
    if extra:
        found.warnings.append(f"column {name}: enum {enum} has {_quoted(extra)} in the target only")
    if not missing and not extra:
        found.warnings.append(f"column {name}: enum {enum} orders its labels otherwise in the target "
                              "(ORDER BY and < sort its values otherwise)")


def _placed(label: str, labels: list[str], theirs: list[str]) -> str:
    """Where a label goes among the target's, so that its order is the source's (an enum's cannot change later)."""
    at = labels.index(label)
    if (after := next((x for x in labels[at + 1:] if x in theirs), None)) is not None:
        return f" BEFORE {_quoted([after])}"
    before = next((x for x in reversed(labels[:at]) if x in theirs), None)
    return f" AFTER {_quoted([before])}" if before is not None else ""


def _quoted(labels: list[str]) -> str:
    """SQL literals; one holding a tab, a line break or a backslash as an escape string, shown as it reads."""
    return ", ".join(_literal(label) for label in labels)


def _literal(label: str) -> str:
    text = label.replace("'", "''")
    if not any(c in label for c in "\\\t\n\r"):
        return f"'{text}'"
    for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        text = text.replace(char, escaped)
    return f"E'{text}'"


def _compare_constraints(ours: dict[str, tuple[str, str]], theirs: dict[str, tuple[str, str]],
                         found: Findings, left_out: dict[str, TableKey]) -> None:
    """Matched by name, else by kind and definition (a renamed constraint is the same constraint). A foreign key
    missing in the target that references a table the export left out (`left_out`) only warns."""
    matched: set[str] = set()
    for name, (kind, definition) in sorted(ours.items()):
        other = theirs.get(name)
        if other is None or other[0] != kind:
            same = next((n for n, v in sorted(theirs.items()) if v == (kind, definition) and n not in ours), None)
            if same is None:
                missing = f"{KINDS[kind]} {name} is missing in the target ({definition})"
                if name in left_out:
                    found.warnings.append(f"{missing}: it references {'.'.join(left_out[name])}, which the export "
                                          "leaves out")
                else:
                    found.failures.append(missing)
                continue
            name = same
        elif other[1] == f"{definition} NOT VALID":  # its rows were never checked: some may break it
            found.failures.append(f"{KINDS[kind]} {name} is NOT VALID in the target (ALTER TABLE ... VALIDATE "
                                  f"CONSTRAINT {name})")
        elif other[1] != definition:
            found.warnings.append(f"{KINDS[kind]} {name} differs: source {definition}, target {other[1]}")
        matched.add(name)
    found.warnings += [f"{KINDS[kind]} {name} is in the target only" for name, (kind, _) in sorted(theirs.items())
                       if name not in matched and name not in ours]


def _compare_indexes(ours: dict[str, str], theirs: dict[str, str], found: Findings) -> None:
    """Matched by name, else by definition less the name."""
    shapes = {_index_shape(d): n for n, d in theirs.items() if n not in ours}
    matched: set[str] = set()
    for name, definition in sorted(ours.items()):
        if name in theirs:
            matched.add(name)
            if _index_shape(theirs[name]) != _index_shape(definition):
                found.warnings.append(f"index {name} differs: source {definition}, target {theirs[name]}")
        elif _index_shape(definition) in shapes:
            matched.add(shapes[_index_shape(definition)])
        else:
            found.failures.append(f"index {name} is missing in the target ({definition})")
    found.warnings += [f"index {name} is in the target only" for name in sorted(theirs) if name not in matched]


def _index_shape(definition: str) -> tuple[bool, str]:
    """Unique or not, and what follows ` ON `: the definition without the index's own name."""
    return definition.startswith("CREATE UNIQUE"), definition.split(" ON ", 1)[-1]
