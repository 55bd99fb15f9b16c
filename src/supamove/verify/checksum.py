"""The SQL verify runs: order-independent checksums of every row and column, computed inside PostgreSQL.

Each row is the text of a record of its columns' canonical texts (columns in name order; the
record form quotes values and leaves NULL empty, so NULL, '' and 'NULL' all differ). A table's
checksum is its count and two exact sums over its rows of a 64-bit hash of that text, seeded 0 and
1 (`hashtextextended`): order-independent, and duplicates count. A changed, missing or extra row
leaves both sums equal only by a coincidence of 2^-64 each: the hash is not cryptographic, but
the rows are not chosen against it. It is the hash behind hash partitioning, so it gives the same
value on every PostgreSQL since 11 on little-endian machines (x86-64, ARM64), and it costs about
nothing beside rendering the row's text, where md5 and its hex halves took 80% more. Locating the
differing rows (buckets by hex prefix) still uses md5 of the same text.

Rendering the text is most of the cost, so when both servers are PostgreSQL 14 or newer, the columns
of a type whose equal values always have the same text (integers, boolean, uuid, dates and
timestamps) are hashed from their values by their type's own hash, the others from their texts, all
in one record (`hash_record_extended`). That record hash is a plain sum of its fields' hashes times
powers of 31, so a value swapped between two rows of one column would leave the table's sums as they
were: each row's hash is hashed once more (`hashint8extended`), which mixes it. It halves the cost of
a checksum of typical rows (measured on the bench's readings: 0.96 s against 1.90 s per million).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from psycopg import sql

from supamove.userids import UUID_INSIDE, UUID_TEXT

USER_MAP = sql.Identifier("pg_temp", "supamove_user_map")
UNMAPPED = "!unmapped:"
HASH = sql.Identifier("_h")
Checksum = tuple[int, int, int]  # rows, and two sums of row hashes
Bound = tuple[str, ...] | None  # a key value as canonical texts; None is open-ended
Blocks = tuple[int | None, int | None]  # a range of the table's blocks; None is open-ended
# Types whose equal values have the same text: hashed from their values (see the module's docstring).
BY_VALUE_TYPES = frozenset({"smallint", "integer", "bigint", "boolean", "uuid", "date",
                            "timestamp without time zone", "timestamp with time zone"})


@dataclass(frozen=True)
class Relation:
    """One side's table as verify reads it: the columns compared, and which hold user ids to map back."""

    schema: str
    name: str
    partitioned: bool
    columns: tuple[str, ...]  # compared columns, in name order
    key: tuple[str, ...] = ()
    mapped: dict[str, bool] = field(default_factory=dict)  # user-id column -> is an array
    by_value: dict[str, str] = field(default_factory=dict)  # column hashed from its value -> its (base) type
    padded: frozenset[str] = frozenset()  # bpchar without a length: its text is its output, trailing spaces kept
    flattened: frozenset[str] = frozenset()  # the source's user-id arrays: read as the target's mapped back
    lowered: frozenset[str] = frozenset()  # the source's text user ids: a uuid in any case reads in lower case
    named: dict[str, str] = field(default_factory=dict)  # reg* column -> the catalog its values name objects of
    # The target's JSON with user ids: Stack Auth ids in it read back; True for jsonb, whose keys then sort again
    json_back: dict[str, bool] = field(default_factory=dict)

    @property
    def source(self) -> sql.Composable:
        only = sql.SQL("") if self.partitioned else sql.SQL("ONLY ")
        return sql.SQL("{}{}").format(only, sql.Identifier(self.schema, self.name))


