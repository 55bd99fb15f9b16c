"""`user-mapping.json` (Supabase id to Stack Auth id) and the journal of creates in flight."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from supamove.errors import DataFileError
from supamove.files import PRIVATE, disk_error, write_json

RETENTION = timedelta(days=90)
FLUSH_EVERY = 200
FLUSH_SECONDS = 2.0


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class UserMapping:
    """The mapping in memory; `save` rewrites the file atomically (0600)."""

    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    generated_at: str | None = None
    retain_until: str | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _owners: dict[str, str] = field(default_factory=dict, repr=False)  # Stack Auth id (lower) -> Supabase id
    _unsaved: int = 0
    _saved_at: float = field(default_factory=time.monotonic)

    @classmethod
    def load(cls, path: Path) -> UserMapping:
        """The mapping file, or an empty mapping when there is none; a damaged one is a DataFileError."""
        if not path.exists():
            return cls(path)
        fix = f"restore {path.name} from a backup, or move it away and run `supamove map-users` to rebuild it"
        try:
            data = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise DataFileError(f"{path} is not valid JSON ({exc})", fix=fix) from None
        if not isinstance(data, dict) or not isinstance(data.get("mappings"), list):
            raise DataFileError(f"{path} has no \"mappings\" list", fix=fix)
        mapping = cls(path, generated_at=data.get("generatedAt"), retain_until=data.get("retainUntil"))
        for number, entry in enumerate(data["mappings"], 1):
            sid = entry.get("supabaseUserId") if isinstance(entry, dict) else None
            if not isinstance(sid, str) or not isinstance(entry.get("stackAuthUserId"), str):
                raise DataFileError(f"{path}: mapping number {number} lacks supabaseUserId or stackAuthUserId", fix=fix)
            if sid in mapping.entries:
                raise DataFileError(f"{path} lists Supabase user {sid} twice", fix=fix)
            stack_id = entry["stackAuthUserId"]
            other = mapping._owners.get(stack_id.lower())
            if other is not None:
                # import would give two Supabase users' rows the same Stack Auth id (a primary-key collision)
                raise DataFileError(
                    f"{path} lists Stack Auth user {stack_id} twice (for Supabase users {other} and {sid}); "
                    "each Supabase user must have a Stack Auth user of its own",
                    fix=f"move {path.name} away, run `supamove map-users` to rebuild it, then "
                        "`supamove migrate-users` to create the users it lacks")
            mapping.entries[sid] = {"supabaseUserId": sid, "stackAuthUserId": stack_id,
                                    "email": entry.get("email"), "migratedAt": entry.get("migratedAt")}
            mapping._owners[stack_id.lower()] = sid
        return mapping

    def get(self, supabase_user_id: str) -> str | None:
        with self.lock:
            entry = self.entries.get(supabase_user_id)
            return entry["stackAuthUserId"] if entry else None

    def owner_of(self, stack_auth_user_id: str) -> str | None:
        """The Supabase user mapped to this Stack Auth user, if any."""
        with self.lock:
            return self._owners.get(stack_auth_user_id.lower())

    def add(self, supabase_user_id: str, stack_auth_user_id: str, email: str | None,
            migrated_at: str | None = None) -> None:
        """Map one Supabase user; ValueError when the Stack Auth user is already another's (one-to-one)."""
        with self.lock:
            owner = self._owners.get(stack_auth_user_id.lower())
            if owner is not None and owner != supabase_user_id:
                raise ValueError(f"Stack Auth user {stack_auth_user_id} is already mapped to Supabase user {owner}")
            previous = self.entries.get(supabase_user_id)
            if previous is not None:
                self._owners.pop(previous["stackAuthUserId"].lower(), None)
            self.entries[supabase_user_id] = {"supabaseUserId": supabase_user_id,
                                              "stackAuthUserId": stack_auth_user_id, "email": email,
                                              "migratedAt": migrated_at or iso(datetime.now(UTC))}
            self._owners[stack_auth_user_id.lower()] = supabase_user_id
            self._unsaved += 1

    def due(self) -> bool:
        """Enough new entries, or enough time, to be worth a rewrite."""
        with self.lock:
            return self._unsaved >= FLUSH_EVERY or (
                self._unsaved > 0 and time.monotonic() - self._saved_at >= FLUSH_SECONDS)

    def save(self) -> None:
        with self.lock:
            now = datetime.now(UTC)
            self.generated_at, self.retain_until = iso(now), iso(now + RETENTION)
            write_json(self.path, {"generatedAt": self.generated_at, "retainUntil": self.retain_until,
                                   "mappings": list(self.entries.values())})
            self._unsaved = 0
            self._saved_at = time.monotonic()


class PendingJournal:
    """`user-creates-pending.jsonl`: an intent line before each create, a done or clear line after.

    An intent with neither after it is a create whose answer may have been lost: before creating
    that user again, look them up in Stack Auth.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.outstanding: dict[str, str | None] = {}
        self._handle: Any = None

    def load(self) -> tuple[dict[str, str | None], dict[str, str]]:
        """(intents without an outcome: id to e-mail, creates that finished: id to Stack Auth id)."""
        pending: dict[str, str | None] = {}
        done: dict[str, str] = {}
        if not self.path.exists():
            return pending, done
        with open(self.path, "rb") as handle:
            for line in handle:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a line cut short by a crash: its create never started
                sid = record.get("supabaseUserId")
                if record.get("op") == "intent":
                    pending[sid] = record.get("email")
                elif record.get("op") == "done":
                    pending.pop(sid, None)
                    done[sid] = record["stackAuthUserId"]
                elif record.get("op") == "clear":
                    pending.pop(sid, None)
        return pending, done

    def intent(self, supabase_user_id: str, email: str | None) -> None:
        with self.lock:
            self.outstanding[supabase_user_id] = email
            self._append({"op": "intent", "supabaseUserId": supabase_user_id, "email": email})

    def done(self, supabase_user_id: str, stack_auth_user_id: str) -> None:
        with self.lock:
            self.outstanding.pop(supabase_user_id, None)
            self._append({"op": "done", "supabaseUserId": supabase_user_id, "stackAuthUserId": stack_auth_user_id})

    def clear(self, supabase_user_id: str) -> None:
        with self.lock:
            self.outstanding.pop(supabase_user_id, None)
            self._append({"op": "clear", "supabaseUserId": supabase_user_id})

    def compact(self, keep: dict[str, str | None] | None = None) -> None:
        """Rewrite the journal with only the creates still in flight (the mapping holds the rest)."""
        with self.lock:
            self._close()
            records = {**(keep or {}), **self.outstanding}
            if not records:
                self.path.unlink(missing_ok=True)
                return
            lines = b"".join(orjson.dumps({"op": "intent", "supabaseUserId": sid, "email": email}) + b"\n"
                             for sid, email in records.items())
            partial = self.path.with_name(self.path.name + ".partial")
            try:
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(lines)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(partial, self.path)
            except OSError as exc:
                raise disk_error(self.path, exc) from exc

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
