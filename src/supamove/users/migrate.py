"""Step 3: every Supabase Auth user into Stack Auth, once, with the mapping kept as we go.

The decisions are made in `supamove.users.plan`; this module carries them out and reports.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from supamove.clock import iso
from supamove.errors import DataFileError, StackAuthError
from supamove.files import json_list, read_json, write_json
from supamove.log import get_logger
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress
from supamove.usermap import UserMapping
from supamove.users.client import EmailTaken, Rejected, StackAuthClient, supabase_id_of
from supamove.users.journal import PendingJournal
from supamove.users.plan import PlannedUser, plan_users
from supamove.users.source import load_auth_export, normalize_email

log = get_logger("users")
LABEL = "users"
RETRY_FIX = "correct the cause, then run the same command again (only the failed users are retried)"
PROVIDER_NOT_FOUND = re.compile(r"OAuth provider (\S+) not found")

# --- the run ---------------------------------------------------------------------------------


@dataclass
class MigrateOptions:
    concurrency: int = 8
    use_password_hashes: bool = True
    dry_run: bool = False


@dataclass
class UserOutcome:
    """How one Supabase user ended: migrated, linked or failed (a dry run: create, link or done)."""

    supabase_user_id: str
    status: str
    reason: str | None
    stack_auth_user_id: str | None
    email: str | None
    password: str = "none"
    reset_reason: str | None = None
    notes: list[str] = field(default_factory=list)
    created_now: bool = False
    fix: str | None = None  # for a failed user: what to do before running the command again
    mfa: str | None = None  # "totp": its verified TOTP factor is set in Stack Auth (a dry run: will be)
    mfa_not_carried: list[dict[str, Any]] = field(default_factory=list)  # {factorId, type, reason}

    def to_json(self) -> dict[str, Any]:
        return {"supabaseUserId": self.supabase_user_id, "status": self.status, "reason": self.reason,
                "fix": self.fix, "stackAuthUserId": self.stack_auth_user_id, "email": self.email,
                "password": self.password, "resetReason": self.reset_reason, "mfa": self.mfa,
                "mfaNotCarried": self.mfa_not_carried, "notes": self.notes}


@dataclass
class MigrationResult:
    outcomes: list[UserOutcome]
    dry_run: bool
    seconds: float
    retries: int = 0
    report_path: Path | None = None

    @property
    def counts(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)

    @property
    def created(self) -> int:
        return sum(o.created_now for o in self.outcomes)

    @property
    def reset_required(self) -> list[UserOutcome]:
        return [o for o in self.outcomes if o.password == "reset-required" and o.status in ("migrated", "create", "done")]

    @property
    def failed(self) -> list[UserOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def mfa_not_carried(self) -> list[UserOutcome]:
        """Users created (or to be) whose second factors cannot come along: listed in mfa-not-carried.json."""
        return [o for o in self.outcomes if o.mfa_not_carried and o.status != "failed"]

    @property
    def totp_carried(self) -> int:
        return sum(o.mfa == "totp" for o in self.outcomes)

    @property
    def users_per_second(self) -> float:
        return self.created / self.seconds if self.seconds else 0.0

    def failure(self) -> StackAuthError | None:
        """The error a run with failed users ends with (after its summary), or None."""
        if not self.failed:
            return None
        return StackAuthError(f"{len(self.failed):,} users failed (see {self.report_path})",
                              fix="correct the cause shown for them, then run the same command again")

    def to_dict(self) -> dict[str, Any]:
        """`migrate-users --dry-run --json`: the count of each outcome, then every user's planned outcome."""
        return {"dryRun": self.dry_run, "counts": dict(sorted(self.counts.items())),
                "resetRequired": len(self.reset_required), "users": [o.to_json() for o in self.outcomes]}


def migrate_users(client: StackAuthClient, datadir: DataDir, options: MigrateOptions | None = None,
                  progress: Progress | None = None) -> MigrationResult:
    """Create every exported Supabase user in Stack Auth (or plan it, with dry_run); safe to rerun."""
    options = options or MigrateOptions()
    started = time.monotonic()
    users = load_auth_export(datadir)
    mapping = UserMapping.load(datadir.user_mapping)
    journal = PendingJournal(datadir.pending_creates)
    pending, finished = journal.load()
    by_id = {u.id: u for u in users}
    for sid, stack_id in finished.items():  # creates the last run journaled but never saved to the mapping
        if mapping.get(sid) is None and mapping.owner_of(stack_id) is None:
            mapping.add(sid, stack_id, by_id[sid].normalized_email if sid in by_id else None)
    plan = plan_users(users, set(mapping.entries), options.use_password_hashes)
    next(client.iter_users(page_size=1), None)  # the credentials, checked before anything is created
    if options.dry_run:
        return MigrationResult(dry_run_outcomes(client, plan), True, time.monotonic() - started)
    run = _Run(client, mapping, journal, pending, options, progress or NullProgress())
    try:
        outcomes = run.execute(plan, _previous_report(datadir.users_report))
    finally:
        with mapping.lock:
            mapping.save()
            journal.compact()
        journal.close()
    result = MigrationResult(outcomes, False, time.monotonic() - started, client.retries)
    write_reports(datadir, result)
    return result


