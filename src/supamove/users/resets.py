"""After the move: password-reset e-mails for users whose password could not come along, and the
mapping's deletion once its retention period is over."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from supamove.clock import iso, parse_iso
from supamove.config import web_url_problem
from supamove.errors import ConfigError, DataFileError, StackAuthError
from supamove.files import json_list, read_json, write_json
from supamove.log import get_logger
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress
from supamove.usermap import UserMapping
from supamove.users.client import AnswerLost, Rejected, StackAuthClient
from supamove.users.journal import PendingJournal
from supamove.users.source import normalize_email
from supamove.words import counted

log = get_logger("users.resets")
LABEL = "password resets"
SAVE_EVERY = 50


UNCERTAIN_FIX = ("ask those users whether it arrived (password-resets-sent.json lists them with status "
                 "\"uncertain\"); `--resend-uncertain` sends them another")


@dataclass
class ResetResult:
    sent: list[str] = field(default_factory=list)  # Supabase ids sent to in this run
    already_sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (Supabase id, why)
    to_send: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    uncertain: list[str] = field(default_factory=list)  # sent in this run, the answer lost: may have gone
    uncertain_before: int = 0  # uncertain sends of earlier runs, not sent again
    in_flight: list[str] = field(default_factory=list)  # sends a killed run left in its journal: may have gone

    def failure(self) -> StackAuthError | None:
        """The error a run with failed or uncertain e-mails ends with (after its summary), or None."""
        if self.uncertain or self.in_flight:
            failed = f"{counted(len(self.failed), 'reset e-mail')} failed; " if self.failed else ""
            why = "Stack Auth's answer was lost" if self.uncertain else "they were being sent when a run was killed"
            return StackAuthError(f"{failed}{counted(len(self.uncertain) + len(self.in_flight), 'reset e-mail')} may or may "
                                  f"not have been sent ({why})", fix=UNCERTAIN_FIX)
        if not self.failed:
            return None
        return StackAuthError(f"{counted(len(self.failed), 'reset e-mail')} failed", fix="correct the cause, then rerun")

    def to_dict(self) -> dict[str, Any]:
        """`send-password-resets --dry-run --json`: who would be sent the e-mail, how many were sent before."""
        return {"dryRun": self.dry_run, "alreadySent": self.already_sent,
                "toSend": [{"supabaseUserId": u.get("supabaseUserId"), "email": u.get("email")}
                           for u in self.to_send],
                "sent": self.sent, "failed": [{"supabaseUserId": sid, "why": why} for sid, why in self.failed]}


def send_password_resets(client: StackAuthClient | None, datadir: DataDir, callback_url: str | None,
                         dry_run: bool = False, concurrency: int = 4, progress: Progress | None = None,
                         resend_uncertain: bool = False) -> ResetResult:
    """Send Stack Auth's reset e-mail to everyone in password-reset-required.json not yet sent to.

    A send whose answer was lost is recorded as uncertain and sent again only with `resend_uncertain`.
    """
    domain = check_callback_url(callback_url, required=not dry_run)  # a wrong URL is named before any file is read
    path = datadir.password_resets
    required = _required(path)
    journal = PendingJournal(datadir.pending_resets)
    sent, in_flight = _load_sent(datadir.password_resets_sent, journal)
    uncertain = {sid for sid, entry in sent.items() if entry.get("status") == "uncertain"}
    todo = [u for u in required if u.get("email") and (u.get("supabaseUserId") not in sent
                                                       or (resend_uncertain and u.get("supabaseUserId") in uncertain))]
    held = 0 if resend_uncertain else sum(u.get("supabaseUserId") in uncertain for u in required)
    result = ResetResult(already_sent=len(required) - len(todo) - held, to_send=todo, dry_run=dry_run,
                         uncertain_before=held, in_flight=in_flight)
    if dry_run:
        return result
    if client is None:
        raise ConfigError("no Stack Auth client", fix="set STACK_AUTH_PROJECT_ID and STACK_AUTH_SECRET_KEY")
    UserMapping.load(datadir.user_mapping).check_project(client.project_id)  # its users' e-mails, not another's
    sender = _Sender(client, datadir, str(callback_url), domain, sent, result, journal)
    sender.save()  # what a killed run's journal told, kept in password-resets-sent.json
    unreachable = _unreachable(client, todo) if todo else {}
    result.failed += [(u["supabaseUserId"], unreachable[u["supabaseUserId"]]) for u in todo
                      if u["supabaseUserId"] in unreachable]
    sender.send_all([u for u in todo if u["supabaseUserId"] not in unreachable], concurrency,
                    progress or NullProgress())
    return result


def _unreachable(client: StackAuthClient, todo: list[dict[str, Any]]) -> dict[str, str]:
    """The users Stack Auth's reset e-mail would not reach, each with why: Stack Auth answers a reset for an
    e-mail no user signs in with as it answers any other, and sends nothing. Their Stack Auth user deleted, or
    it signs in with another e-mail now (another user with this one, maybe). Read from Stack Auth's user list
    (200 a request); a user's further sign-in e-mails, only for one whose primary e-mail is not the listed one.
    StackAuthError when none of them is in this Stack Auth at all: not the one they were created in."""
    present: set[str] = set()
    signing_in: dict[str, str] = {}  # a primary sign-in e-mail -> its Stack Auth user
    for user in client.iter_users():
        present.add(str(user["id"]).lower())
        if (email := normalize_email(user.get("primary_email"))) and user.get("primary_email_auth_enabled"):
            signing_in.setdefault(email, str(user["id"]))
    mapped = [u for u in todo if u.get("stackAuthUserId")]
    if mapped and not any(str(u["stackAuthUserId"]).lower() in present for u in mapped):
        raise StackAuthError(
            f"none of the {counted(len(mapped), 'user')} to send a reset e-mail is in the Stack Auth at "
            f"{client.api_url} (project {client.project_id}): it is not the Stack Auth they were created in, or "
            "they were deleted there", fix="point STACK_AUTH_API_URL at the Stack Auth the users were created in; if "
            "they were deleted there, run `supamove map-users --forget-missing`, then `supamove migrate-users` "
            "(which creates them anew), then this command again")
    why: dict[str, str] = {}
    for user in todo:
        sid, stack_id, email = user["supabaseUserId"], user.get("stackAuthUserId"), normalize_email(user["email"])
        holder = signing_in.get(email or "")
        if stack_id and str(stack_id).lower() not in present:
            why[sid] = (f"Stack Auth user {stack_id} no longer exists (deleted in Stack Auth): nothing sent; run "
                        "`supamove map-users`, then `supamove migrate-users` (which creates the user anew), then this "
                        "command again")
        elif holder is not None and (not stack_id or holder.lower() == str(stack_id).lower()):
            continue
        elif stack_id and _signs_in_with(client, str(stack_id), email):
            continue
        else:
            who = f"Stack Auth user {holder}" if holder is not None else "no Stack Auth user"
            why[sid] = (f"{who} signs in with {user['email']} now, not {'its user' if not stack_id else stack_id} "
                        "(changed in Stack Auth since the migration): nothing sent, as Stack Auth would send the "
                        "link to no one or to another account; run `supamove migrate-users`, which reports the "
                        "change, and have the user reset their password from the sign-in page")
    return why


def _signs_in_with(client: StackAuthClient, stack_id: str, email: str | None) -> bool:
    """Whether the e-mail is one of the user's sign-in contact channels, a further one than its primary."""
    return email is not None and any(normalize_email(c.get("value")) == email and c.get("used_for_auth")
                                     for c in client.list_contact_channels(stack_id))


