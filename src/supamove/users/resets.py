"""After the move: password-reset e-mails for users whose password could not come along, and the
mapping's deletion once its retention period is over."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from supamove.clock import iso, parse_iso
from supamove.errors import ConfigError, DataFileError, StackAuthError, SupamoveError
from supamove.files import json_list, read_json, write_json
from supamove.log import get_logger
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress
from supamove.usermap import UserMapping
from supamove.users.client import Rejected, StackAuthClient

log = get_logger("users.resets")
LABEL = "password resets"
SAVE_EVERY = 50


@dataclass
class ResetResult:
    sent: list[str] = field(default_factory=list)  # Supabase ids sent to in this run
    already_sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (Supabase id, why)
    to_send: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False

    def failure(self) -> StackAuthError | None:
        """The error a run with failed e-mails ends with (after its summary), or None."""
        if not self.failed:
            return None
        return StackAuthError(f"{len(self.failed):,} reset e-mails failed", fix="correct the cause, then rerun")

    def to_dict(self) -> dict[str, Any]:
        """`send-password-resets --dry-run --json`: who would be sent the e-mail, how many were sent before."""
        return {"dryRun": self.dry_run, "alreadySent": self.already_sent,
                "toSend": [{"supabaseUserId": u.get("supabaseUserId"), "email": u.get("email")}
                           for u in self.to_send],
                "sent": self.sent, "failed": [{"supabaseUserId": sid, "why": why} for sid, why in self.failed]}


def send_password_resets(client: StackAuthClient | None, datadir: DataDir, callback_url: str | None,
                         dry_run: bool = False, concurrency: int = 4,
                         progress: Progress | None = None) -> ResetResult:
    """Send Stack Auth's reset e-mail to everyone in password-reset-required.json not yet sent to."""
    path = datadir.password_resets
    required = json_list(read_json(path, "migrate-users"), "users", path,
                         "run `supamove migrate-users` again to rewrite it")
    sent = _load_sent(datadir.password_resets_sent)
    todo = [u for u in required if u.get("email") and u.get("supabaseUserId") not in sent]
    result = ResetResult(already_sent=len(required) - len(todo), to_send=todo, dry_run=dry_run)
    if dry_run:
        return result
    if not callback_url:
        raise ConfigError("--callback-url is required to send password resets",
                          fix="pass your app's password-reset page, e.g. --callback-url https://app.example.com/handler/password-reset")
    if client is None:
        raise ConfigError("no Stack Auth client", fix="set STACK_AUTH_PROJECT_ID and STACK_AUTH_SECRET_KEY")
    _send_all(client, datadir, callback_url, todo, sent, result, concurrency, progress or NullProgress())
    return result


def _send_all(client: StackAuthClient, datadir: DataDir, callback_url: str, todo: list[dict[str, Any]],
              sent: dict[str, dict[str, Any]], result: ResetResult, concurrency: int, progress: Progress) -> None:
    lock = threading.Lock()

    def send(user: dict[str, Any]) -> None:
        try:
            client.send_reset_code(user["email"], callback_url)
        except Rejected as exc:
            with lock:
                result.failed.append((user["supabaseUserId"], exc.message))
            return
        with lock:
            sent[user["supabaseUserId"]] = {"supabaseUserId": user["supabaseUserId"], "email": user["email"],
                                            "sentAt": iso(datetime.now(UTC))}
            result.sent.append(user["supabaseUserId"])
            if len(result.sent) % SAVE_EVERY == 0:
                _save_sent(datadir.password_resets_sent, sent)
        progress.advance(LABEL)

    progress.start(LABEL, len(todo))
    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="resets") as pool:
            for future in [pool.submit(send, user) for user in todo]:
                future.result()
    finally:
        with lock:
            _save_sent(datadir.password_resets_sent, sent)
        progress.finish(LABEL)


def _load_sent(path: Path) -> dict[str, dict[str, Any]]:
    fix = "restore it; deleting it would send every reset e-mail again"
    data = read_json(path, "send-password-resets", fix=fix, missing_ok=True)
    if data is None:
        return {}
    try:
        return {entry["supabaseUserId"]: entry for entry in json_list(data, "sent", path, fix)}
    except (KeyError, TypeError) as exc:
        raise DataFileError(f"{path} is damaged ({type(exc).__name__})", fix=fix) from exc


def _save_sent(path: Path, sent: dict[str, dict[str, Any]]) -> None:
    write_json(path, {"generatedAt": iso(datetime.now(UTC)), "sent": list(sent.values())})


@dataclass
class PurgeResult:
    deleted: list[Path]
    retain_until: str | None
    forced: bool


def purge_mapping(datadir: DataDir, force: bool = False, now: datetime | None = None) -> PurgeResult:
    """Delete user-mapping.json (and the create journal) once `retainUntil` has passed, or with force."""
    path = datadir.user_mapping
    if not path.exists():
        raise DataFileError(f"{path} not found", fix="nothing to purge (or point --data-dir at the right directory)")
    mapping = UserMapping.load(path)
    now = now or datetime.now(UTC)
    until = mapping.retain_until
    early = until is None or parse_iso(until) > now
    if early and not force:
        raise SupamoveError(f"{path.name} is to be kept until {until or '(no retainUntil recorded)'}",
                            fix="run purge-mapping after that date, or pass --force to delete it now")
    deleted = []
    for victim in (path, datadir.pending_creates):
        if victim.exists():
            victim.unlink()
            deleted.append(victim)
    log.info("deleted %s", ", ".join(str(p) for p in deleted))
    return PurgeResult(deleted, until, force and early)

