"""Locating the rows that differ: bisecting key ranges, or hash buckets for a table without a key."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence

from supamove.verify import checksum
from supamove.verify.checksum import Bound
from supamove.verify.model import ColumnChange, Difference, Kind, Texts
from supamove.verify.pools import Pair

SEGMENTS = 32  # pieces a differing key range is cut into
LEAF_ROWS = 5000  # a range this small is compared row by row
MAX_BUCKET_DEPTH = 4  # hex digits of the row hash that bucket a table without a key
SHOWN_CHARS = 200  # a value longer than this is cut in the report
Key = tuple[str, ...]
HashedRow = tuple[str, int, dict[str, str | None]]  # row hash, how many times, the row's texts


def locate(pair: Pair, rows: int, budget: int) -> list[Difference]:
    """Up to `budget` differing rows of a table of about `rows` rows."""
    if budget <= 0:
        return []
    if pair.plan.key:
        found: list[Difference] = []
        narrow(pair, None, None, rows, budget, found)
        return found[:budget]
    return locate_multiset(pair, rows, budget)


def narrow(pair: Pair, low: Bound, high: Bound, rows: int, budget: int, found: list[Difference]) -> None:
    """Bisect a differing key range: checksum its segments on both sides, recurse into those that differ."""
    if rows <= LEAF_ROWS:
        found += compare_rows(pair, low, high, budget - len(found))
        return
    step = math.ceil(rows / SEGMENTS)
    ours_bounds, theirs_bounds = pair.both(lambda rel: checksum.split_points_query(rel, low, high, step),
                                           fetch=lambda c: [tuple(r) for r in c])
    # Cut by the keys of the side holding more rows here, so every segment shrinks.
    bounds = theirs_bounds if len(theirs_bounds) > len(ours_bounds) else ours_bounds
    if not bounds:
        found += compare_rows(pair, low, high, budget - len(found))
        return
    ours, theirs = pair.both(lambda rel: checksum.segments_query(rel, low, high, bounds),
                             fetch=lambda c: {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in c})
    edges: list[Bound] = [low, *bounds, high]
    for i in range(len(bounds) + 1):
        if len(found) >= budget:
            return
        a, b = ours.get(i, (0, 0, 0)), theirs.get(i, (0, 0, 0))
        if a != b:
            narrow(pair, edges[i], edges[i + 1], max(a[0], b[0]), budget, found)


def compare_rows(pair: Pair, low: Bound, high: Bound, budget: int) -> list[Difference]:
    """Row hashes keyed by primary key on both sides: rows missing, extra or changed, in key order."""
    size = len(pair.plan.key)
    ours, theirs = pair.both(lambda rel: checksum.row_hashes_query(rel, low, high),
                             fetch=lambda c: [(tuple(r[:size]), r[size]) for r in c])
    mine, yours = _by_key(ours), _by_key(theirs)
    keys = list(dict.fromkeys([k for k, _ in ours] + [k for k, _ in theirs]))
    found: dict[Key, Difference] = {}
    changed: list[Key] = []
    for key in keys:
        if len(found) + len(changed) >= budget:
            break
        a, b = mine.get(key, Counter()), yours.get(key, Counter())
        if a == b:
            continue
        if a and b:
            changed.append(key)
        else:
            found[key] = Difference("missing" if a else "extra", _key_texts(pair, key), sum((a or b).values()))
    found.update(changed_rows(pair, low, high, changed))
    return [found[k] for k in keys if k in found]


def _by_key(rows: list[tuple[Key, str]]) -> dict[Key, Counter[str]]:
    out: dict[Key, Counter[str]] = {}
    for key, row_hash in rows:
        out.setdefault(key, Counter())[row_hash] += 1
    return out


def _key_texts(pair: Pair, key: Key) -> dict[str, str | None]:
    return dict(zip(pair.plan.key, key, strict=True))


def changed_rows(pair: Pair, low: Bound, high: Bound, keys: list[Key]) -> dict[Key, Difference]:
    """For rows on both sides that differ: which columns, and their canonical texts."""
    if not keys:
        return {}
    size = len(pair.plan.key)
    arrays = [list(column) for column in zip(*keys, strict=True)]
    ours, theirs = pair.both(lambda rel: checksum.rows_by_key_query(rel, low, high), arrays,
                             fetch=lambda c: {tuple(r[:size]): r[size:] for r in c})
    found = {}
    for key in keys:
        a, b = ours.get(key), theirs.get(key)
        if a is not None and b is not None:  # a row deleted meanwhile is not reported
            found[key] = Difference("changed", _key_texts(pair, key), columns=_changes(pair.plan.columns, a, b))
    return found


def _changes(names: Iterable[str], ours: Sequence[str | None],
             theirs: Sequence[str | None]) -> tuple[ColumnChange, ...]:
    """The columns whose texts differ, in the order given."""
    return tuple(ColumnChange(name, *shown_pair(x, y)) for name, x, y in zip(names, ours, theirs, strict=True)
                 if x != y)


def shown_pair(ours: str | None, theirs: str | None) -> tuple[str | None, str | None]:
    """Two values that differ, cut alike when long, from a little before where they first differ: two long
    values differing past their first SHOWN_CHARS characters read the same, but for their lengths."""
    if ours is None or theirs is None or max(len(ours), len(theirs)) <= SHOWN_CHARS:
        return shown(ours), shown(theirs)
    start = max(0, len(os.path.commonprefix([ours, theirs])) - SHOWN_CHARS // 5)
    return (shown(ours, start), shown(theirs, start)) if start else (shown(ours), shown(theirs))


def shown(value: str | None, start: int = 0) -> str | None:
    """A value as the report shows it: cut when long, so one big value cannot swamp the report."""
    if value is None or (not start and len(value) <= SHOWN_CHARS):
        return value
    if not start:
        return f"{value[:SHOWN_CHARS]}… ({len(value):,} characters)"
    more = "…" if start + SHOWN_CHARS < len(value) else ""
    return f"…{value[start:start + SHOWN_CHARS]}{more} (from character {start + 1:,} of {len(value):,})"


def locate_multiset(pair: Pair, rows: int, budget: int) -> list[Difference]:
    """A table without a key: bucket rows by their hash's first digits, then compare hash counts."""
    depth = min(MAX_BUCKET_DEPTH, max(0, math.ceil(math.log(max(rows, 1) / LEAF_ROWS, 16))))
    if depth == 0:
        prefixes = [""]
    else:
        ours, theirs = pair.both(lambda rel: checksum.buckets_query(rel, depth),
                                 fetch=lambda c: {r[0]: tuple(r[1:]) for r in c})
        prefixes = sorted(p for p in set(ours) | set(theirs) if ours.get(p) != theirs.get(p))[:budget]
    counts = pair.both(lambda rel: checksum.hash_counts_query(rel, depth), [prefixes],
                       fetch=lambda c: Counter({r[0]: int(r[1]) for r in c}))
    missing, extra = counts[0] - counts[1], counts[1] - counts[0]
    wanted = sorted(missing)[:budget] + sorted(extra)[:budget]
    if not wanted:
        return []
    texts = pair.both(checksum.rows_by_hash_query, [wanted], fetch=lambda c: {r[0]: r[1:] for r in c})
    rows_of: dict[str, list[HashedRow]] = {"missing": [], "extra": []}
    for kind, side, excess in (("missing", 0, missing), ("extra", 1, extra)):
        for row_hash in sorted(excess):
            values = texts[side].get(row_hash)
            if values is not None:
                rows_of[kind].append((row_hash, excess[row_hash], dict(zip(pair.plan.columns, values, strict=True))))
    return pair_by_key(pair.plan.row_key, rows_of["missing"], rows_of["extra"])[:budget]


def pair_by_key(key: Key, missing: list[HashedRow], extra: list[HashedRow]) -> list[Difference]:
    """Rows found only on one side; a missing and an extra row with the same key are one changed row."""
    def key_of(row: Texts) -> tuple[str | None, ...] | None:
        return tuple(row[k] for k in key) if key else None

    extras = {key_of(row): row for _, count, row in extra if count == 1 and key}
    diffs: list[Difference] = []
    paired = set()
    for _, count, row in missing:
        other = extras.get(key_of(row)) if count == 1 and key else None
        if other is not None:
            paired.add(key_of(row))
            diffs.append(Difference("changed", {k: row[k] for k in key},
                                    columns=_changes(row, list(row.values()), [other[n] for n in row])))
        else:
            diffs.append(_unmatched("missing", key, count, row))
    diffs += [_unmatched("extra", key, count, row) for _, count, row in extra
              if not (count == 1 and key and key_of(row) in paired)]
    return diffs


def _unmatched(kind: Kind, key: Key, count: int, row: Texts) -> Difference:
    """A row on one side only, shown whole: without a usable key, the row is all there is to name it."""
    return Difference(kind, {k: row[k] for k in key} if key else None, count,
                      row={n: shown(v) for n, v in row.items()})