def column_text(rel: Relation, name: str) -> sql.Composable:
    """A column's canonical text; a user id held by the target is mapped back to its Supabase id (the user-id
    readings first: a char(36) or citext user id is one too)."""
    col = sql.Identifier(name)
    if name in rel.mapped:
        return _mapped_back(_qualified(rel, name), rel.mapped[name])
    if name in rel.json_back:
        return _json_mapped_back(_qualified(rel, name), rel.json_back[name])
    if name in rel.flattened:  # its bounds and dimensions, then its elements in order, as mapped back below
        return sql.SQL(
            "CASE WHEN {c} IS NULL THEN NULL ELSE coalesce(array_dims({c}), '') || coalesce((SELECT "
            "array_agg(e.v::text ORDER BY e.n)::text FROM unnest({c}) WITH ORDINALITY e(v, n)), '{{}}') END"
        ).format(c=col)
    if name in rel.lowered:  # the import maps 02A3… as 02a3…, and the target's id maps back in lower case
        return sql.SQL("CASE WHEN {c}::text ~* {uuid} THEN lower({c}::text) ELSE {c}::text END").format(
            c=col, uuid=sql.Literal(UUID_TEXT))
    if name in rel.padded:  # ::text trims them, 'b  ' and 'b' alike; concat() takes the type's output
        return sql.SQL("CASE WHEN {c} IS NOT NULL THEN concat({c}) END").format(c=col)
    if name in rel.named:  # with its schema on both sides, whatever either session's search_path finds
        # An oid naming nothing ('-', or a dropped object's) has no identity: its number, else it read as NULL.
        return sql.SQL("CASE WHEN {c} IS NOT NULL THEN coalesce((pg_identify_object({cat}::regclass, {c}::oid, 0))"
                       ".identity, {c}::oid::text) END").format(c=col, cat=sql.Literal(rel.named[name]))
    return sql.SQL("{}::text").format(col)


def _qualified(rel: Relation, name: str) -> sql.Identifier:
    """A column named with its table, for the subqueries that map user ids back: there, a column named like one
    of theirs (the mapping's stack or supabase, a piece of JSON text) was read as theirs."""
    return sql.Identifier(rel.schema, rel.name, name)


def _json_mapped_back(col: sql.Identifier, jsonb: bool) -> sql.Composable:
    """A target's JSON column the export found user ids in: each Stack Auth id in its text read as its Supabase id
    (the text cut at every uuid, the pieces joined again), so JSON rewritten on the target compares as the source's;
    one still holding Supabase ids reads as it is (the count of ids left decides about it). jsonb is read as jsonb
    again: it orders an object's keys by length and bytes, and ids as keys sort otherwise than the Stack Auth ids."""
    text = sql.SQL(
        "(SELECT string_agg(p.piece || coalesce(m.supabase, i.x[1], ''), '' "
        "ORDER BY p.n) FROM regexp_split_to_table({c}::text, {re}) WITH ORDINALITY p(piece, n) "
        "LEFT JOIN regexp_matches({c}::text, {grouped}, 'g') WITH ORDINALITY i(x, k) ON i.k = p.n "
        "LEFT JOIN {map} m ON m.stack = i.x[1])"
    ).format(c=col, re=sql.Literal(UUID_INSIDE), grouped=sql.Literal(f"({UUID_INSIDE})"), map=USER_MAP)
    if jsonb:
        text = sql.SQL("{}::jsonb::text").format(text)
    return sql.SQL("CASE WHEN {c} IS NULL THEN NULL ELSE {t} END").format(c=col, t=text)


def _mapped_back(col: sql.Identifier, array: bool) -> sql.Composable:
    """A target's user-id column: each Stack Auth id as the Supabase id it stands for."""
    if not array:
        return sql.SQL(
            "CASE WHEN {c} IS NULL THEN NULL ELSE coalesce("
            "(SELECT m.supabase FROM {map} m WHERE m.stack = {c}::text), {u} || {c}::text) END"
        ).format(c=col, map=USER_MAP, u=sql.Literal(UNMAPPED))
    return sql.SQL(  # array_agg flattens: the bounds and dimensions go first (array_dims), on both sides
        "CASE WHEN {c} IS NULL THEN NULL ELSE coalesce(array_dims({c}), '') || coalesce((SELECT array_agg(CASE WHEN e.v IS NULL THEN NULL "
        "ELSE coalesce(m.supabase, {u} || e.v::text) END ORDER BY e.n)::text "
        "FROM unnest({c}) WITH ORDINALITY e(v, n) LEFT JOIN {map} m ON m.stack = e.v::text), '{{}}') END"
    ).format(c=col, map=USER_MAP, u=sql.Literal(UNMAPPED))


def row_hash(rel: Relation) -> sql.Composable:
    texts = sql.SQL(", ").join(column_text(rel, c) for c in rel.columns)
    return sql.SQL("md5(ROW({})::text)").format(texts)


def key_list(rel: Relation) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, rel.key))


def key_texts(rel: Relation) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in rel.key)


def key_outputs(rel: Relation) -> sql.Composable:
    """Key texts under names of their own: `ORDER BY id` must not sort the text output named id."""
    return sql.SQL(", ").join(sql.SQL("{}::text AS {}").format(sql.Identifier(k), sql.Identifier(f"_k{i}"))
                              for i, k in enumerate(rel.key))