class _Run:
    """One migrate-users run: the creates in a thread pool, recorded as they finish."""

    def __init__(self, client: StackAuthClient, mapping: UserMapping, journal: PendingJournal,
                 pending: dict[str, str | None], options: MigrateOptions, progress: Progress) -> None:
        self.client, self.mapping, self.journal = client, mapping, journal
        self.pending, self.options, self.progress = pending, options, progress
        self.index: dict[str, dict[str, Any]] | None = None

    def execute(self, plan: list[PlannedUser], previous: dict[str, dict[str, Any]]) -> list[UserOutcome]:
        outcomes: dict[str, UserOutcome] = {}
        self.progress.start(LABEL, len(plan))
        creates = [item for item in plan if item.action == "create"]
        for item in plan:
            if item.action == "done":
                outcomes[item.user.id] = self._done(item, previous.get(item.user.id))
        self.progress.advance(LABEL, len(outcomes))
        if any(item.user.id in self.pending for item in creates):
            self.index = self._scan_index()
        for outcome in self._create_all(creates):
            outcomes[outcome.supabase_user_id] = outcome
        self.progress.finish(LABEL)
        return [outcomes[item.user.id] for item in plan]

    def _create_all(self, creates: list[PlannedUser]) -> Iterator[UserOutcome]:
        with ThreadPoolExecutor(max_workers=max(1, self.options.concurrency), thread_name_prefix="users") as pool:
            futures: set[Future[UserOutcome]] = {pool.submit(self._create, item) for item in creates}
            try:
                while futures:
                    done, futures = wait(futures, timeout=1.0, return_when=FIRST_EXCEPTION)
                    for future in done:
                        outcome = future.result()
                        self.progress.advance(LABEL)
                        yield outcome
                    self._flush_if_due()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def _flush_if_due(self) -> None:
        if self.mapping.due():
            with self.mapping.lock:
                self.mapping.save()
                self.journal.compact()

    def _create(self, item: PlannedUser) -> UserOutcome:
        sid = item.user.id
        if sid in self.pending:
            found = self.index.get(sid) if self.index is not None else self._lookup(item)
            if found is not None:
                return self._finish(item, found["id"], ["found in Stack Auth after an interrupted run"])
        self.journal.intent(sid, item.email)
        try:
            outcome = self.client.create_user(item.body or {}, recover=lambda: self._lookup(item))
        except EmailTaken:
            if not item.email_auth:  # Stack Auth refuses a shared e-mail only when both would sign in with it
                self.journal.clear(sid)
                return _failed(item, "Stack Auth reports the e-mail taken for a user not signing in with it")
            return self._email_taken(item)
        except Rejected as exc:
            self.journal.clear(sid)
            log.warning("Stack Auth refused Supabase user %s: %s", sid, exc.message)
            return _failed(item, *self._refusal(item, exc))
        notes = ["created after a lost answer was found in Stack Auth"] if outcome.recovered else []
        return self._finish(item, outcome.user["id"], notes, created=not outcome.recovered)

    def _finish(self, item: PlannedUser, stack_id: str, notes: list[str], created: bool = False) -> UserOutcome:
        """Its TOTP secret set (an update: a create alone leaves MFA off), then the mapping entry."""
        refused = self._carry_totp(item, stack_id)
        outcome = self._record(item, stack_id, "migrated", None, notes, created=created)
        if refused is not None and outcome.status != "failed":
            outcome.status, outcome.reason, outcome.mfa = "failed", refused, None
            outcome.fix = "correct the cause, then run the same command again (the TOTP secret is set again)"
        return outcome

    def _carry_totp(self, item: PlannedUser, stack_id: str | None) -> str | None:
        """Set the user's TOTP secret in Stack Auth (the same value again is harmless); why not, if refused."""
        if item.totp_secret_base64 is None or stack_id is None:
            return None
        try:
            self.client.update_user(stack_id, {"totp_secret_base64": item.totp_secret_base64})
        except Rejected as exc:
            return f"created, but Stack Auth refused its TOTP secret: {exc.message}"
        return None

    def _refusal(self, item: PlannedUser, exc: Rejected) -> tuple[str, str]:
        """(why Stack Auth refused this user, what to do): the server's message and the fix."""
        if exc.code == "SCHEMA_ERROR":
            return (f"Stack Auth refused this user's data: {exc.message}",
                    "correct the user in Supabase and export again, or report this to supamove; " + RETRY_FIX)
        if (missing := PROVIDER_NOT_FOUND.search(exc.message)) is not None:
            return (f"Stack Auth: {exc.message} (the provider is not enabled in the project)",
                    f"enable the {missing.group(1)} OAuth provider in the Stack Auth dashboard (Auth Methods), "
                    "then run the same command again")
        if "password hash" in exc.message:
            return (f"Stack Auth refused its password hash: {exc.message}",
                    "report the hash's format to supamove; `--no-password-hashes` creates the users left "
                    "without their hash (they get a password reset)")
        if exc.status >= 500:
            return self._server_error(item, exc)
        return f"Stack Auth refused the user: {exc.message}", RETRY_FIX

    def _server_error(self, item: PlannedUser, exc: Rejected) -> tuple[str, str]:
        """A 5xx that persists with no user created: most often an OAuth account another user already has."""
        ours = {(p["id"], p["account_id"]) for p in (item.body or {}).get("oauth_providers", [])}
        if ours:
            for user in self.client.iter_users():
                for provider in user.get("oauth_providers") or []:
                    if (provider.get("id"), provider.get("account_id")) in ours:
                        return (f"Stack Auth answered {exc.status}: its {provider['id']} account "
                                f"{provider['account_id']} already signs in Stack Auth user {user['id']}",
                                f"remove that {provider['id']} account from Stack Auth user {user['id']} (or delete "
                                "that user if it is a leftover), then run the same command again")
        return (f"Stack Auth answered {exc.status} to its create and holds no such user: {exc.message}",
                "look the request id up in Stack Auth's server log; " + RETRY_FIX)

    def _email_taken(self, item: PlannedUser) -> UserOutcome:
        sid = item.user.id
        existing = self.client.find_by_email(item.email or "")
        ours = [u for u in existing if supabase_id_of(u) == sid]
        if ours:
            return self._finish(item, ours[0]["id"], ["found in Stack Auth after a lost answer"])
        auth_users = [u for u in existing if u.get("primary_email_auth_enabled")] or existing
        if not auth_users:
            self.journal.clear(sid)
            return _failed(item, "Stack Auth reports the e-mail taken but lists no such user")
        target = auth_users[0]
        other = supabase_id_of(target) or self.mapping.owner_of(target["id"])
        if other and other != sid:  # linking would map two Supabase users to one Stack Auth user
            self.journal.clear(sid)
            return _failed(item, f"the Stack Auth user signing in with this e-mail ({target['id']}) "
                                 f"already stands for Supabase user {other}")
        item.password, item.reset_reason = "none", None  # their Stack Auth account keeps its own sign-in
        if item.totp_secret_base64 is not None:  # nor is its second factor changed
            item.mfa_not_carried.append({"factorId": item.totp_factor_id, "type": "totp", "reason": LINKED_TOTP})
            item.notes.append(f"second factor not carried: {LINKED_TOTP}")
            item.totp_secret_base64 = None
        return self._record(item, target["id"], "linked", "existing-stack-auth-user",
                            ["a Stack Auth user with this e-mail already existed; linked, not created"])

    def _record(self, item: PlannedUser, stack_id: str, status: str, reason: str | None, notes: list[str],
                created: bool = False) -> UserOutcome:
        with self.mapping.lock:  # the mapping entry and the journal line together, before any flush
            owner = self.mapping.owner_of(stack_id)
            if owner is not None and owner != item.user.id:  # never one Stack Auth id for two Supabase users
                self.journal.clear(item.user.id)
                return _failed(item, f"Stack Auth user {stack_id} is already mapped to Supabase user {owner}", notes=notes)
            self.mapping.add(item.user.id, stack_id, item.email)
            self.journal.done(item.user.id, stack_id)
        return UserOutcome(item.user.id, status, item.reason if status == "migrated" else reason, stack_id,
                           item.email, item.password, item.reset_reason, item.notes + notes, created_now=created,
                           mfa="totp" if item.totp_secret_base64 else None, mfa_not_carried=item.mfa_not_carried)

    def _lookup(self, item: PlannedUser) -> dict[str, Any] | None:
        """This Supabase user's Stack Auth user: by its sign-in e-mail, or (without one: no e-mail, deleted,
        anonymous, shared e-mail) by a scan of every user's server_metadata.supabase_user_id."""
        candidates = self.client.find_by_email(item.email) if item.email_auth and item.email \
            else self.client.iter_users()
        return next((u for u in candidates if supabase_id_of(u) == item.user.id), None)

    def _scan_index(self) -> dict[str, dict[str, Any]]:
        log.info("an earlier run was interrupted with creates in flight; reading Stack Auth's users to find them")
        return {sid: u for u in self.client.iter_users() if (sid := supabase_id_of(u))}

    def _done(self, item: PlannedUser, previous: dict[str, Any] | None) -> UserOutcome:
        """A user of an earlier run; its TOTP secret set now if that run did not get to it."""
        outcome = self._earlier(item, previous)
        if item.totp_secret_base64 is None or outcome.status != "migrated" or outcome.mfa == "totp":
            return outcome
        refused = self._carry_totp(item, outcome.stack_auth_user_id)
        if refused is not None:
            outcome.status, outcome.reason = "failed", refused
            outcome.fix = "correct the cause, then run the same command again (the TOTP secret is set again)"
        else:
            outcome.mfa = "totp"
        return outcome

    def _earlier(self, item: PlannedUser, previous: dict[str, Any] | None) -> UserOutcome:
        stack_id = self.mapping.get(item.user.id)
        if previous and previous.get("stackAuthUserId") == stack_id and previous.get("status") in ("migrated", "linked"):
            return UserOutcome(item.user.id, previous["status"], previous.get("reason"), stack_id, item.email,
                               previous.get("password", "none"), previous.get("resetReason"),
                               list(previous.get("notes") or []), mfa=previous.get("mfa"),
                               mfa_not_carried=list(previous.get("mfaNotCarried") or []))
        return UserOutcome(item.user.id, "migrated", item.reason, stack_id, item.email, item.password,
                           item.reset_reason, item.notes + ["in user-mapping.json from an earlier run"],
                           mfa_not_carried=item.mfa_not_carried)


