"""A watch on a command's sessions: the other session one of them waits for is named, with how to end the wait.

supamove waits for locks without a limit (`lock_timeout = 0`): a table another session holds (an
application still connected, a psql session left idle in its transaction, a migration's ALTER TABLE)
only delays the step. A silent wait looks like a hang at night; this names the session at fault.
"""

from __future__ import annotations

import threading
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit

import psycopg

from supamove.db import Endpoint, connect
from supamove.log import get_logger

log = get_logger("locks")
WAITED_SECONDS = 2.0  # a wait this long is named
LOOK_EVERY = 0.5  # how often the watch looks, once it has connected

# supamove's sessions (by the application_name db.Endpoint.conninfo gives them) waiting for a lock, each
# with the sessions that block it (pg_blocking_pids) other than supamove's own, and those a blocker waits
# for in turn (an ALTER TABLE queued behind a session idle in its transaction blocks every later reader).
# Another role's session shows its pid, user and application to anyone; its state and times need
# pg_read_all_stats.
BLOCKED_SQL = """
SELECT coalesce((SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_locks l
                 JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE l.pid = w.pid AND NOT l.granted LIMIT 1), 'a row'),
       extract(epoch FROM now() - w.state_change)::int, b.pid, coalesce(b.usename, 'unknown user'),
       coalesce(nullif(b.application_name, ''), 'no application name'), coalesce(b.state, 'unknown state'),
       extract(epoch FROM now() - coalesce(b.xact_start, b.backend_start))::int,
       array_to_string(pg_blocking_pids(b.pid), ', ')
FROM pg_stat_activity w
CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS x(pid)
JOIN pg_stat_activity b ON b.pid = x.pid
WHERE w.application_name = %s AND w.wait_event_type = 'Lock' AND w.pid <> pg_backend_pid()
  AND w.datname = current_database() AND b.application_name IS DISTINCT FROM w.application_name
  AND now() - w.state_change >= make_interval(secs => %s)
"""


class LockWatch:
    """While open, a thread that names each session keeping one of supamove's sessions on `endpoint` waiting.

    It connects only once the command has run WAITED_SECONDS (a short command opens nothing), names each
    blocking session once per table, and never fails the command: it only informs.
    """

    def __init__(self, endpoint: Endpoint, step: str, every: float = WAITED_SECONDS) -> None:
        self.endpoint, self.step, self.every = endpoint, step, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"lock watch ({endpoint.side})", daemon=True)
        self._named: set[tuple[int, str]] = set()

    def __enter__(self) -> LockWatch:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(1.0)  # a query in flight ends with the connection; the thread is a daemon

    def _watch(self) -> None:
        conn: psycopg.Connection | None = None
        application = dict(parse_qsl(urlsplit(self.endpoint.conninfo()).query)).get("application_name", "supamove")
        try:
            wait = self.every
            while not self._stop.wait(wait):
                conn = conn or connect(self.endpoint, autocommit=True)
                for row in conn.execute(BLOCKED_SQL, (application, self.every)).fetchall():
                    self._name(*row)
                wait = LOOK_EVERY
        except BaseException as exc:  # noqa: BLE001 - it informs: its own trouble, or a Ctrl-C's (interrupt.check
            # in connect), ends it without a word, never the step
            log.debug("lock watch on the %s stopped: %r", self.endpoint.side, exc)
        finally:
            if conn is not None:
                conn.close()

    def _name(self, table: str, waited: int, pid: int, user: str, application: str, state: str,
              held: int | None, behind: str) -> None:
        if (pid, table) in self._named:
            return
        self._named.add((pid, table))
        since = f" for {held}s" if held is not None else ""
        if behind:  # queued ahead of ours, itself behind the session at fault
            log.warning("%s: the %s has waited %ss behind process %s on the %s (user %s, %s), which itself waits "
                        "for process %s: the %s goes on once those end their transactions (SELECT "
                        "pg_terminate_backend(...) on them, if they are not needed)", table, self.step, waited, pid,
                        self.endpoint.side, user, application, behind, self.step)
            return
        log.warning("%s: the %s has waited %ss for a lock that process %s holds on the %s (user %s, %s, %s%s); "
                    "it goes on once that session ends its transaction: end it with SELECT pg_terminate_backend(%s) "
                    "if it is not needed", table, self.step, waited, pid, self.endpoint.side, user, application, state,
                    since, pid)