def compare_key(rel: Relation, op: str, bound: tuple[str, ...]) -> sql.Composable:
    """`(k1, k2) < ('a', 'b')`: bounds are untyped literals, so each takes its key column's type."""
    values = sql.SQL(", ").join(sql.Literal(v) for v in bound)
    return sql.SQL("({}) {} ({})").format(key_list(rel), sql.SQL(op), values)


def key_range(rel: Relation, low: Bound, high: Bound) -> sql.Composable:
    parts: list[sql.Composable] = [sql.SQL("true")]
    if low is not None:
        parts.append(compare_key(rel, ">=", low))
    if high is not None:
        parts.append(compare_key(rel, "<", high))
    return sql.SQL(" AND ").join(parts)


def _sums(inner: sql.Composable, group: sql.Composable | None = None) -> sql.Composed:
    halves = sql.SQL(
        "count(*), coalesce(sum(('x' || substr({h}, 1, 16))::bit(64)::bigint), 0), "
        "coalesce(sum(('x' || substr({h}, 17, 16))::bit(64)::bigint), 0)").format(h=HASH)
    if group is None:
        return sql.SQL("SELECT {} FROM ({}) r").format(halves, inner)
    return sql.SQL("SELECT {g}, {} FROM ({}) r GROUP BY {g}").format(halves, inner, g=group)


def checksum_query(rel: Relation, blocks: Blocks = (None, None)) -> sql.Composed:
    """The checksum (count and the two sums) of the table, or of the rows in a range of its blocks."""
    where: list[sql.Composable] = [sql.SQL("true")]
    if blocks[0] is not None:
        where.append(sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({blocks[0]},0)")))
    if blocks[1] is not None:
        where.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({blocks[1]},0)")))
    # OFFSET 0 keeps the row rendered once: inlined, it would be rendered for each sum.
    inner = sql.SQL("SELECT {} AS {} FROM {} WHERE {} OFFSET 0").format(
        _row(rel), HASH, rel.source, sql.SQL(" AND ").join(where))
    return sql.SQL("SELECT count(*), coalesce(sum({}), 0), coalesce(sum({}), 0) FROM ({}) r").format(
        _row_hash(rel, 0), _row_hash(rel, 1), inner)


def _row(rel: Relation) -> sql.Composable:
    """The row as checksums hash it: the text of its columns' texts, or a record (see the module's docstring)."""
    if not rel.by_value:
        return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(column_text(rel, c) for c in rel.columns))
    # In the C collation, text is hashed as its bytes, whatever the column's collation.
    fields = [sql.SQL("{}::{}").format(sql.Identifier(c), sql.SQL(rel.by_value[c])) if c in rel.by_value
              else sql.SQL('({}) COLLATE "C"').format(column_text(rel, c)) for c in rel.columns]
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(fields))


def _row_hash(rel: Relation, seed: int) -> sql.Composable:
    if not rel.by_value:
        return sql.SQL("hashtextextended({}, {})").format(HASH, sql.Literal(seed))
    return sql.SQL("hashint8extended(hash_record_extended({}, {s}), {s})").format(HASH, s=sql.Literal(seed))


def size_query(rel: Relation) -> sql.Composed:
    """The table's size in blocks, the server's version number, and whether the table is partitioned."""
    return sql.SQL(
        "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int, "
        "current_setting('server_version_num')::int, c.relkind = 'p' FROM pg_class c "
        "WHERE c.oid = {}::regclass"
    ).format(sql.Literal(sql.Identifier(rel.schema, rel.name).as_string(None)))


def count_query(rel: Relation) -> sql.Composed:
    return sql.SQL("SELECT count(*) FROM {}").format(rel.source)


# The rows whose inserting (or updating) transaction the export's snapshot did not see: written after it. A
# tuple's xmin is 32 bits, read as the full id only while the server is in its first 2^32 transactions; after
# that a frozen row's old xmin could pass for a new one, and nothing is counted (NULL).
WRITTEN_SINCE_SQL = """
SELECT CASE WHEN pg_snapshot_xmax(pg_current_snapshot())::text::bigint < 4294967296 THEN
  (SELECT count(*) FROM {} WHERE NOT pg_visible_in_snapshot(xmin::text::xid8, %s::pg_snapshot)) END
"""


def written_since_query(rel: Relation) -> sql.Composed:
    return sql.SQL(WRITTEN_SINCE_SQL).format(rel.source)