LINKED_TOTP = "linked to a Stack Auth user that already existed: its second factors are left as they are"


def _failed(item: PlannedUser, reason: str, fix: str = RETRY_FIX, notes: list[str] | None = None) -> UserOutcome:
    """Not created (or not finished): the command ends non-zero, and a rerun tries this user again."""
    return UserOutcome(item.user.id, "failed", reason, None, item.email, notes=item.notes + (notes or []), fix=fix)


def dry_run_outcomes(client: StackAuthClient, plan: list[PlannedUser]) -> list[UserOutcome]:
    """What a real run would do; reads Stack Auth's users (never creates) to predict the links."""
    existing: dict[str, str] = {}
    for user in client.iter_users():
        email = normalize_email(user.get("primary_email"))
        if email and user.get("primary_email_auth_enabled"):
            existing.setdefault(email, user["id"])
    outcomes = []
    for item in plan:
        sid = item.user.id
        mfa = "totp" if item.totp_secret_base64 else None
        if item.action == "done":
            outcomes.append(UserOutcome(sid, "done", "already-migrated", None, item.email, item.password,
                                        item.reset_reason, item.notes, mfa=mfa, mfa_not_carried=item.mfa_not_carried))
        elif item.email_auth and item.email in existing:
            factors = item.mfa_not_carried + ([{"factorId": item.totp_factor_id, "type": "totp", "reason": LINKED_TOTP}]
                                              if mfa else [])
            outcomes.append(UserOutcome(sid, "link", "existing-stack-auth-user", existing[item.email], item.email,
                                        notes=item.notes, mfa_not_carried=factors))
        else:
            outcomes.append(UserOutcome(sid, "create", item.reason, None, item.email, item.password,
                                        item.reset_reason, item.notes, mfa=mfa, mfa_not_carried=item.mfa_not_carried))
    return outcomes


