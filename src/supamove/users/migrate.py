"""Step 3: every Supabase Auth user into Stack Auth, once, with the mapping kept as we go.

The decisions are made in `supamove.users.plan`; this module carries them out and reports.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import chain, islice
from pathlib import Path
from typing import Any, NoReturn

import orjson

from supamove.clock import iso
from supamove.errors import DataFileError, StackAuthError
from supamove.files import json_list, read_json_items, write_json, write_json_items
from supamove.log import get_logger
from supamove.metadata import Metadata
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress
from supamove.usermap import UserMapping
from supamove.users.client import EmailTaken, Rejected, StackAuthClient, supabase_id_of
from supamove.users.journal import PendingJournal
from supamove.users.plan import (
    OAUTH_PROVIDERS,
    TOTP_CARRIED,
    PlannedUser,
    identity_left_behind,
    plan_users,
)
from supamove.users.source import load_auth_export, normalize_email
from supamove.users.sync import (
    EMAIL_REMOVED,
    EMAIL_REMOVING,
    IDENTITY_ADDED,
    IDENTITY_KEPT,
    IDENTITY_REMOVED,
    NOT_SENT,
    SyncState,
    compact,
    desired,
    differing,
    fingerprint,
    fingerprints,
    gone_values,
    new_identities,
    observed,
    replaced_email,
    revision_of,
    stack_differs,
    update_body,
    without_pairs,
)
from supamove.words import agree, counted

log = get_logger("users")
LABEL = "users"
RETRY_FIX = "correct the cause, then run the same command again (only the failed users are retried)"
PROVIDER_NOT_FOUND = re.compile(r"OAuth provider (\S+) not found")
GONE_NOTE = "no longer in Supabase's auth.users: restricted in Stack Auth"
CONFLICT = "changed in Stack Auth since supamove wrote it ({}): not overwritten"
QUEUED_PER_WORKER = 200  # tasks submitted ahead of the pool's workers: enough for half a second's work
NO_STATE = "no sync state from an earlier run"
CONFLICT_FIX = "check the user in the Stack Auth dashboard; `--overwrite-changed` writes the Supabase values over it"

# --- the run ---------------------------------------------------------------------------------


@dataclass
class MigrateOptions:
    concurrency: int = 8
    use_password_hashes: bool = True
    dry_run: bool = False
    overwrite_changed: bool = False  # update users changed in Stack Auth since supamove wrote them


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
    found_earlier: bool = False  # created by an interrupted run, found in Stack Auth by this one
    fix: str | None = None  # for a failed user: what to do before running the command again
    mfa: str | None = None  # "totp": its verified TOTP factor is set in Stack Auth (a dry run: will be)
    mfa_not_carried: list[dict[str, Any]] = field(default_factory=list)  # {factorId, type, reason}
    # A user of an earlier run: updated, unchanged or conflict (a dry run: update, unchanged, conflict).
    sync: str | None = None
    changed: list[str] = field(default_factory=list)  # the fields changed in Supabase since the last run
    changed_in_stack_auth: list[str] = field(default_factory=list)  # ... and in Stack Auth since supamove wrote

    @property
    def in_stack_auth(self) -> bool:
        """Created or planned; or failed after its Stack Auth user was made (its update or its TOTP secret refused):
        it is there still, as the run before left it."""
        return self.status in ("migrated", "create", "done") or (self.status == "failed"
                                                                 and self.stack_auth_user_id is not None)

    def to_json(self) -> dict[str, Any]:
        return {"supabaseUserId": self.supabase_user_id, "status": self.status, "reason": self.reason,
                "fix": self.fix, "stackAuthUserId": self.stack_auth_user_id, "email": self.email,
                "password": self.password, "resetReason": self.reset_reason, "mfa": self.mfa,
                "mfaNotCarried": self.mfa_not_carried, "sync": self.sync, "changed": self.changed,
                "changedInStackAuth": self.changed_in_stack_auth, "notes": self.notes}


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
    def found_earlier(self) -> int:
        """Users an interrupted run created and this one found: neither created now nor of an earlier run's."""
        return sum(o.found_earlier for o in self.outcomes)

    @property
    def reset_required(self) -> list[UserOutcome]:
        """Users in Stack Auth (or to be) without a password they can use; a user of an earlier run stays
        listed when this run's update of it failed."""
        return [o for o in self.outcomes if o.password == "reset-required" and o.in_stack_auth]

    @property
    def failed(self) -> list[UserOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def mfa_not_carried(self) -> list[UserOutcome]:
        """Users created (or to be) whose second factors cannot come along: listed in mfa-not-carried.json."""
        return [o for o in self.outcomes if o.mfa_not_carried and o.in_stack_auth]

    @property
    def identities_not_carried(self) -> list[tuple[UserOutcome, str]]:
        """(user, note) for each OAuth identity a user in Stack Auth (or to be) signs in with no longer."""
        return [(o, note) for o in self.outcomes if o.in_stack_auth for note in o.notes if identity_left_behind(note)]

    @property
    def totp_carried(self) -> int:
        """Users whose TOTP secret is in Stack Auth; in a dry run, those it would set (not those done earlier)."""
        return sum(o.mfa == "totp" and o.status != "done" for o in self.outcomes)

    @property
    def totp_done_earlier(self) -> int:
        """In a dry run: users of an earlier run whose TOTP secret that run set."""
        return sum(o.mfa == "totp" and o.status == "done" for o in self.outcomes)

    @property
    def users_per_second(self) -> float:
        return self.created / self.seconds if self.seconds else 0.0

    def synced(self, kind: str) -> list[UserOutcome]:
        """Users of an earlier run by what this run did: updated (update), unchanged, conflict."""
        return [o for o in self.outcomes if o.sync == kind and o.status != "failed"]

    @property
    def updated(self) -> int:
        return len(self.synced("update" if self.dry_run else "updated"))

    @property
    def conflicts(self) -> list[UserOutcome]:
        return self.synced("conflict")

    def failure(self) -> StackAuthError | None:
        """The error a run with failed users or conflicts ends with (after its summary), or None."""
        where = "the dry run's list above" if self.dry_run else str(self.report_path)
        if self.failed:
            return StackAuthError(f"{counted(len(self.failed), 'user')} failed (see {where})",
                                  fix="correct the cause shown for them, then run the same command again")
        unknown = [o for o in self.conflicts if any(n.startswith(NO_STATE) for n in o.notes)]
        if unknown and len(unknown) == len(self.conflicts):  # no record of what supamove wrote: either side
            holds, was = agree(len(unknown), "holds", "hold"), agree(len(unknown), "was", "were")
            return StackAuthError(f"{counted(len(unknown), 'user')} {holds} other values in Stack Auth than in Supabase, "
                                  f"with no record of which side changed, and {was} not updated (see {where})",
                                  fix="check them in the Stack Auth dashboard; `supamove migrate-users "
                                      "--overwrite-changed` writes the Supabase values over them")
        if self.conflicts:
            count = len(self.conflicts)
            return StackAuthError(f"{counted(count, 'user')} changed in Stack Auth since supamove wrote "
                                  f"{agree(count, 'it was', 'them were')} not updated (see {where})",
                                  fix="check them in the Stack Auth dashboard; `supamove migrate-users "
                                      "--overwrite-changed` writes the Supabase values over them")
        return None

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
    mapping.check_project(client.project_id)
    journal = PendingJournal(datadir.pending_creates)
    pending, finished = journal.load()
    by_id = {u.id: u for u in users}
    for sid, stack_id in finished.items():  # creates the last run journaled but never saved to the mapping
        if mapping.get(sid) is None and mapping.owner_of(stack_id) is None:
            mapping.add(sid, stack_id, by_id[sid].normalized_email if sid in by_id else None)
    plan = plan_users(users, set(mapping.entries), options.use_password_hashes)
    state = SyncState.load(datadir.user_sync_state)
    for sid, done in journal.finished.items():  # and their baseline: without it, a change is a conflict
        if state.get(sid) is None and isinstance(done.get("syncState"), dict):
            state.restore(sid, done["syncState"])
    gone = [(sid, e["stackAuthUserId"], e.get("email")) for sid, e in mapping.entries.items()
            if sid not in by_id and (record := state.get(sid)) is not None and not record.get("linked")]
    listing = StackUsers.read(client) if mapping.entries or options.dry_run else None
    plan, lost, pending = _checked_in_stack_auth(client, listing, mapping, state, plan, pending)
    updates = PendingJournal(datadir.pending_updates)
    updates.load()  # an interrupted run's updates: a dry run reads them as the real run does
    if options.dry_run:
        assert listing is not None
        outcomes = dry_run_outcomes(client, listing, plan, state, options, updates.intents, pending,
                                    held_emails(plan, mapping, state, gone))
        return MigrationResult(outcomes + dry_run_gone(client, gone, state, options) + lost, True, time.monotonic() - started)
    run = _Run(client, mapping, journal, pending, options, progress or NullProgress(), state, updates)
    try:
        outcomes = run.execute(plan, _previous_report(datadir.users_report), gone) + lost
    finally:
        run.save()
        journal.close()
        updates.close()
    result = MigrationResult(outcomes, False, time.monotonic() - started, client.retries)
    write_reports(datadir, result)
    return result


FOUND_NOTE = "found in Stack Auth by its Supabase id (an earlier run created it)"


@dataclass
class StackUsers:
    """Stack Auth's user list as a run needs it, read a page at a time (never every user whole): each user's id
    with whether its e-mail is verified, the user signing in with each e-mail, the user carrying each Supabase id."""

    verified: dict[str, bool] = field(default_factory=dict)  # Stack Auth id (lower case) -> e-mail verified
    signing_in: dict[str, tuple[str, bool]] = field(default_factory=dict)  # e-mail -> (its user, verified)
    carrying: dict[str, str] = field(default_factory=dict)  # Supabase id -> the first Stack Auth user carrying it
    # (OAuth provider, account id) -> the Stack Auth user signing in with it (its id and Supabase id, if any)
    accounts: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)

    @classmethod
    def read(cls, client: StackAuthClient) -> StackUsers:
        users = cls()
        for user in client.iter_users():
            verified = bool(user.get("primary_email_verified"))
            users.verified[str(user["id"]).lower()] = verified
            email = normalize_email(user.get("primary_email"))
            if email and user.get("primary_email_auth_enabled"):
                users.signing_in.setdefault(email, (user["id"], verified))
            if (held := supabase_id_of(user)) is not None:
                users.carrying.setdefault(held, user["id"])
            for provider in user.get("oauth_providers") or []:
                users.accounts.setdefault((str(provider.get("id")), str(provider.get("account_id"))),
                                          (user["id"], held))
        return users


