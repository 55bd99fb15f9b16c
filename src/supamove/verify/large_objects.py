"""Large objects (pg_largeobject): supamove moves none, so the target must hold the source's before verify passes.

Their identifiers are compared, not their contents: pg_dump copies them whole (the fix names its command), and
reading them back would need each one's owner's rights and a gigabyte of memory for the largest.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from supamove.db import Endpoint, connect
from supamove.verify.model import LargeObjectCheck
from supamove.words import counted

# The count and a digest of the identifiers; pg_largeobject_metadata is readable by any user.
LARGE_OBJECTS_SQL = "SELECT count(*), coalesce(md5(string_agg(oid::text, ',' ORDER BY oid)), '') FROM pg_largeobject_metadata"


def large_object_check(source: Endpoint, target: Endpoint) -> LargeObjectCheck | None:
    """Both sides' large objects, when the source has any (None: nothing to move)."""
    with ThreadPoolExecutor(2, thread_name_prefix="verify-lo") as pool:
        (ours, mine), (theirs, their_digest) = pool.map(_read, (source, target))
    if not ours:
        return None
    check = LargeObjectCheck(ours, theirs)
    if (ours, mine) != (theirs, their_digest):
        held = f"{theirs:,}" if theirs else "none"
        check.failures.append(f"the source holds {counted(ours, 'large object')} (pg_largeobject), "
                              f"the target {held}{' of other identifiers' if ours == theirs else ''}: supamove "
                              "moves no large object")
    return check


def _read(endpoint: Endpoint) -> tuple[int, str]:
    with connect(endpoint, autocommit=True) as conn:
        row = conn.execute(LARGE_OBJECTS_SQL).fetchone()
    return (int(row[0]), str(row[1])) if row else (0, "")