def _previous_report(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = read_json(path, "migrate-users", missing_ok=True)
        return {} if data is None else {u["supabaseUserId"]: u for u in json_list(data, "users", path, "")}
    except (DataFileError, KeyError, TypeError):
        log.warning("%s is damaged; rebuilding it from the export and the mapping", path)
        return {}


def write_reports(datadir: DataDir, result: MigrationResult) -> None:
    """user-migration-report.json (every user) and password-reset-required.json, both 0600."""
    now = iso(datetime.now(UTC))
    counts = result.counts
    summary = {"total": len(result.outcomes), "migrated": counts["migrated"], "linked": counts["linked"],
               "skipped": counts["skipped"], "failed": counts["failed"], "createdThisRun": result.created,
               "passwordResetRequired": len(result.reset_required), "totpCarried": result.totp_carried,
               "mfaNotCarried": len(result.mfa_not_carried)}
    write_json(datadir.users_report, {"generatedAt": now, "summary": summary,
                                      "users": [o.to_json() for o in result.outcomes]})
    write_json(datadir.password_resets, {"generatedAt": now, "users": [
        {"supabaseUserId": o.supabase_user_id, "stackAuthUserId": o.stack_auth_user_id, "email": o.email,
         "reason": o.reset_reason} for o in result.reset_required]})
    write_json(datadir.mfa_not_carried, {"generatedAt": now, "users": [
        {"supabaseUserId": o.supabase_user_id, "stackAuthUserId": o.stack_auth_user_id, "email": o.email,
         "factors": o.mfa_not_carried} for o in result.mfa_not_carried]})
    result.report_path = datadir.users_report