def _checked_in_stack_auth(client: StackAuthClient, listing: StackUsers | None, mapping: UserMapping,
                           state: SyncState, plan: list[PlannedUser], pending: dict[str, str | None]
                           ) -> tuple[list[PlannedUser], list[UserOutcome], dict[str, str | None]]:
    """Stack Auth's users checked before anything is sent (the first list request checks the credentials): the
    plan less the mapped users deleted there and those linked to a user that has not verified its e-mail, their
    failures, and the creates to look up first (a new data directory against a Stack Auth holding users: an
    earlier one's may be among them). The mapping is named this project's once its users are found here.
    `listing`: read when the mapping has users (or for a dry run)."""
    present = listing.verified if listing is not None else {}
    missing = {sid: e["stackAuthUserId"] for sid, e in mapping.entries.items()
               if e["stackAuthUserId"].lower() not in present}
    if mapping.none_in(present):
        _none_here(client, mapping)
    mapping.project_id = client.project_id
    anyone = bool(present) if listing is not None else next(client.iter_users(page_size=1), None) is not None
    if not mapping.entries and anyone:
        pending = {**{i.user.id: i.email for i in plan if i.action == "create"}, **pending}
    lost = [_deleted_in_stack_auth(item, missing[item.user.id]) for item in plan if item.user.id in missing]
    lost += [_linked_unverified(item, mapping) for item in plan if item.user.id not in missing
             and (state.get(item.user.id) or {}).get("linked")
             and not present[mapping.entries[item.user.id]["stackAuthUserId"].lower()]]
    failed = {o.supabase_user_id for o in lost}
    return [item for item in plan if item.user.id not in failed], lost, pending


def _none_here(client: StackAuthClient, mapping: UserMapping) -> NoReturn:
    """Not one of the mapping's users is in this Stack Auth: another project, another Stack Auth (a staging one
    holding the same project), or every user deleted there. Stopped before anything is sent: each would
    otherwise fail as deleted, and the users not yet mapped be created in a Stack Auth that may be the wrong one."""
    count = len(mapping.entries)
    if mapping.project_id is None:  # a mapping from before the project was recorded
        raise StackAuthError(
            f"none of the {count:,} Stack Auth users {mapping.path} names is in project {client.project_id}: "
            "the mapping was written for another project", fix="point STACK_AUTH_PROJECT_ID (and its key) at the "
            "project the users were created in, or use another --data-dir to move them into this one")
    raise StackAuthError(
        f"none of the {count:,} Stack Auth users {mapping.path} names is in the Stack Auth at {client.api_url} "
        f"(project {client.project_id}): it is not the Stack Auth they were created in, or they were all deleted "
        "there", fix="point STACK_AUTH_API_URL at the Stack Auth the users were created in; if they were deleted "
        "there, run `supamove map-users --forget-missing` (it drops them from the mapping), then the same "
        "command again, which creates them anew (then `supamove import --truncate-first`, if the import ran already)")


def _linked_unverified(item: PlannedUser, mapping: UserMapping) -> UserOutcome:
    """A link an earlier version made to a Stack Auth user that has not verified the e-mail: undone, so that
    no import gives this user's rows to what may be someone else's account."""
    stack_id = str(mapping.get(item.user.id))
    mapping.forget(item.user.id)
    return _failed(item, UNVERIFIED_HOLDER.format(stack_id), UNVERIFIED_FIX)


DELETED_FIX = ("run `supamove map-users` (it drops that entry), then the same command again, which creates the "
               "user anew with a new id (then `supamove import --truncate-first`, if the import ran already)")


def _deleted_in_stack_auth(item: PlannedUser, stack_id: str) -> UserOutcome:
    return _failed(item, f"Stack Auth user {stack_id} no longer exists (deleted in Stack Auth)", DELETED_FIX)


def frees_email(item: PlannedUser, mapping: UserMapping, state: SyncState) -> bool:
    """Whether this user of an earlier run no longer signs in with the e-mail it was mapped with (deleted in
    Supabase, or another address now): its update frees that address in Stack Auth. A linked user is never
    written, so it frees nothing."""
    if (state.get(item.user.id) or {}).get("linked"):
        return False
    return not item.email_auth or (mapping.entries.get(item.user.id) or {}).get("email") != item.email