def _required(path: Path) -> list[dict[str, Any]]:
    """password-reset-required.json's users, each once; an entry not as migrate-users writes it is named."""
    fix = "run `supamove migrate-users` again to rewrite it"
    users: dict[str, dict[str, Any]] = {}
    for number, entry in enumerate(json_list(read_json(path, "migrate-users"), "users", path, fix), 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("supabaseUserId"), str) \
                or not isinstance(entry.get("email"), str | None):
            raise DataFileError(f"{path}: user {number} is not as migrate-users writes it ({str(entry)[:80]})",
                                fix=fix)
        users.setdefault(entry["supabaseUserId"], entry)  # listed twice by a hand edit: one e-mail
    return list(users.values())


def check_callback_url(callback_url: str | None, required: bool) -> str:
    """The origin Stack Auth must trust (`https://app.example.com`); ConfigError for a bad URL or a missing one."""
    example = "e.g. --callback-url https://app.example.com/handler/password-reset"
    if not callback_url:
        if not required:
            return ""
        raise ConfigError("--callback-url is required to send password resets",
                          fix=f"pass your app's password-reset page, {example}")
    if "@" in re.split(r"[/?#]", callback_url.partition("//")[2])[0]:  # it goes into every user's e-mail: never shown
        raise ConfigError("--callback-url carries a user name or password", fix=f"leave it out, {example}")
    if (problem := web_url_problem(callback_url)) is not None:
        raise ConfigError(f"--callback-url {callback_url}: {problem}", fix=f"pass a full URL, {example}")
    parts = urlsplit(callback_url)
    return f"{parts.scheme}://{parts.netloc}"


