"""`user-mapping.json`: each Supabase user id with its Stack Auth user id, a public contract (see the README).

Written by migrate-users and map-users, read by import (to rewrite user ids) and verify (to compare them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from supamove.clock import iso
from supamove.errors import DataFileError, StackAuthError
from supamove.files import UUID, SavePacer, json_list, read_json_items, write_json_items

RETENTION = timedelta(days=90)


@dataclass
class UserMapping:
    """The mapping in memory; `save` rewrites the file atomically (0600)."""

    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    generated_at: str | None = None
    retain_until: str | None = None
    project_id: str | None = None  # the Stack Auth project its users are in (absent in files of older versions)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _owners: dict[str, str] = field(default_factory=dict, repr=False)  # Stack Auth id (lower) -> Supabase id
    _pacer: SavePacer = field(default_factory=SavePacer, repr=False)

    @classmethod
    def load(cls, path: Path) -> UserMapping:
        """The mapping file, or an empty mapping when there is none; a damaged one is a DataFileError."""
        fix = f"restore {path.name} from a backup, or move it away and run `supamove map-users` to rebuild it"
        found = read_json_items(path, "mappings", "map-users", fix=fix, missing_ok=True)
        if found is None:
            return cls(path)
        data, entries = found  # the entries read one at a time: the file is never whole in memory
        entries = iter(json_list(data, "mappings", path, fix)) if entries is None else entries  # no list: raises
        project = data.get("stackAuthProjectId")
        mapping = cls(path, generated_at=data.get("generatedAt"), retain_until=data.get("retainUntil"),
                      project_id=project if isinstance(project, str) else None)
        seen: set[str] = set()  # Supabase ids, lowercase
        for number, entry in enumerate(entries, 1):
            sid = mapping._check_entry(number, entry, seen, fix)
            seen.add(sid.lower())
            stack_id = entry["stackAuthUserId"]
            mapping.entries[sid] = {"supabaseUserId": sid, "stackAuthUserId": stack_id,
                                    "email": entry.get("email"), "migratedAt": entry.get("migratedAt")}
            mapping._owners[stack_id.lower()] = sid
        return mapping

    def _check_entry(self, number: int, entry: Any, seen: set[str], fix: str) -> str:
        """The entry's Supabase id, once it names both ids, neither of them listed before."""
        sid = entry.get("supabaseUserId") if isinstance(entry, dict) else None
        if not isinstance(sid, str) or not isinstance(entry.get("stackAuthUserId"), str):
            raise DataFileError(f"{self.path}: mapping number {number} lacks supabaseUserId or stackAuthUserId",
                                fix=fix)
        for key in ("supabaseUserId", "stackAuthUserId"):  # both go into uuid columns (and verify's uuid table)
            if not UUID.fullmatch(entry[key]):
                raise DataFileError(f"{self.path}: mapping number {number} has {key} {entry[key]!r}, not a uuid",
                                    fix=fix)
        if sid.lower() in seen:  # uuids ignore case: of "A" and "a", one would silently win
            raise DataFileError(f"{self.path} lists Supabase user {sid.lower()} twice", fix=fix)
        stack_id = entry["stackAuthUserId"]
        other = self._owners.get(stack_id.lower())
        if other is not None:
            # import would give two Supabase users' rows the same Stack Auth id (a primary-key collision)
            raise DataFileError(
                f"{self.path} lists Stack Auth user {stack_id} twice (for Supabase users {other} and {sid}); "
                "each Supabase user must have a Stack Auth user of its own",
                fix=f"move {self.path.name} away, run `supamove map-users` to rebuild it, then "
                    "`supamove migrate-users` to create the users it lacks")
        return sid

    def by_supabase(self) -> dict[str, str]:
        """Supabase id (lowercase) to Stack Auth id: how import rewrites user ids."""
        with self.lock:
            return {sid.lower(): e["stackAuthUserId"] for sid, e in self.entries.items()}

    def by_stack(self) -> dict[str, str]:
        """Stack Auth id to Supabase id, both lowercase: how verify reads the target's user ids back."""
        with self.lock:
            return {e["stackAuthUserId"].lower(): sid.lower() for sid, e in self.entries.items()}

    def get(self, supabase_user_id: str) -> str | None:
        with self.lock:
            entry = self.entries.get(supabase_user_id)
            return entry["stackAuthUserId"] if entry else None

    def none_in(self, present: Container[str]) -> bool:
        """Users mapped, and not one of them among `present` (Stack Auth ids in lower case): another Stack Auth,
        another project, or every one of them deleted there."""
        with self.lock:
            return bool(self._owners) and not any(stack_id in present for stack_id in self._owners)

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
            self._pacer.changed()

    def forget(self, supabase_user_id: str) -> None:
        """Drop one user's entry: its Stack Auth user is not to be trusted with its rows."""
        with self.lock:
            entry = self.entries.pop(supabase_user_id, None)
            if entry is not None:
                self._owners.pop(entry["stackAuthUserId"].lower(), None)
                self._pacer.changed()

    def due(self) -> bool:
        """Enough new entries, or enough time, to be worth a rewrite."""
        with self.lock:
            return self._pacer.due()

    @classmethod
    def fresh(cls, path: Path, project_id: str | None = None) -> UserMapping:
        """An empty mapping to rebuild the file at `path` for a project, keeping its retainUntil when it can be
        read."""
        try:
            return cls(path, retain_until=cls.load(path).retain_until, project_id=project_id)
        except DataFileError:  # a damaged file is what a rebuild replaces
            return cls(path, project_id=project_id)

    def check_project(self, project_id: str) -> None:
        """Stop when the mapping's users are in another Stack Auth project than this one. A mapping that names no
        project (written before it was recorded) passes: migrate-users names the project once it has found the
        mapping's users there."""
        if self.project_id is not None and self.project_id != project_id:
            raise StackAuthError(
                f"{self.path} maps Supabase users to users of Stack Auth project {self.project_id}, and "
                f"STACK_AUTH_PROJECT_ID is {project_id}: the users it names are not in this project",
                fix="point STACK_AUTH_PROJECT_ID (and its key) at the project the users were created in; to move "
                    "them into this project instead, use another --data-dir (a new export and mapping)")

    def save(self) -> None:
        """Rewrite the file; retainUntil stays the one first written (90 days after), whatever reruns follow."""
        with self.lock:
            started, now = time.monotonic(), datetime.now(UTC)
            self.generated_at = iso(now)
            self.retain_until = self.retain_until or iso(now + RETENTION)
            head = {"generatedAt": self.generated_at, "retainUntil": self.retain_until}
            if self.project_id is not None:
                head["stackAuthProjectId"] = self.project_id
            write_json_items(self.path, head, "mappings", self.entries.values())
            self._pacer.saved(started)