def held_emails(plan: list[PlannedUser], mapping: UserMapping, state: SyncState,
                gone: list[tuple[str, str, str | None]]) -> dict[str, str | None]:
    """Stack Auth id (lower case) -> the Supabase user it stands for, None when this run frees its e-mail before
    any create (as _Run.execute does): what a dry run predicts the creates' links from."""
    held: dict[str, str | None] = {e["stackAuthUserId"].lower(): sid for sid, e in mapping.entries.items()}
    for item in plan:
        if item.action == "done" and frees_email(item, mapping, state):
            held[mapping.entries[item.user.id]["stackAuthUserId"].lower()] = None
    for _, stack_id, _ in gone:
        held[stack_id.lower()] = None
    return held


class _Run:
    """One migrate-users run: the creates in a thread pool, recorded as they finish."""

    def __init__(self, client: StackAuthClient, mapping: UserMapping, journal: PendingJournal,
                 pending: dict[str, str | None], options: MigrateOptions, progress: Progress,
                 state: SyncState, updates: PendingJournal) -> None:
        self.client, self.mapping, self.journal = client, mapping, journal
        self.pending, self.options, self.progress = pending, options, progress
        self.state, self.updates = state, updates
        self.saved_updates: set[str] = set()  # updates recorded in the sync state, not yet on disk
        self.index: dict[str, list[dict[str, Any]]] | None = None  # Supabase id -> the Stack Auth users claiming it

    def execute(self, plan: list[PlannedUser], previous: dict[str, str],
                gone: list[tuple[str, str, str | None]]) -> list[UserOutcome]:
        """Mapped users compared (and updated in the pool when changed), the others created. An e-mail address a
        user of an earlier run no longer signs in with (deleted in Supabase, or moved to another address) may be
        another user's now: those updates run first, or Stack Auth would refuse the other's as the address taken."""
        outcomes: dict[str, UserOutcome] = {}
        self.progress.start(LABEL, len(plan) + len(gone))
        freeing: list[Callable[[], UserOutcome]] = []
        tasks: list[Callable[[], UserOutcome]] = []
        for item in plan:
            if item.action == "done":
                earlier = previous.get(item.user.id)
                found = self._compare(item, None if earlier is None else orjson.loads(earlier))
                if isinstance(found, UserOutcome):
                    outcomes[item.user.id] = found
                else:
                    (freeing if frees_email(item, self.mapping, self.state) else tasks).append(found)
        self.progress.advance(LABEL, len(outcomes))
        creates = [item for item in plan if item.action == "create"]
        if any(item.user.id in self.pending for item in creates):
            self.index = self._scan_index()
        freeing += self._restricts(gone, outcomes)
        for outcome in chain(self._run_all(freeing),
                             self._run_all(chain(tasks, (partial(self._create, item) for item in creates)))):
            outcomes[outcome.supabase_user_id] = outcome
        self.progress.finish(LABEL)
        return [outcomes[item.user.id] for item in plan] + [outcomes[sid] for sid, _, _ in gone]

    def _restricts(self, gone: list[tuple[str, str, str | None]],
                   outcomes: dict[str, UserOutcome]) -> list[Callable[[], UserOutcome]]:
        """The restriction of each mapped user no longer in auth.users; those an earlier run restricted put in
        `outcomes` as they are."""
        restricts: list[Callable[[], UserOutcome]] = []
        for sid, stack_id, email in gone:
            if (self.state.get(sid) or {}).get("gone"):  # restricted by an earlier run
                outcomes[sid] = UserOutcome(sid, "migrated", "deleted", stack_id, email, sync="unchanged",
                                            notes=[GONE_NOTE])
            else:
                restricts.append(partial(self._restrict_gone, sid, stack_id, email))
        return restricts

    def _run_all(self, tasks: Iterable[Callable[[], UserOutcome]]) -> Iterator[UserOutcome]:
        """The tasks' outcomes as they finish; at most QUEUED_PER_WORKER tasks a worker are queued (memory stays flat)."""
        workers = max(1, self.options.concurrency)
        queued, todo = workers * QUEUED_PER_WORKER, iter(tasks)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="users") as pool:
            futures: set[Future[UserOutcome]] = {pool.submit(task) for task in islice(todo, queued)}
            try:
                while futures:
                    # Woken twice a second, not at each task: a wake costs the workers the interpreter's lock.
                    done, futures = wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION)
                    futures |= {pool.submit(task) for task in islice(todo, queued - len(futures))}
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
        if self.mapping.due() or self.state.due():
            self.save()

    def save(self) -> None:
        """The mapping and the sync state, then the journals without what those files now hold."""
        with self.mapping.lock:
            self.state.save()  # before the mapping: a kill between the two leaves the journal to rebuild both
            self.mapping.save()
            self.journal.compact()
            self.updates.settle(self.saved_updates)  # an update's intent stays until its state is on disk
            self.saved_updates.clear()
            self.updates.compact()

    def _create(self, item: PlannedUser) -> UserOutcome:
        sid = item.user.id
        if sid in self.pending:
            claims = self.index.get(sid, []) if self.index is not None else self._claims(item)
            if len(claims) > 1:
                return _claimed_twice(item, claims)
            found = claims[0] if claims else None
            if found is not None:
                earlier = self._finish(item, found, [FOUND_NOTE])
                earlier.found_earlier = earlier.stack_auth_user_id is not None
                return self._since_created(item, earlier, found)
        carried = _carried(item)
        self.journal.intent(sid, item.email, sent=carried[1])  # what this create carries
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
        except ClaimedTwice as exc:  # its intent stays: the rerun looks again
            return _claimed_twice(item, exc.claims)
        notes = ["created after a lost answer was found in Stack Auth"] if outcome.recovered else []
        # By this run, its answer lost or not; its sync record reuses the intent's fingerprints.
        return self._finish(item, outcome.user, notes, created=True, carried=carried)

    def _since_created(self, item: PlannedUser, outcome: UserOutcome, found: dict[str, Any]) -> UserOutcome:
        """A user an interrupted run created from an earlier export: what changed in Supabase since, sent as an
        update (the journal's intent holds what the create carried; an older journal's, what Stack Auth shows)."""
        stack_id = outcome.stack_auth_user_id
        if outcome.status != "migrated" or stack_id is None:
            return outcome
        values = desired(item)
        sent = (self.journal.intents.get(item.user.id) or {}).get("sent")
        changed = differing(sent, fingerprints(values)) if isinstance(sent, dict) else stack_differs(values, found)
        if not changed:
            return outcome
        return self._patch(item, {"stackAuthUserId": stack_id}, values, changed, found, [FOUND_NOTE])

    def _finish(self, item: PlannedUser, user: dict[str, Any], notes: list[str], created: bool = False,
                carried: Carried | None = None) -> UserOutcome:
        """Its TOTP secret set (an update: a create alone leaves MFA off), then the mapping entry."""
        refused, updated = self._carry_totp(item, user["id"])
        outcome = self._record(item, user["id"], "migrated", None, notes, created=created, seen=updated or user,
                               totp_set=refused is None, carried=carried)
        if refused is not None and outcome.status != "failed":
            outcome.status, outcome.reason, outcome.mfa = "failed", refused, None
            outcome.notes = [n for n in outcome.notes if n != TOTP_CARRIED]
            outcome.fix = "correct the cause, then run the same command again (the TOTP secret is set again)"
        return outcome

    def _carry_totp(self, item: PlannedUser, stack_id: str | None) -> tuple[str | None, dict[str, Any] | None]:
        """Set the user's TOTP secret in Stack Auth (the same value again is harmless): (why not, if refused;
        the user as Stack Auth answered)."""
        if item.totp_secret_base64 is None or stack_id is None:
            return None, None
        try:
            return None, self.client.update_user(stack_id, {"totp_secret_base64": item.totp_secret_base64})
        except Rejected as exc:
            return f"created, but Stack Auth refused its TOTP secret: {exc.message}", None

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
                                f"{provider['account_id']} already signs in {_holder(user)}",
                                _account_fix(user, provider["id"]))
        return (f"Stack Auth answered {exc.status} to its create and holds no such user: {exc.message}",
                "look the request id up in Stack Auth's server log; " + RETRY_FIX)

    def _email_taken(self, item: PlannedUser) -> UserOutcome:
        sid = item.user.id
        existing = self.client.find_by_email(item.email or "")
        ours = [u for u in existing if supabase_id_of(u) == sid]
        if ours:
            return self._finish(item, ours[0], ["found in Stack Auth after a lost answer"])
        auth_users = [u for u in existing if u.get("primary_email_auth_enabled")] or existing
        if not auth_users:  # no user's primary e-mail: another contact channel of some user signs in with it
            self.journal.clear(sid)
            return _failed(item, TAKEN_BY_CHANNEL, TAKEN_BY_CHANNEL_FIX)
        target = auth_users[0]
        other = supabase_id_of(target) or self.mapping.owner_of(target["id"])
        if other and other != sid:  # linking would map two Supabase users to one Stack Auth user
            self.journal.clear(sid)
            return _failed(item, TAKEN_BY.format(target["id"], other))
        if not target.get("primary_email_verified"):  # anyone may have signed up with it: maybe not this person
            self.journal.clear(sid)
            return _failed(item, UNVERIFIED_HOLDER.format(target["id"]), UNVERIFIED_FIX)
        item.password, item.reset_reason = "none", None  # their Stack Auth account keeps its own sign-in
        if item.totp_secret_base64 is not None:  # nor is its second factor changed
            item.mfa_not_carried.append({"factorId": item.totp_factor_id, "type": "totp", "reason": LINKED_TOTP})
            item.notes.append(f"second factor not carried: {LINKED_TOTP}")
            item.totp_secret_base64 = None
        return self._record(item, target["id"], "linked", "existing-stack-auth-user",
                            ["a Stack Auth user with this e-mail already existed; linked, not created"])

    def _record(self, item: PlannedUser, stack_id: str, status: str, reason: str | None, notes: list[str],
                created: bool = False, seen: dict[str, Any] | None = None, totp_set: bool = True,
                carried: Carried | None = None) -> UserOutcome:
        """The mapping entry, the sync record and the journal's done line. `carried`: the values and fingerprints
        the create's journal intent was written with (the item unchanged since), not computed again."""
        values, sent = carried or _carried(item)
        if not totp_set:  # its secret refused: recorded as not sent, for a rerun to send again
            values, sent = values | {"totp_secret_base64": None}, sent | {"totp_secret_base64": fingerprint(None)}
        answered = fingerprints(observed(seen)) if seen else None  # outside the lock: the other workers wait on it
        with self.mapping.lock:  # the mapping entry, its sync state and the journal line together
            owner = self.mapping.owner_of(stack_id)
            if owner is not None and owner != item.user.id:  # never one Stack Auth id for two Supabase users
                self.journal.clear(item.user.id)
                return _failed(item, f"Stack Auth user {stack_id} is already mapped to Supabase user {owner}", notes=notes)
            self.mapping.add(item.user.id, stack_id, item.email)
            record = self.state.record(item.user.id, stack_id, sent, answered, linked=status == "linked",
                                       oauth=values["oauth_providers"])
            self.journal.done(item.user.id, stack_id, syncState=record)  # a kill before the next save keeps it
        return UserOutcome(item.user.id, status, item.reason if status == "migrated" else reason, stack_id,
                           item.email, item.password, item.reset_reason, item.notes + notes, created_now=created,
                           mfa="totp" if item.totp_secret_base64 else None, mfa_not_carried=item.mfa_not_carried)

    def _lookup(self, item: PlannedUser) -> dict[str, Any] | None:
        """This Supabase user's Stack Auth user, if any; ClaimedTwice when more than one claims it."""
        claims = self._claims(item)
        if len(claims) > 1:
            raise ClaimedTwice(claims)
        return claims[0] if claims else None

    def _claims(self, item: PlannedUser) -> list[dict[str, Any]]:
        """The Stack Auth users claiming this Supabase user: by its sign-in e-mail, or (without one: no e-mail,
        deleted, anonymous, shared e-mail) by a scan of every user's server_metadata.supabase_user_id."""
        candidates = self.client.find_by_email(item.email) if item.email_auth and item.email \
            else self.client.iter_users()
        return [u for u in candidates if supabase_id_of(u) == item.user.id]

    def _scan_index(self) -> dict[str, list[dict[str, Any]]]:
        log.info("reading Stack Auth's users to find those an earlier run created (a run interrupted with creates in "
                 "flight, or one with another data directory)")
        index: dict[str, list[dict[str, Any]]] = {}
        for user in self.client.iter_users():
            if sid := supabase_id_of(user):
                index.setdefault(sid, []).append(user)
        return index

    # --- a rerun: the users of earlier runs brought up to date -------------------------------

    def _compare(self, item: PlannedUser, previous: dict[str, Any] | None) -> UserOutcome | Callable[[], UserOutcome]:
        """Unchanged users decided here, without a request; a changed one's update, to run in the pool."""
        sid = item.user.id
        record = self.state.get(sid)
        if record is None or record.get("stackAuthUserId") != self.mapping.get(sid):  # mapped by map-users,
            return partial(self._baseline, item, previous)  # or by a supamove without sync state
        outcome = self._earlier(item, previous)
        if record.get("linked"):  # an existing Stack Auth user keeps its own sign-in: never written
            return outcome
        values = desired(item)
        changed = differing(record["sent"], fingerprints(values))
        adds = new_identities(values, record)
        if sid in self.updates.intents or [name for name in changed if name not in NOT_SENT] \
                or ("oauth_providers" in changed and adds != []):
            return partial(self._update, item, record, changed)
        outcome.sync, outcome.changed = "unchanged", changed
        if changed:  # only identities removed in Supabase: noted once, nothing sent
            outcome.notes += _removed_identities(item, record.get("oauthProviders"), values)
            self._save_update(sid, record["stackAuthUserId"], fingerprints(values), None,
                              int(record.get("revision") or 0), seen=record.get("seen"),
                              oauth=values["oauth_providers"])
        return outcome

    def _baseline(self, item: PlannedUser, previous: dict[str, Any] | None) -> UserOutcome:
        """A mapped user without sync state: its Stack Auth user read and compared with what the export would
        send. The same: recorded as the baseline of later runs. Otherwise (a change in Supabase since its
        Stack Auth user was made, or one made there) a conflict: `--overwrite-changed` writes Supabase's."""
        outcome = self._done(item, previous)
        outcome.notes = [n for n in outcome.notes if not n.startswith(NO_STATE)]  # an earlier run's verdict
        stack_id = outcome.stack_auth_user_id
        if outcome.status != "migrated" or not stack_id:
            return outcome
        current = self.client.get_user(stack_id)
        if current is None:
            return _deleted_in_stack_auth(item, stack_id)
        values, linked = desired(item), supabase_id_of(current) != item.user.id  # linked: never written
        theirs = [] if linked else stack_differs(values, current)
        if theirs and self.options.overwrite_changed:
            return self._patch(item, {"stackAuthUserId": stack_id}, values, theirs, current, [])
        if theirs:
            outcome.fix = CONFLICT_FIX
            outcome.sync, outcome.changed_in_stack_auth = "conflict", theirs
            outcome.notes.append(f"{NO_STATE}, and Stack Auth holds other values than Supabase's "
                                 f"({', '.join(theirs)}): not overwritten (which side changed is not known)")
            return outcome
        self.state.record(item.user.id, stack_id, fingerprints(values), fingerprints(observed(current)),
                          linked=linked)
        outcome.sync = "unchanged"
        outcome.notes.append(f"{NO_STATE}: its Stack Auth user matches the export, recorded as the baseline for "
                             "the next run (a password hash or TOTP secret, which Stack Auth never returns, is taken "
                             "as the export's)")
        return outcome

    def _update(self, item: PlannedUser, record: dict[str, Any], changed: list[str]) -> UserOutcome:
        """One changed user: read, checked against what supamove last saw, then one PATCH (journalled)."""
        sid, stack_id = item.user.id, record["stackAuthUserId"]
        values = desired(item)
        current = self.client.get_user(stack_id)
        if current is None:
            return _deleted_in_stack_auth(item, stack_id)
        intent = self.updates.intents.get(sid)
        if (landed := applied(record, intent, current)) is not None:  # an interrupted run's update
            dropped = (intent or {}).get("dropChannel")  # the e-mail it replaced: its channel deleted now, if not yet
            if (refused := self._drop_channel(item, stack_id, dropped)) is not None:
                return refused
            self._save_update(sid, stack_id, landed["sent"], current, landed["revision"], oauth=landed["oauthProviders"])
            record = landed
            changed = differing(landed["sent"], fingerprints(values))  # changed in Supabase since it was sent
            if not changed:
                return self._synced(item, stack_id, (intent or {}).get("changed") or [],
                                    ["updated by an interrupted run (found applied in Stack Auth, not sent again)",
                                     *_removed_email(dropped)])
        # The identities this sync adds (an interrupted run may have added some) are no change there.
        conflict = self._conflict(item, record, without_pairs(current, new_identities(values, record) or []), changed)
        if conflict is not None:
            return conflict
        refused, notes, added = self._add_identities(item, record, values, current, changed)
        if refused is not None:
            return refused
        if [name for name in changed if name not in NOT_SENT]:
            return self._patch(item, record, values, changed, current, notes)
        answer = (self.client.get_user(stack_id) if added else None) or current
        self._save_update(sid, stack_id, fingerprints(values), answer, int(record.get("revision") or 0),
                          oauth=values["oauth_providers"])
        outcome = self._synced(item, stack_id, changed, notes)
        outcome.sync = "updated" if added else "unchanged"  # only noted: nothing was sent
        return outcome

    def _add_identities(self, item: PlannedUser, record: dict[str, Any], values: dict[str, Any],
                        current: dict[str, Any], changed: list[str]) -> tuple[UserOutcome | None, list[str], bool]:
        """The OAuth identities new in Supabase added with POST /oauth-providers, each unless the Stack Auth
        user has it already; those removed there noted: (the failure, if one is refused; notes; any added)."""
        sid, stack_id = item.user.id, record["stackAuthUserId"]
        have = {p.get("id"): p.get("account_id") for p in current.get("oauth_providers") or []}
        carried = record.get("oauthProviders")
        notes = _removed_identities(item, carried, values)
        emails = {(p["id"], p["account_id"]): p.get("email") for p in (item.body or {}).get("oauth_providers", [])}
        adds, added = new_identities(values, record), False
        for provider, account in values["oauth_providers"] if adds is None else adds:
            if have.get(provider) == account:  # there already: created with it, or added by an interrupted run
                continue
            if provider in have:
                notes.append(IDENTITY_KEPT.format(provider, account, provider, have[provider]))
                continue
            if not added:
                self.updates.intent(sid, item.email, stackAuthUserId=stack_id, revision=None,
                                    sent=fingerprints(values), changed=changed, oauth=values["oauth_providers"])
            try:
                self.client.create_oauth_provider(stack_id, provider, account, emails.get((provider, account)),
                                                  recover=partial(self._has_identity, stack_id, provider, account))
            except Rejected as exc:
                self.updates.clear(sid)
                return self._sync_failed(item, stack_id, *self._identity_refusal(provider, account, exc)), notes, added
            have[provider], added = account, True
            notes.append(IDENTITY_ADDED.format(provider, account))
        return None, notes, added

    def _has_identity(self, stack_id: str, provider: str, account: str) -> dict[str, Any] | None:
        """After a lost answer: the user, if Stack Auth holds this OAuth account for it already."""
        user = self.client.get_user(stack_id)
        found = user is not None and any((p.get("id"), p.get("account_id")) == (provider, account)
                                          for p in user.get("oauth_providers") or [])
        return user if found else None

    def _identity_refusal(self, provider: str, account: str, exc: Rejected) -> tuple[str, str]:
        """(why Stack Auth refused to add this identity, what to do)."""
        why = f"Stack Auth refused its {provider} identity (account {account}): {exc.message}"
        if exc.status == 404 and exc.code is None:  # oauth-providers/crud.tsx: the provider is not configured
            return (f"{why} (the provider is not enabled in the project)",
                    f"enable the {provider} OAuth provider in the Stack Auth dashboard (Auth Methods), then run "
                    "the same command again")
        if exc.code == "OAUTH_PROVIDER_ACCOUNT_ID_ALREADY_USED_FOR_SIGN_IN" or exc.status >= 500:
            for user in self.client.iter_users():
                if any((p.get("id"), p.get("account_id")) == (provider, account) for p in user.get("oauth_providers") or []):
                    return f"{why} ({_holder(user)} signs in with it)", _account_fix(user, provider)
        return why, RETRY_FIX

    def _conflict(self, item: PlannedUser, record: dict[str, Any], current: dict[str, Any],
                  changed: list[str]) -> UserOutcome | None:
        """A user changed in Stack Auth since supamove wrote it: not overwritten (unless asked)."""
        theirs = differing(record["seen"], fingerprints(observed(current))) if record.get("seen") else []
        if not theirs or self.options.overwrite_changed:
            return None
        return _conflicting(self._earlier(item, None), changed, theirs)

    def _patch(self, item: PlannedUser, record: dict[str, Any], values: dict[str, Any], changed: list[str],
               current: dict[str, Any], notes: list[str]) -> UserOutcome:
        sid, stack_id = item.user.id, record["stackAuthUserId"]
        sent = fingerprints(values)
        carried = [name for name in changed if name not in NOT_SENT]
        revision = max(int(record.get("revision") or 0), revision_of(current)) + 1
        dropped = self._replaced_channel(stack_id, replaced_email(values, carried, current))
        self.updates.intent(sid, item.email, stackAuthUserId=stack_id, revision=revision, sent=sent, changed=changed,
                            oauth=values["oauth_providers"], dropChannel=dropped)
        try:
            answer = self.client.update_user(stack_id, update_body(values, carried, revision),
                                             recover=lambda: self._landed(stack_id, revision))
        except (EmailTaken, Rejected) as exc:
            self.updates.clear(sid)
            if isinstance(exc, EmailTaken):
                holder = next(iter(self.client.find_by_email(normalize_email(exc.email) or "")), None)
                return self._sync_failed(
                    item, stack_id, f"Stack Auth refused the update of {', '.join(carried)}: the e-mail {exc.email} "
                    f"is the sign-in of {_holder(holder) if holder else 'another Stack Auth user'}",
                    fix="one e-mail signs one user in: change it in Supabase (then `supamove export --auth-only`) or "
                        "free it in Stack Auth, then run the same command again")
            return self._sync_failed(item, stack_id, f"Stack Auth refused the update of {', '.join(carried)}: "
                                     f"{exc.message}")
        if (refused := self._drop_channel(item, stack_id, dropped)) is not None:
            return refused  # its intent stays: the rerun finds the update applied and deletes the channel
        self._save_update(sid, stack_id, sent, answer, revision, oauth=values["oauth_providers"])
        return self._synced(item, stack_id, changed, notes + _removed_email(dropped))

    def _replaced_channel(self, stack_id: str, old: str | None) -> dict[str, str] | None:
        """The contact channel ({id, value}) of the e-mail an update replaces, to delete once it is applied."""
        if old is None:
            return None
        channels = self.client.list_contact_channels(stack_id)
        channel = next((c for c in channels if c.get("type") == "email" and normalize_email(c.get("value")) == old), None)
        return {"id": str(channel["id"]), "value": old} if channel is not None else None

    def _drop_channel(self, item: PlannedUser, stack_id: str, dropped: dict[str, str] | None) -> UserOutcome | None:
        """The replaced e-mail's contact channel deleted (gone already is done): None, or the failure."""
        if dropped is None:
            return None
        try:
            self.client.delete_contact_channel(stack_id, dropped["id"])
        except Rejected as exc:
            return self._sync_failed(item, stack_id, f"updated, but Stack Auth refused to remove its previous e-mail "
                                     f"{dropped['value']}, which still signs it in: {exc.message}")
        return None

    def _landed(self, stack_id: str, revision: int) -> dict[str, Any] | None:
        """After a lost answer: the user, if Stack Auth holds this update already."""
        user = self.client.get_user(stack_id)
        return user if user is not None and revision_of(user) == revision else None

    def _save_update(self, sid: str, stack_id: str, sent: dict[str, str], answer: dict[str, Any] | None,
                     revision: int, seen: dict[str, str] | None = None, gone: bool = False,
                     oauth: list[list[str]] | None = None) -> None:
        with self.mapping.lock:
            self.state.record(sid, stack_id, sent, fingerprints(observed(answer)) if answer else seen, revision,
                              gone=gone, oauth=oauth)
            self.saved_updates.add(sid)

    def _synced(self, item: PlannedUser, stack_id: str, changed: list[str], notes: list[str]) -> UserOutcome:
        return UserOutcome(item.user.id, "migrated", item.reason, stack_id, item.email, item.password,
                           item.reset_reason, item.notes + notes, mfa="totp" if item.totp_secret_base64 else None,
                           mfa_not_carried=item.mfa_not_carried, sync="updated", changed=changed)

    def _sync_failed(self, item: PlannedUser, stack_id: str, reason: str, fix: str = RETRY_FIX) -> UserOutcome:
        """A user of an earlier run whose update Stack Auth refused: failed, yet still in Stack Auth as the
        earlier run left it (its id, password reset and second factors still listed), `sync` "failed"."""
        outcome = self._earlier(item, None)
        outcome.status, outcome.reason, outcome.fix, outcome.sync = "failed", reason, fix, "failed"
        outcome.stack_auth_user_id = stack_id
        return outcome

    def _restrict_gone(self, sid: str, stack_id: str, email: str | None) -> UserOutcome:
        """A mapped user no longer in auth.users (deleted in Supabase): restricted as a deleted user is created."""
        record = self.state.get(sid) or {}
        current = self.client.get_user(stack_id)
        outcome = UserOutcome(sid, "migrated", "deleted", stack_id, email, notes=[GONE_NOTE])
        if current is None:
            outcome.notes = ["no longer in Supabase's auth.users, nor in Stack Auth"]
            return outcome
        values, changed = gone_values(sid, current)
        intent = self.updates.intents.get(sid)
        if intent is not None and revision_of(current) == intent.get("revision"):  # an interrupted run's update
            self._save_update(sid, stack_id, {}, current, intent["revision"], gone=True)
            outcome.sync, outcome.changed = "updated", list(intent.get("changed") or changed)
            outcome.notes.append("updated by an interrupted run (found applied in Stack Auth, not sent again)")
            return outcome
        theirs = differing(record["seen"], fingerprints(observed(current))) if record.get("seen") else []
        if theirs and not self.options.overwrite_changed:
            return _conflicting(outcome, changed, theirs)
        revision = max(int(record.get("revision") or 0), revision_of(current)) + 1
        self.updates.intent(sid, email, stackAuthUserId=stack_id, revision=revision, sent={}, changed=changed)
        try:
            answer = self.client.update_user(stack_id, update_body(values, changed, revision),
                                             recover=lambda: self._landed(stack_id, revision))
        except Rejected as exc:
            self.updates.clear(sid)
            outcome.status, outcome.reason, outcome.fix = "failed", f"Stack Auth refused its restriction: " \
                f"{exc.message}", RETRY_FIX
            return outcome
        self._save_update(sid, stack_id, {}, answer, revision, gone=True)
        outcome.sync, outcome.changed = "updated", changed
        return outcome

    def _done(self, item: PlannedUser, previous: dict[str, Any] | None) -> UserOutcome:
        """A user of an earlier run; its TOTP secret set now if that run did not get to it."""
        outcome = self._earlier(item, previous)
        if item.totp_secret_base64 is None or outcome.status != "migrated" or outcome.mfa == "totp":
            return outcome
        refused, _ = self._carry_totp(item, outcome.stack_auth_user_id)
        if refused is not None:
            outcome.status, outcome.reason = "failed", refused
            outcome.fix = "correct the cause, then run the same command again (the TOTP secret is set again)"
        else:
            outcome.mfa = "totp"
        return outcome

    def _earlier(self, item: PlannedUser, previous: dict[str, Any] | None) -> UserOutcome:
        stack_id = self.mapping.get(item.user.id)
        if previous and previous.get("stackAuthUserId") == stack_id and previous.get("status") in ("migrated", "linked"):
            notes = list(previous.get("notes") or [])
            if previous["status"] == "linked":  # the existing Stack Auth user keeps its own sign-in
                password, reset = previous.get("password", "none"), previous.get("resetReason")
            else:  # as this version decides: an earlier one may have carried what gives no sign-in (bitbucket)
                password, reset = item.password, item.reset_reason
                notes += [note for note in item.notes if note not in notes]
            return UserOutcome(item.user.id, previous["status"], previous.get("reason"), stack_id, item.email,
                               password, reset, notes, mfa=previous.get("mfa"),
                               mfa_not_carried=list(previous.get("mfaNotCarried") or []))
        return UserOutcome(item.user.id, "migrated", item.reason, stack_id, item.email, item.password,
                           item.reset_reason, item.notes + ["in user-mapping.json from an earlier run"],
                           mfa_not_carried=item.mfa_not_carried)