class _Sender:
    """One send-password-resets run: the first e-mail alone (it proves the link's domain is trusted), then the rest."""

    def __init__(self, client: StackAuthClient, datadir: DataDir, callback_url: str, domain: str,
                 sent: dict[str, dict[str, Any]], result: ResetResult, journal: PendingJournal) -> None:
        self.client, self.datadir, self.callback_url, self.domain = client, datadir, callback_url, domain
        self.sent, self.result, self.journal = sent, result, journal
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def send_all(self, todo: list[dict[str, Any]], concurrency: int, progress: Progress) -> None:
        progress.start(LABEL, len(todo))
        try:
            for user in todo[:1]:  # Stack Auth checks the link only for a user it has: the first real one
                self.send(user, progress)
            with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="resets") as pool:
                for future in [pool.submit(self.send, user, progress) for user in todo[1:]]:
                    future.result()
        finally:
            self.save()
            progress.finish(LABEL)

    def save(self) -> None:
        """password-resets-sent.json, then the journal less what that file now holds (the sends in flight stay)."""
        with self.lock:
            _save_sent(self.datadir.password_resets_sent, self.sent)
            self.journal.compact()

    def send(self, user: dict[str, Any], progress: Progress) -> None:
        if self.stop.is_set():
            return
        sid = user["supabaseUserId"]
        # Before the send, a line in the journal: a run killed before its next save finds the e-mails it
        # sent there (and those in flight, which may have gone), so a rerun sends none of them again.
        self.journal.intent(sid, user["email"], at=iso(datetime.now(UTC)))
        try:
            self.client.send_reset_code(user["email"], self.callback_url)
        except Rejected as exc:
            self.journal.clear(sid)  # refused: nothing went
            if exc.code == "REDIRECT_URL_NOT_WHITELISTED":
                self.stop.set()
                raise StackAuthError(f"Stack Auth refuses the reset link {self.callback_url}: {exc.message}",
                                     fix=f"add {self.domain} to the project's trusted domains (Stack Auth "
                                         "dashboard > Domains), then run the same command again") from None
            with self.lock:
                self.result.failed.append((sid, exc.message))
            return
        except AnswerLost:
            self._record(user, "uncertain")  # saved at once, with its status: the journal line is done with
            self.journal.clear(sid)
            return
        except BaseException:
            # Not sent: stopped before the request went (Ctrl-C, a 429 to the end, a refused connection, a
            # setting). Only a lost answer leaves an e-mail that may have gone: this one goes next run.
            self.journal.clear(sid)
            raise
        at = self._record(user, "sent")
        self.journal.done(sid, str(user.get("stackAuthUserId") or ""), email=user["email"], sentAt=at)
        progress.advance(LABEL)

    def _record(self, user: dict[str, Any], status: str) -> str:
        """The send in memory (saved every SAVE_EVERY sends, an uncertain one at once); when it was sent."""
        sid, at = user["supabaseUserId"], iso(datetime.now(UTC))
        with self.lock:
            self.sent[sid] = {"supabaseUserId": sid, "email": user["email"], "sentAt": at, "status": status}
            (self.result.sent if status == "sent" else self.result.uncertain).append(sid)
            due = len(self.result.sent) % SAVE_EVERY == 0 or status == "uncertain"
        if due:
            self.save()
        return at