def split_points_query(rel: Relation, low: Bound, high: Bound, step: int) -> sql.Composed:
    """Every `step`-th key in the range, in key order: the boundaries of the next segments. The subquery's
    columns get names of their own: a key column named like the row number would be ambiguous."""
    names = [sql.Identifier(f"_k{i}") for i in range(len(rel.key))]
    return sql.SQL(
        "SELECT {texts} FROM (SELECT {keys}, row_number() OVER (ORDER BY {keys}) FROM {t} WHERE {r}) s({names}, _n) "
        "WHERE _n % {step} = 1 AND _n > 1 ORDER BY _n"
    ).format(texts=sql.SQL(", ").join(sql.SQL("{}::text").format(n) for n in names), keys=key_list(rel),
             t=rel.source, r=key_range(rel, low, high), names=sql.SQL(", ").join(names), step=sql.Literal(step))


def segments_query(rel: Relation, low: Bound, high: Bound, bounds: Sequence[tuple[str, ...]]) -> sql.Composed:
    """A checksum per segment: segment i holds keys from bounds[i-1] (inclusive) to bounds[i]."""
    cases = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(compare_key(rel, "<", b), sql.Literal(i)) for i, b in enumerate(bounds))
    segment = sql.SQL("CASE {} ELSE {} END").format(cases, sql.Literal(len(bounds)))
    inner = sql.SQL("SELECT {} AS _seg, {} AS {} FROM {} WHERE {} OFFSET 0").format(
        segment, row_hash(rel), HASH, rel.source, key_range(rel, low, high))
    return _sums(inner, sql.Identifier("_seg"))


def row_hashes_query(rel: Relation, low: Bound, high: Bound) -> sql.Composed:
    """Each row's key texts and hash, in key order."""
    return sql.SQL("SELECT {}, {} FROM {} WHERE {} ORDER BY {}").format(
        key_outputs(rel), row_hash(rel), rel.source, key_range(rel, low, high), key_list(rel))


def rows_by_key_query(rel: Relation, low: Bound, high: Bound) -> sql.Composed:
    """The canonical texts of the rows whose key texts are given, one text[] parameter per key column."""
    arrays = sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in rel.key)
    texts = sql.SQL(", ").join(column_text(rel, c) for c in rel.columns)
    return sql.SQL("SELECT {}, {} FROM {} WHERE {} AND ({}) IN (SELECT * FROM unnest({}))").format(
        key_outputs(rel), texts, rel.source, key_range(rel, low, high), key_texts(rel), arrays)


def buckets_query(rel: Relation, depth: int) -> sql.Composed:
    """A checksum per bucket of rows whose hashes share their first `depth` hex digits."""
    inner = sql.SQL("SELECT {} AS {} FROM {} OFFSET 0").format(row_hash(rel), HASH, rel.source)
    return _sums(inner, sql.SQL("substr({}, 1, {})").format(HASH, sql.Literal(depth)))


def hash_counts_query(rel: Relation, depth: int) -> sql.Composed:
    """How many times each row hash occurs, in the buckets given as a text[] parameter."""
    return sql.SQL(
        "SELECT {h}, count(*) FROM (SELECT {} AS {h} FROM {} OFFSET 0) r "
        "WHERE substr({h}, 1, {}) = ANY(%s::text[]) GROUP BY {h}"
    ).format(row_hash(rel), rel.source, sql.Literal(depth), h=HASH)


def rows_by_hash_query(rel: Relation) -> sql.Composed:
    """One row's canonical texts for each row hash given as a text[] parameter. The hash is not named in a
    query that reads the table's columns: a column named like it would be ambiguous."""
    texts = sql.SQL(", ").join(column_text(rel, c) for c in rel.columns)
    return sql.SQL("SELECT DISTINCT ON (1) {h}, {} FROM {} WHERE {h} = ANY(%s::text[])").format(
        texts, rel.source, h=row_hash(rel))


def unmapped_query(rel: Relation, column: str) -> sql.Composed:
    """How many rows hold, in `column`, a user id the mapping cannot map back."""
    col = _qualified(rel, column)
    if not rel.mapped[column]:
        test = sql.SQL("{c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {map} m WHERE m.stack = {c}::text)")
    else:
        test = sql.SQL("EXISTS (SELECT 1 FROM unnest({c}) e(v) WHERE e.v IS NOT NULL "
                       "AND NOT EXISTS (SELECT 1 FROM {map} m WHERE m.stack = e.v::text))")
    return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(rel.source, test.format(c=col, map=USER_MAP))