def _removed_email(dropped: dict[str, str] | None) -> list[str]:
    """The note of a replaced e-mail's contact channel deleted (none without one)."""
    return [EMAIL_REMOVED.format(dropped["value"])] if dropped else []


def _removed_identities(item: PlannedUser, carried: list[list[str]] | None, values: dict[str, Any]) -> list[str]:
    """A note for each identity an earlier run carried that this one does not because Supabase no longer has it;
    one still there that this version no longer carries (bitbucket) is told by the plan's own note."""
    kept = {(OAUTH_PROVIDERS.get(str(i.get("provider"))), str(i.get("provider_id"))) for i in item.user.identities}
    return [IDENTITY_REMOVED.format(*pair) for pair in carried or []
            if pair not in values["oauth_providers"] and tuple(pair) not in kept]


TAKEN_BY = "the Stack Auth user signing in with this e-mail ({}) already stands for Supabase user {}"
UNVERIFIED_HOLDER = ("Stack Auth user {} already signs in with this e-mail and has not verified it: it may be "
                     "someone else's account, so this user is not linked to it")
UNVERIFIED_FIX = ("if that Stack Auth user is this person, mark its e-mail verified in the Stack Auth dashboard; if "
                  "not, delete it; then run the same command again")
LINKED_TOTP = "linked to a Stack Auth user that already existed: its second factors are left as they are"
TAKEN_BY_CHANNEL = ("Stack Auth reports the e-mail taken, yet no Stack Auth user has it as primary e-mail: another "
                    "user signs in with it as a further address (Stack Auth leaves a replaced e-mail signing in: one "
                    "changed in Stack Auth, or by a supamove before this version)")
