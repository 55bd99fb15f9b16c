"""Connections: a pool of sessions per side, so every query runs on the source and the target at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import psycopg
from psycopg import sql

from supamove.db import Endpoint, connect, first_line
from supamove.paths import DataDir
from supamove.usermap import UserMapping
from supamove.verify.checksum import USER_MAP, Relation
from supamove.verify.plan import TableComparison

T = TypeVar("T")
SUPABASE_IDS = sql.Identifier("pg_temp", "supamove_supabase_ids")  # the mapping's Supabase ids, as uuids


# The schemas holding extensions, after the session's own: a key of an extension's type (citext, ltree in Supabase's
# `extensions`) is compared with its own < operator, the one its ORDER BY sorts by, whatever the role's search_path.
EXTENSIONS_FOUND_SQL = """
SELECT set_config('search_path', concat_ws(', ', nullif(current_setting('search_path'), ''),
                  (SELECT string_agg(DISTINCT quote_ident(n.nspname), ', ') FROM pg_extension e
                   JOIN pg_namespace n ON n.oid = e.extnamespace WHERE n.nspname <> 'pg_catalog')), false)
"""


class SidePool:
    """`size` threads with one connection each to one side; the target's carry the user mapping."""

    def __init__(self, endpoint: Endpoint, size: int, mapping: dict[str, str] | None = None) -> None:
        self.endpoint, self.mapping = endpoint, mapping
        self._threads = ThreadPoolExecutor(size, thread_name_prefix=endpoint.side)
        self._local = threading.local()
        self._conns: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    def submit(self, work: Callable[[psycopg.Connection], T]) -> Future[T]:
        return self._threads.submit(self._call, work)

    def _call(self, work: Callable[[psycopg.Connection], T]) -> T:
        try:
            return work(self._conn())
        except psycopg.OperationalError as exc:
            raise self.endpoint.error(f"lost the {self.endpoint.side} database connection: {first_line(exc)}",
                                      "check the server is up, then run `supamove verify` again") from None

    def _conn(self) -> psycopg.Connection:
        if not hasattr(self._local, "conn"):
            conn = connect(self.endpoint, autocommit=True)
            conn.execute(EXTENSIONS_FOUND_SQL)
            with self._lock:
                self._conns.append(conn)
            if self.mapping is not None:
                load_user_map(conn, self.mapping)
            self._local.conn = conn
        return self._local.conn  # type: ignore[no-any-return]

    def close(self) -> None:
        self._threads.shutdown(cancel_futures=True)
        for conn in self._conns:
            conn.close()


def load_user_map(conn: psycopg.Connection, mapping: dict[str, str]) -> None:
    """The mapping, Stack Auth id to Supabase id, in a temporary table of this session; its Supabase ids in another.

    The tables' names are the ones the checksum SQL (`checksum.USER_MAP`) and the count of Supabase ids
    left (`SUPABASE_IDS`) read.
    """
    conn.execute("CREATE TEMP TABLE supamove_user_map (stack text PRIMARY KEY, supabase text NOT NULL)")
    with conn.cursor().copy("COPY pg_temp.supamove_user_map (stack, supabase) FROM STDIN") as copy:
        for stack, supabase in mapping.items():
            copy.write_row((stack, supabase))
    conn.execute("ANALYZE pg_temp.supamove_user_map")
    # As uuids once per session: each column counted hashes them, and a cast per id and column cost
    # three times the hashing.
    conn.execute(sql.SQL("CREATE TEMP TABLE {} AS SELECT supabase::uuid AS id FROM {}").format(SUPABASE_IDS, USER_MAP))
    conn.execute(sql.SQL("ANALYZE {}").format(SUPABASE_IDS))


def read_mapping(datadir: DataDir) -> dict[str, str] | None:
    """Stack Auth id to Supabase id (both lowercase), or None when there is no mapping file yet."""
    if not datadir.user_mapping.exists():
        return None
    return UserMapping.load(datadir.user_mapping).by_stack()


def fetch_all(cur: psycopg.Cursor[Any]) -> list[Any]:
    return cur.fetchall()


def fetch_value(cur: psycopg.Cursor[Any]) -> Any:
    """The first column of the one row a query returns."""
    row = cur.fetchone()
    assert row is not None
    return row[0]


def fetch_int(cur: psycopg.Cursor[Any]) -> int:
    return int(fetch_value(cur))


@dataclass
class Pair:
    """One table's work on both sides: each query is run on the source and the target at once."""

    plan: TableComparison
    pools: dict[str, SidePool]
    src_rel: Relation
    tgt_rel: Relation

    @overload
    def both(self, make: Callable[[Relation], sql.Composed],
             params: Any = None) -> tuple[list[Any], list[Any]]: ...

    @overload
    def both(self, make: Callable[[Relation], sql.Composed], params: Any = None, *,
             fetch: Callable[[psycopg.Cursor[Any]], T]) -> tuple[T, T]: ...

    def both(self, make: Callable[[Relation], sql.Composed], params: Any = None,
             fetch: Callable[[psycopg.Cursor[Any]], Any] = fetch_all) -> tuple[Any, Any]:
        """Run the query built for each side on both sides in parallel."""
        mine = self.submit("source", make(self.src_rel), params, fetch)
        theirs = self.submit("target", make(self.tgt_rel), params, fetch)
        return _result(mine, theirs), theirs.result()

    def run(self, side: str, query: sql.SQL | sql.Composed, params: Any,
            fetch: Callable[[psycopg.Cursor[Any]], T]) -> T:
        return self.submit(side, query, params, fetch).result()

    def submit(self, side: str, query: sql.SQL | sql.Composed, params: Any,
               fetch: Callable[[psycopg.Cursor[Any]], T]) -> Future[T]:
        def work(conn: psycopg.Connection) -> T:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return fetch(cur)

        return self.pools[side].submit(work)


def _result(future: Future[T], other: Future[Any]) -> T:
    """The result of `future`, after waiting for `other` too, so no query outlives the table's work."""
    try:
        return future.result()
    except BaseException:
        try:
            other.result()
        except Exception:  # the first failure is the one reported
            pass
        raise