def _load_sent(path: Path, journal: PendingJournal) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """password-resets-sent.json, with what the journal of a run killed before its next save adds to it:
    the e-mails it sent, and those it was sending (which may have gone: uncertain, and listed)."""
    fix = "restore it; deleting it would send every reset e-mail again"
    data = read_json(path, "send-password-resets", fix=fix, missing_ok=True)
    try:
        sent = {} if data is None else {entry["supabaseUserId"]: entry for entry in json_list(data, "sent", path, fix)}
    except (KeyError, TypeError) as exc:
        raise DataFileError(f"{path} is damaged ({type(exc).__name__})", fix=fix) from exc
    in_flight, _ = journal.load()
    for sid, record in journal.finished.items():
        sent[sid] = {"supabaseUserId": sid, "email": record.get("email"), "sentAt": record.get("sentAt"),
                     "status": "sent"}
    for sid, email in in_flight.items():
        sent.setdefault(sid, {"supabaseUserId": sid, "email": email, "sentAt": journal.intents[sid].get("at"),
                              "status": "uncertain"})
    return sent, [sid for sid in in_flight if sent[sid].get("status") == "uncertain"]


def _save_sent(path: Path, sent: dict[str, dict[str, Any]]) -> None:
    write_json(path, {"generatedAt": iso(datetime.now(UTC)), "sent": list(sent.values())})


@dataclass
class PurgeResult:
    deleted: list[Path]
    retain_until: str | None
    forced: bool


def purge_mapping(datadir: DataDir, force: bool = False, now: datetime | None = None) -> PurgeResult:
    """Delete user-mapping.json and every other file pairing the ids (the sync state, the journals) once
    `retainUntil` has passed, or with force."""
    path = datadir.user_mapping
    pairing = (datadir.pending_creates, datadir.pending_updates, datadir.user_sync_state, datadir.pending_resets)
    if not path.exists():
        leftovers = [f for f in pairing if f.exists()]  # a killed first run's: no mapping holds their date
        if not (force and leftovers):
            raise DataFileError(f"{path} not found", fix="nothing to purge (or point --data-dir at the right "
                                "directory)" + ("; --force deletes the journals a killed run left" if leftovers else ""))
        for victim in leftovers:
            victim.unlink()
        return PurgeResult(leftovers, None, True)
    mapping = UserMapping.load(path)
    now = now or datetime.now(UTC)
    until = mapping.retain_until
    try:
        early = until is None or parse_iso(until) > now
    except (TypeError, ValueError, AttributeError):  # edited by hand
        if not force:
            raise DataFileError(f"{path}: retainUntil {str(until)[:40]!r} is not a date",
                                fix="correct it to the date the file may be deleted, or pass --force to delete it "
                                    "now") from None
        early = True
    if early and not force:  # as export refuses a finished export without --force: exit 2
        raise ConfigError(f"{path.name} is to be kept until {until or '(no retainUntil recorded)'}",
                          fix="run `supamove purge-mapping` after that date, or pass --force to delete it now")
    deleted = []
    # Every file pairing Supabase ids with Stack Auth ids: the mapping, its journals, the sync state.
    for victim in (path, *pairing):
        if victim.exists():
            victim.unlink()
            deleted.append(victim)
    log.info("deleted %s", ", ".join(str(p) for p in deleted))
    return PurgeResult(deleted, until, force and early)