TAKEN_BY_CHANNEL_FIX = ("find the Stack Auth user that has this address among its e-mails (dashboard > Users, its "
                        "contact channels) and delete that address there, or turn its sign-in off; then run the same "
                        "command again")


def _holder(user: dict[str, Any]) -> str:
    """A Stack Auth user, with the Supabase user it stands for when supamove made or linked it."""
    sid = supabase_id_of(user)
    return f"Stack Auth user {user['id']}" + (f" (Supabase user {sid})" if sid else "")


def _account_fix(holder: dict[str, Any], provider: str) -> str:
    """What to do about an OAuth account another Stack Auth user signs in with."""
    if supabase_id_of(holder):  # another migrated user: deleting it would lose that user
        return (f"two Supabase users share this {provider} account: remove it from one of them in Supabase, then "
                "`supamove export --auth-only` and run the same command again")
    return (f"remove that {provider} account from Stack Auth user {holder['id']} (or delete that user if it is a "
            "leftover), then run the same command again")


def _conflicting(outcome: UserOutcome, changed: list[str], theirs: list[str]) -> UserOutcome:
    """Changed in Stack Auth since supamove wrote it: left as it is, the fields on both sides said."""
    outcome.sync, outcome.changed, outcome.changed_in_stack_auth = "conflict", changed, theirs
    outcome.notes.append(CONFLICT.format(", ".join(theirs)))
    outcome.fix = CONFLICT_FIX
    return outcome


