"""`user-creates-pending.jsonl` and `user-updates-pending.jsonl`: the writes in flight, so a rerun never
creates (or updates) a user twice."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO, Any

import orjson

from supamove.files import PRIVATE, atomic_writer, disk_error, read_rows


class PendingJournal:
    """An intent line before each create, a done or clear line after.

    An intent with neither after it is a create whose answer may have been lost: before creating
    that user again, look them up in Stack Auth.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.outstanding: dict[str, dict[str, Any]] = {}  # this run's intents without an outcome
        self.intents: dict[str, dict[str, Any]] = {}  # the intent lines `load` found without an outcome
        self.finished: dict[str, dict[str, Any]] = {}  # the done lines `load` found, the last of each
        self._handle: IO[bytes] | None = None

    def load(self) -> tuple[dict[str, str | None], dict[str, str]]:
        """(intents without an outcome: id to e-mail, creates that finished: id to Stack Auth id)."""
        pending: dict[str, str | None] = {}
        done: dict[str, str] = {}
        if not self.path.exists():
            return pending, done
        # A line cut short by a crash is passed over: its create never started.
        for record in read_rows(self.path, skip_damaged=True):
            sid = record.get("supabaseUserId")
            if not isinstance(sid, str):
                continue
            if record.get("op") == "intent":
                pending[sid] = record.get("email")
                self.intents[sid] = record
            elif record.get("op") == "done" and isinstance(record.get("stackAuthUserId"), str):
                pending.pop(sid, None)
                self.intents.pop(sid, None)
                done[sid] = record["stackAuthUserId"]
                self.finished[sid] = record
            elif record.get("op") == "clear":
                pending.pop(sid, None)
                self.intents.pop(sid, None)
        return pending, done

    def intent(self, supabase_user_id: str, email: str | None, **details: Any) -> None:
        """Before the write; `details` say what it carries (an update's revision and fingerprints)."""
        with self.lock:
            record = {"op": "intent", "supabaseUserId": supabase_user_id, "email": email, **details}
            self.outstanding[supabase_user_id] = record
            self._append(record)

    def done(self, supabase_user_id: str, stack_auth_user_id: str, **details: Any) -> None:
        with self.lock:
            self.outstanding.pop(supabase_user_id, None)
            self._append({"op": "done", "supabaseUserId": supabase_user_id, "stackAuthUserId": stack_auth_user_id,
                          **details})

    def clear(self, supabase_user_id: str) -> None:
        with self.lock:
            self.outstanding.pop(supabase_user_id, None)
            self._append({"op": "clear", "supabaseUserId": supabase_user_id})

    def settle(self, supabase_user_ids: set[str]) -> None:
        """These writes are recorded elsewhere now (the caller saved them): the next compact drops them."""
        with self.lock:
            for sid in supabase_user_ids:
                self.outstanding.pop(sid, None)

    def compact(self) -> None:
        """Rewrite the journal with only the creates still in flight (the mapping holds the rest)."""
        with self.lock:
            self._close()
            if not self.outstanding:
                self.path.unlink(missing_ok=True)
                return
            with atomic_writer(self.path) as handle:
                for record in self.outstanding.values():
                    handle.write(orjson.dumps(record) + b"\n")

    def close(self) -> None:
        with self.lock:
            self._close()

    def _append(self, record: dict[str, Any]) -> None:
        try:
            if self._handle is None:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE)
                os.fchmod(fd, PRIVATE)
                self._handle = os.fdopen(fd, "ab")
            # Flushed to the kernel per line: an interrupted run loses no intent.
            self._handle.write(orjson.dumps(record) + b"\n")
            self._handle.flush()
        except OSError as exc:
            raise disk_error(self.path, exc) from exc

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