class ClaimedTwice(Exception):
    """More than one Stack Auth user names this Supabase user in server_metadata.supabase_user_id."""

    def __init__(self, claims: list[dict[str, Any]]) -> None:
        super().__init__(", ".join(u["id"] for u in claims))
        self.claims = claims


def _claimed_twice(item: PlannedUser, claims: list[dict[str, Any]]) -> UserOutcome:
    """Which one the data belongs to is the operator's call, as map-users says."""
    return _failed(item, "claimed by more than one Stack Auth user (server_metadata.supabase_user_id): "
                         + ", ".join(u["id"] for u in claims),
                   "keep one of them (delete the others in the dashboard, or clear their "
                   "server_metadata.supabase_user_id), then run the same command again")


# What a create carries: each field's value as the export sends it (sync.desired), and their fingerprints.
Carried = tuple[dict[str, Any], dict[str, str]]


def _carried(item: PlannedUser) -> Carried:
    values = desired(item)
    return values, fingerprints(values)


def _failed(item: PlannedUser, reason: str, fix: str = RETRY_FIX, notes: list[str] | None = None) -> UserOutcome:
    """Not created (or not finished): the command ends non-zero, and a rerun tries this user again."""
    return UserOutcome(item.user.id, "failed", reason, None, item.email, notes=item.notes + (notes or []), fix=fix)


def applied(record: dict[str, Any], intent: dict[str, Any] | None,
            current: dict[str, Any] | None) -> dict[str, Any] | None:
    """The user's sync record as it stands when an interrupted run's update (its journal intent) is found
    applied in Stack Auth (`current` bears its revision): that update is the baseline. None otherwise."""
    if intent is None or current is None or not isinstance(intent.get("sent"), dict) \
            or revision_of(current) != intent.get("revision"):
        return None
    return {**record, "sent": intent["sent"], "seen": fingerprints(observed(current)), "revision": intent["revision"],
            "oauthProviders": intent.get("oauth")}


def dry_run_outcomes(client: StackAuthClient, listing: StackUsers, plan: list[PlannedUser],
                     state: SyncState | None = None, options: MigrateOptions | None = None,
                     updates: dict[str, dict[str, Any]] | None = None, pending: Iterable[str] = (),
                     held: dict[str, str | None] | None = None) -> list[UserOutcome]:
    """What a real run would do, from Stack Auth's users (`listing`; never created nor updated) for the links.
    `updates` and `pending`: the updates and creates an interrupted run left in its journals, as a real run
    reads them; `held`: the mapped Stack Auth users, as held_emails gives them."""
    outcomes = _dry_run_creates(listing, plan, set(pending), held or {})
    for item, outcome in zip(plan, outcomes, strict=True):
        if item.action == "done" and state is not None:
            _dry_run_sync(client, item, outcome, state, options or MigrateOptions(), (updates or {}).get(item.user.id))
    return outcomes


def _dry_run_sync(client: StackAuthClient, item: PlannedUser, outcome: UserOutcome, state: SyncState,
                  options: MigrateOptions, intent: dict[str, Any] | None = None) -> None:
    """update, unchanged or conflict, with the fields: a changed user is read from Stack Auth, never written."""
    record = state.get(item.user.id)
    if record is None or record.get("linked"):
        return
    current = client.get_user(record["stackAuthUserId"]) if intent is not None else None
    landed = applied(record, intent, current)
    record = landed or record  # an interrupted run's update, applied: the baseline
    if landed is not None and (dropped := (intent or {}).get("dropChannel")):  # its replaced e-mail, still to delete
        outcome.notes.append(EMAIL_REMOVING.format(dropped["value"]))
    values = desired(item)
    outcome.changed = differing(record["sent"], fingerprints(values))
    adds = new_identities(values, record)
    sends = [f for f in outcome.changed if f not in NOT_SENT] or ("oauth_providers" in outcome.changed and adds != [])
    outcome.sync = "update" if sends else "unchanged"
    if outcome.sync == "unchanged" or not record.get("seen"):
        return
    current = current or client.get_user(record["stackAuthUserId"])
    theirs = differing(record["seen"], fingerprints(observed(without_pairs(current, adds or [])))) \
        if current is not None else ["deleted"]
    outcome.changed_in_stack_auth = theirs
    if theirs and not options.overwrite_changed:
        _conflicting(outcome, outcome.changed, theirs)
    elif current is not None and (old := replaced_email(values, outcome.changed, current)) is not None:
        outcome.notes.append(EMAIL_REMOVING.format(old))


def dry_run_gone(client: StackAuthClient, gone: list[tuple[str, str, str | None]], state: SyncState,
                 options: MigrateOptions) -> list[UserOutcome]:
    """Mapped users no longer in auth.users: each would be restricted (or is a conflict)."""
    outcomes = []
    for sid, stack_id, email in gone:
        record = state.get(sid) or {}
        if record.get("gone"):
            outcomes.append(UserOutcome(sid, "done", "deleted", stack_id, email, sync="unchanged", notes=[GONE_NOTE]))
            continue
        current = client.get_user(stack_id)
        outcome = UserOutcome(sid, "done", "deleted", stack_id, email,
                              notes=["no longer in Supabase's auth.users: would be restricted in Stack Auth"])
        if current is not None:
            outcome.sync, outcome.changed = "update", gone_values(sid, current)[1]
            theirs = differing(record["seen"], fingerprints(observed(current))) if record.get("seen") else []
            outcome.changed_in_stack_auth = theirs
            if theirs and not options.overwrite_changed:
                _conflicting(outcome, outcome.changed, theirs)
        outcomes.append(outcome)
    return outcomes


def _dry_run_creates(listing: StackUsers, plan: list[PlannedUser], pending: set[str],
                     held: dict[str, str | None]) -> list[UserOutcome]:
    """Create, link or done for each user; Stack Auth's users predict the links (less those whose e-mail this run
    frees first, `held`)."""
    signing_in = {email: pair for email, pair in listing.signing_in.items()
                  if held.get(pair[0].lower(), "") is not None}
    existing = {email: stack_id for email, (stack_id, verified) in signing_in.items() if verified}
    # e-mail -> a Stack Auth user signing in with it unverified: never linked
    unverified = {email: stack_id for email, (stack_id, verified) in signing_in.items() if not verified}
    # Supabase id -> the Stack Auth user holding it (an interrupted run's create)
    carrying = {sid: stack_id for sid, stack_id in listing.carrying.items() if sid in pending}
    outcomes = []
    for item in plan:
        sid = item.user.id
        mfa = "totp" if item.totp_secret_base64 else None
        if item.action == "done":
            outcomes.append(UserOutcome(sid, "done", "already-migrated", None, item.email, item.password,
                                        item.reset_reason, item.notes, mfa=mfa, mfa_not_carried=item.mfa_not_carried))
        elif sid in carrying:  # created by an interrupted run: found, and updated where Supabase changed since
            outcomes.append(UserOutcome(sid, "done", "found-after-interruption", carrying[sid], item.email,
                                        item.password, item.reset_reason, item.notes + [FOUND_NOTE], mfa=mfa,
                                        mfa_not_carried=item.mfa_not_carried, found_earlier=True))
        elif item.email_auth and item.email in unverified:
            outcomes.append(UserOutcome(sid, "failed", UNVERIFIED_HOLDER.format(unverified[item.email]), None,
                                        item.email, notes=item.notes, fix=UNVERIFIED_FIX))
        elif item.email_auth and item.email in existing and (other := held.get(existing[item.email].lower(), sid)) != sid:
            outcomes.append(UserOutcome(sid, "failed", TAKEN_BY.format(existing[item.email], other), None, item.email,
                                        notes=item.notes, fix=RETRY_FIX))
        elif item.email_auth and item.email in existing:
            factors = item.mfa_not_carried + ([{"factorId": item.totp_factor_id, "type": "totp", "reason": LINKED_TOTP}]
                                              if mfa else [])
            outcomes.append(UserOutcome(sid, "link", "existing-stack-auth-user", existing[item.email], item.email,
                                        notes=item.notes, mfa_not_carried=factors))
        elif (taken := _account_taken(item, listing)) is not None:
            outcomes.append(UserOutcome(sid, "failed", taken[0], None, item.email, notes=item.notes, fix=taken[1]))
        else:
            outcomes.append(UserOutcome(sid, "create", item.reason, None, item.email, item.password,
                                        item.reset_reason, item.notes, mfa=mfa, mfa_not_carried=item.mfa_not_carried))
    return outcomes


def _account_taken(item: PlannedUser, listing: StackUsers) -> tuple[str, str] | None:
    """Why a create would fail (and the fix) when one of its OAuth accounts already signs another Stack Auth user
    in: the real server answers that create with a plain 500 (_Run._server_error names the holder)."""
    for provider in (item.body or {}).get("oauth_providers") or []:
        stack_id, held = listing.accounts.get((provider["id"], provider["account_id"]), (None, None))
        if stack_id is not None and held != item.user.id:
            holder = {"id": stack_id, "server_metadata": {"supabase_user_id": held} if held else None}
            return (f"its {provider['id']} account {provider['account_id']} already signs in {_holder(holder)}",
                    _account_fix(holder, provider["id"]))
    return None


# What a rerun reports again of a user an earlier run migrated or linked (see _Run._earlier).
EARLIER_KEYS = ("status", "reason", "stackAuthUserId", "password", "resetReason", "notes", "mfa", "mfaNotCarried")


def _previous_report(path: Path) -> dict[str, str]:
    """The last report's migrated and linked users, each as compact JSON of what a rerun reports again of it."""
    try:
        found = read_json_items(path, "users", "migrate-users", missing_ok=True)
        if found is None:
            return {}
        data, users = found
        return {u["supabaseUserId"]: compact({k: u[k] for k in EARLIER_KEYS if k in u})
                for u in users or json_list(data, "users", path, "") if u.get("status") in ("migrated", "linked")}
    except (DataFileError, KeyError, TypeError, AttributeError):
        log.warning("%s is damaged; rebuilding it from the export and the mapping", path)
        return {}


def _auth_export(datadir: DataDir) -> dict[str, Any] | None:
    """Which auth export this run read (its auth.users file's SHA-256): verify tells a later one from it."""
    if not datadir.metadata.exists():
        return None
    users = next((e for e in Metadata.load(datadir, require_complete=False).auth if e.name == "users"), None)
    return {"usersSha256": users.sha256, "exportedAt": users.exported_at} if users else None


def write_reports(datadir: DataDir, result: MigrationResult) -> None:
    """user-migration-report.json (every user) and password-reset-required.json, both 0600."""
    now = iso(datetime.now(UTC))
    counts = result.counts
    summary = {"total": len(result.outcomes), "migrated": counts["migrated"], "linked": counts["linked"],
               "skipped": counts["skipped"], "failed": counts["failed"], "createdThisRun": result.created,
               "foundAfterInterruption": result.found_earlier,
               "updated": result.updated, "unchanged": len(result.synced("unchanged")),
               "conflicts": len(result.conflicts),
               "passwordResetRequired": len(result.reset_required), "totpCarried": result.totp_carried,
               "mfaNotCarried": len(result.mfa_not_carried)}
    header = {"generatedAt": now, "summary": summary, "authExport": _auth_export(datadir)}
    write_json_items(datadir.users_report, header, "users", (o.to_json() for o in result.outcomes))
    write_json(datadir.password_resets, {"generatedAt": now, "users": [
        {"supabaseUserId": o.supabase_user_id, "stackAuthUserId": o.stack_auth_user_id, "email": o.email,
         "reason": o.reset_reason} for o in result.reset_required]})
    write_json(datadir.mfa_not_carried, {"generatedAt": now, "users": [
        {"supabaseUserId": o.supabase_user_id, "stackAuthUserId": o.stack_auth_user_id, "email": o.email,
         "factors": o.mfa_not_carried} for o in result.mfa_not_carried]})
    result.report_path = datadir.users_report
