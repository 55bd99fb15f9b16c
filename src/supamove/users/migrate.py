"""Step 3: every Supabase Auth user into Stack Auth, once, with the mapping kept as we go.

Each user gets one deliberate treatment (see README.md, "Migration Runbook", "Step 3: Migrate
users", the table of the treatment of every kind of user): created, linked to a Stack Auth user
that already has the e-mail, or skipped with a reason. The mapping is one-to-one: every Supabase
user an application row may reference (deleted, anonymous and e-mail-sharing ones included) gets
a Stack Auth user of its own, so `supamove import` can rewrite every reference.
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

import orjson

from supamove.errors import DataFileError
from supamove.files import write_json
from supamove.log import get_logger
from supamove.metadata import Metadata
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress
from supamove.users.client import EmailTaken, Rejected, StackAuthClient
from supamove.users.mapping import PendingJournal, UserMapping, iso

log = get_logger("users")
LABEL = "users"
# Stack Auth's rules (schema-fields.ts emailSchema = yup email; hashes.tsx for bcrypt).
EMAIL_RE = re.compile(r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
                      r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
BCRYPT_RE = re.compile(r"^\$2[ayb]\$(\d\d)\$[./A-Za-z0-9]{53}$")
# Supabase provider name -> Stack Auth provider id (utils/oauth.tsx standardProviders).
OAUTH_PROVIDERS = {
    "google": "google", "github": "github", "azure": "microsoft", "spotify": "spotify",
    "facebook": "facebook", "discord": "discord", "gitlab": "gitlab", "bitbucket": "bitbucket",
    "linkedin": "linkedin", "linkedin_oidc": "linkedin", "apple": "apple", "twitter": "x", "x": "x",
    "twitch": "twitch",
}
NOT_OAUTH = {"email", "phone", "anonymous"}
FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


# --- the export ------------------------------------------------------------------------------


@dataclass
class SupabaseUser:
    """The fields of one auth.users row that decide its treatment."""

    id: str
    email: str | None
    phone: str | None
    encrypted_password: str | None = field(repr=False)
    email_confirmed_at: str | None
    created_at: str | None
    raw_user_meta_data: Any
    raw_app_meta_data: Any
    is_anonymous: bool
    deleted_at: str | None
    banned_until: str | None
    is_sso_user: bool
    identities: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SupabaseUser:
        return cls(
            id=str(row["id"]), email=row.get("email"), phone=row.get("phone"),
            encrypted_password=row.get("encrypted_password"), email_confirmed_at=row.get("email_confirmed_at"),
            created_at=row.get("created_at"), raw_user_meta_data=jsonb(row.get("raw_user_meta_data")),
            raw_app_meta_data=jsonb(row.get("raw_app_meta_data")), is_anonymous=bool(row.get("is_anonymous")),
            deleted_at=row.get("deleted_at"), banned_until=row.get("banned_until"),
            is_sso_user=bool(row.get("is_sso_user")))

    @property
    def normalized_email(self) -> str | None:
        return normalize_email(self.email)


def jsonb(value: Any) -> Any:
    """A jsonb column's value: export writes PostgreSQL's text of it, a JSON document in a string."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def normalize_email(value: str | None) -> str | None:
    """As Stack Auth stores it (emails.tsx normalizeEmail): trimmed and lower-cased; None when blank."""
    if not value or not value.strip():
        return None
    return value.strip().lower()


def parse_ts(value: str | None) -> datetime | None:
    """PostgreSQL's text output or ISO-8601, as UTC; 'infinity' is the far future."""
    if value is None:
        return None
    if value == "infinity":
        return FAR_FUTURE
    if value == "-infinity":
        return datetime.min.replace(tzinfo=UTC)
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso_ts(value: str | None) -> str | None:
    moment = parse_ts(value)
    if moment is None or moment in (FAR_FUTURE,) or moment.year == 1:
        return value
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise DataFileError(f"{path} line {number} is not valid JSON ({exc})",
                                    fix="run `supamove export` again") from None


def load_auth_export(datadir: DataDir) -> list[SupabaseUser]:
    """The exported auth users with their identities, oldest first; DataFileError when not exported."""
    users_file = datadir.table_file("auth", "users")
    identities_file = datadir.table_file("auth", "identities")
    for path in (users_file, identities_file):
        if not path.exists():
            raise DataFileError(f"{path} not found (the auth users are read from the export)",
                                fix="run `supamove export` first")
    users = {}
    for row in read_jsonl(users_file):
        user = SupabaseUser.from_row(row)
        users[user.id] = user
    identities = 0
    for row in read_jsonl(identities_file):
        identities += 1
        owner = users.get(str(row.get("user_id")))
        if owner is not None:
            owner.identities.append({**row, "identity_data": jsonb(row.get("identity_data"))})
    _check_counts(datadir, {"users": len(users), "identities": identities})
    return sorted(users.values(), key=lambda u: (parse_ts(u.created_at) or FAR_FUTURE, u.id))


def _check_counts(datadir: DataDir, counts: dict[str, int]) -> None:
    """When metadata.json records the auth tables' row counts, the files must hold that many rows."""
    if not datadir.metadata.exists():
        return
    meta = Metadata.load(datadir, require_complete=False)
    for entry in meta.auth_tables:
        expected, name = entry.get("rowCount"), entry.get("name")
        if name in counts and expected is not None and expected != counts[name]:
            raise DataFileError(f"auth.{name}: metadata.json records {expected} rows, the file holds {counts[name]}",
                                fix="run `supamove export` again")


# --- the plan --------------------------------------------------------------------------------


@dataclass
class PlannedUser:
    """What will happen to one Supabase user, and why."""

    user: SupabaseUser
    action: str  # create, skip, done
    reason: str | None = None  # why skipped; for a create, its special kind (deleted, anonymous, duplicate-email)
    email: str | None = None
    password: str = "none"  # kept, reset-required, none
    reset_reason: str | None = None
    notes: list[str] = field(default_factory=list)
    shared_with: str | None = None  # the older Supabase user who signs in with this e-mail
    body: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def email_auth(self) -> bool:
        """Whether the e-mail is used for sign-in (primary_email_auth_enabled)."""
        return bool(self.email) and self.reason is None


def importable_hash(value: str | None) -> bool:
    """A bcrypt hash Stack Auth accepts as password_hash (`^\\$2[ayb]\\$.{56}$`, cost 4..16)."""
    shape = BCRYPT_RE.match(value or "")
    return bool(shape) and 4 <= int(shape.group(1)) <= 16  # type: ignore[union-attr]


def is_sso(user: SupabaseUser) -> bool:
    return user.is_sso_user or any(str(i.get("provider", "")).startswith("sso") or i.get("provider") == "saml"
                                   for i in user.identities)


def is_banned(user: SupabaseUser, now: datetime) -> bool:
    until = parse_ts(user.banned_until)
    return until is not None and until > now


def email_holders(users: list[SupabaseUser]) -> dict[str, SupabaseUser]:
    """E-mail -> the Supabase user who signs in with it in Stack Auth: the oldest live user having it.

    Deleted and anonymous users never sign in by e-mail, so they never hold one; `users` is oldest first.
    """
    holders: dict[str, SupabaseUser] = {}
    for user in users:
        email = user.normalized_email
        if email and EMAIL_RE.match(email) and not user.deleted_at and not user.is_anonymous:
            holders.setdefault(email, user)
    return holders


def plan_users(users: list[SupabaseUser], mapped: set[str], use_password_hashes: bool = True,
               now: datetime | None = None) -> list[PlannedUser]:
    """One decision per user, oldest first; a pure function of the export and the mapping."""
    now = now or datetime.now(UTC)
    holders = email_holders(users)
    plan: list[PlannedUser] = []
    for user in users:
        item = _classify(user, holders)
        if user.id in mapped:
            item.action = "done"
        if item.action in ("create", "done"):
            _decide_create(item, use_password_hashes, now)
        plan.append(item)
    return plan


def _classify(user: SupabaseUser, holders: dict[str, SupabaseUser]) -> PlannedUser:
    email = user.normalized_email
    valid = bool(email) and bool(EMAIL_RE.match(email or ""))
    if user.deleted_at:  # rows may still reference them: created, barred, e-mail left free
        return PlannedUser(user, "create", "deleted", email=email if valid else None)
    if user.is_anonymous:
        return PlannedUser(user, "create", "anonymous")
    if email and not valid:
        return PlannedUser(user, "skip", "invalid-email", email=email)
    holder = holders.get(email) if email else None
    if holder is not None and holder.id != user.id:
        return PlannedUser(user, "create", "duplicate-email", email=email, shared_with=holder.id)
    return PlannedUser(user, "create", email=email)


def _decide_create(item: PlannedUser, use_hashes: bool, now: datetime) -> None:
    user = item.user
    deleted = item.reason == "deleted"
    if deleted:
        providers: list[dict[str, Any]] = []
        if any(str(i.get("provider") or "") in OAUTH_PROVIDERS for i in user.identities):
            item.notes.append("OAuth identities not carried over: deleted users cannot sign in")
    else:
        providers, notes = oauth_providers([user])
        item.notes += notes
    banned = is_banned(user, now)
    item.password, item.reset_reason = _password(item, bool(providers), use_hashes)
    if banned and item.password == "reset-required":
        item.password, item.reset_reason = "none", None
        item.notes.append("banned: no password-reset e-mail")
    if deleted:
        item.notes.append("deleted in Supabase: created restricted")
        if user.normalized_email and not item.email:
            item.notes.append("its e-mail is not a valid address: kept in server_metadata.supabase_email")
    elif item.reason == "anonymous":
        item.notes.append("anonymous in Supabase: created as an anonymous Stack Auth user")
    elif item.reason == "duplicate-email":
        item.notes.append(f"email shared with {item.shared_with}: sign-in by email disabled")
    elif not item.email:
        kind = "phone-only" if user.phone else "no e-mail"
        item.notes.append(f"{kind}: created without an e-mail" +
                          ("" if providers else "; cannot sign in until an e-mail or OAuth account is added"))
    body: dict[str, Any] = {}
    if item.email:
        body.update(primary_email=item.email, primary_email_verified=bool(user.email_confirmed_at),
                    primary_email_auth_enabled=item.email_auth)
    name = display_name(user.raw_user_meta_data)
    if name:
        body["display_name"] = name
    if item.password == "kept":
        body["password_hash"] = user.encrypted_password
    if providers:
        body["oauth_providers"] = providers
    if user.is_anonymous:
        body["is_anonymous"] = True
    body["server_metadata"] = server_metadata(user, item)
    if deleted:
        body.update(restricted_by_admin=True,
                    restricted_by_admin_reason=f"deleted in Supabase on {_day(user.deleted_at)}",
                    restricted_by_admin_private_details=f"Supabase user {user.id} soft-deleted at "
                                                        f"{iso_ts(user.deleted_at)}; kept so its data stays linked")
    elif banned:
        body.update(restricted_by_admin=True, restricted_by_admin_reason="Your account is suspended.",
                    restricted_by_admin_private_details=f"banned in Supabase until {iso_ts(user.banned_until)}")
        item.notes.append("banned in Supabase: restricted_by_admin in Stack Auth")
    item.body = body


def _day(value: str | None) -> str:
    moment = parse_ts(value)
    return moment.astimezone(UTC).date().isoformat() if moment and moment != FAR_FUTURE else str(value)


def _password(item: PlannedUser, has_oauth: bool, use_hashes: bool) -> tuple[str, str | None]:
    """(kept | reset-required | none, the reason a reset is needed)."""
    user = item.user
    stored = user.encrypted_password or ""
    if not item.email_auth:  # no sign-in e-mail (none, deleted, anonymous, shared): no password, no reset
        return "none", None
    if is_sso(user):
        return "reset-required", "sso"
    if stored and not use_hashes:
        return "reset-required", "forced"
    if importable_hash(stored):
        return "kept", None
    if stored:
        return "reset-required", "unsupported-hash"
    if has_oauth:
        return "none", None  # never had a password: signs in with the provider as before
    return "reset-required", "no-password"


def oauth_providers(users: list[SupabaseUser]) -> tuple[list[dict[str, Any]], list[str]]:
    """Stack Auth oauth_providers for these users' identities, and notes on those left behind."""
    providers: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    notes: list[str] = []
    for user in users:
        for identity in user.identities:
            name = str(identity.get("provider") or "")
            if name in NOT_OAUTH or name.startswith("sso") or name == "saml":
                continue
            target = OAUTH_PROVIDERS.get(name)
            if target is None:
                notes.append(f"{name} identity not carried over: Stack Auth has no {name} provider")
                continue
            data = identity.get("identity_data")
            data = data if isinstance(data, dict) else {}
            account = identity.get("provider_id") or data.get("sub") or data.get("provider_id") or identity.get("id")
            key = (target, str(account))
            if key in seen:
                continue
            seen.add(key)
            address = data.get("email") if isinstance(data.get("email"), str) else None
            providers.append({"id": target, "account_id": str(account), "email": address})
    return providers, notes


def display_name(meta: Any) -> str | None:
    if not isinstance(meta, dict):
        return None
    for key in ("full_name", "name"):
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def server_metadata(user: SupabaseUser, item: PlannedUser | None = None) -> dict[str, Any]:
    """What Stack Auth cannot hold natively: the Supabase id, sign-up date and metadata."""
    meta: dict[str, Any] = {
        "supabase_user_id": user.id,
        "supabase_created_at": iso_ts(user.created_at),
        "supabase_raw_user_meta_data": user.raw_user_meta_data,
        "supabase_raw_app_meta_data": user.raw_app_meta_data,
    }
    if user.phone:
        meta["supabase_phone"] = user.phone
    if user.banned_until:
        meta["supabase_banned_until"] = iso_ts(user.banned_until)
    if user.deleted_at:
        meta["supabase_deleted_at"] = iso_ts(user.deleted_at)
    if item is not None and item.shared_with:
        meta["supabase_email_shared_with"] = item.shared_with
    if user.email and (item is None or not item.email):
        meta["supabase_email"] = user.email  # not carried as primary_email (invalid address, anonymous user)
    return meta


# --- the run ---------------------------------------------------------------------------------


@dataclass
class MigrateOptions:
    concurrency: int = 8
    use_password_hashes: bool = True
    dry_run: bool = False


@dataclass
class UserOutcome:
    """How one Supabase user ended: migrated, linked, skipped or failed."""

    supabase_user_id: str
    status: str
    reason: str | None
    stack_auth_user_id: str | None
    email: str | None
    password: str = "none"
    reset_reason: str | None = None
    notes: list[str] = field(default_factory=list)
    created_now: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"supabaseUserId": self.supabase_user_id, "status": self.status, "reason": self.reason,
                "stackAuthUserId": self.stack_auth_user_id, "email": self.email, "password": self.password,
                "resetReason": self.reset_reason, "notes": self.notes}


@dataclass
class MigrationResult:
    outcomes: list[UserOutcome]
    dry_run: bool
    seconds: float
    retries: int = 0
    report_path: Path | None = None
    reset_path: Path | None = None

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
    def users_per_second(self) -> float:
        return self.created / self.seconds if self.seconds else 0.0


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
            if item.action == "skip":
                outcomes[item.user.id] = UserOutcome(item.user.id, "skipped", item.reason, None, item.email,
                                                     notes=item.notes)
            elif item.action == "done":
                outcomes[item.user.id] = self._earlier(item, previous.get(item.user.id))
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
                return self._record(item, found["id"], "migrated", None, ["found in Stack Auth after an interrupted run"])
        self.journal.intent(sid, item.email)
        try:
            outcome = self.client.create_user(item.body or {}, recover=lambda: self._lookup(item))
        except EmailTaken:
            if not item.email_auth:  # Stack Auth refuses a shared e-mail only when both would sign in with it
                self.journal.clear(sid)
                return UserOutcome(sid, "failed", "Stack Auth reports the e-mail taken for a user not signing in "
                                   "with it", None, item.email, notes=item.notes)
            return self._email_taken(item)
        except Rejected as exc:
            self.journal.clear(sid)
            log.warning("Stack Auth refused Supabase user %s: %s", sid, exc.message)
            return UserOutcome(sid, "failed", exc.message, None, item.email, notes=item.notes)
        notes = ["created after a lost answer was found in Stack Auth"] if outcome.recovered else []
        return self._record(item, outcome.user["id"], "migrated", None, notes, created=not outcome.recovered)

    def _email_taken(self, item: PlannedUser) -> UserOutcome:
        sid = item.user.id
        existing = self.client.find_by_email(item.email or "")
        ours = [u for u in existing if supabase_id_of(u) == sid]
        if ours:
            return self._record(item, ours[0]["id"], "migrated", None, ["found in Stack Auth after a lost answer"])
        auth_users = [u for u in existing if u.get("primary_email_auth_enabled")] or existing
        if not auth_users:
            self.journal.clear(sid)
            return UserOutcome(sid, "failed", "Stack Auth reports the e-mail taken but lists no such user",
                               None, item.email, notes=item.notes)
        target = auth_users[0]
        other = supabase_id_of(target) or self.mapping.owner_of(target["id"])
        if other and other != sid:  # linking would map two Supabase users to one Stack Auth user
            self.journal.clear(sid)
            return UserOutcome(sid, "failed", f"the Stack Auth user signing in with this e-mail ({target['id']}) "
                               f"already stands for Supabase user {other}", None, item.email, notes=item.notes)
        item.password, item.reset_reason = "none", None  # their Stack Auth account keeps its own sign-in
        return self._record(item, target["id"], "linked", "existing-stack-auth-user",
                            ["a Stack Auth user with this e-mail already existed; linked, not created"])

    def _record(self, item: PlannedUser, stack_id: str, status: str, reason: str | None, notes: list[str],
                created: bool = False) -> UserOutcome:
        with self.mapping.lock:  # the mapping entry and the journal line together, before any flush
            owner = self.mapping.owner_of(stack_id)
            if owner is not None and owner != item.user.id:  # never one Stack Auth id for two Supabase users
                self.journal.clear(item.user.id)
                return UserOutcome(item.user.id, "failed", f"Stack Auth user {stack_id} is already mapped to "
                                   f"Supabase user {owner}", None, item.email, notes=item.notes + notes)
            self.mapping.add(item.user.id, stack_id, item.email)
            self.journal.done(item.user.id, stack_id)
        return UserOutcome(item.user.id, status, item.reason if status == "migrated" else reason, stack_id,
                           item.email, item.password, item.reset_reason, item.notes + notes, created_now=created)

    def _lookup(self, item: PlannedUser) -> dict[str, Any] | None:
        """This Supabase user's Stack Auth user: by its sign-in e-mail, or (without one: no e-mail, deleted,
        anonymous, shared e-mail) by a scan of every user's server_metadata.supabase_user_id."""
        candidates = self.client.find_by_email(item.email) if item.email_auth and item.email \
            else self.client.iter_users()
        return next((u for u in candidates if supabase_id_of(u) == item.user.id), None)

    def _scan_index(self) -> dict[str, dict[str, Any]]:
        log.info("an earlier run was interrupted with creates in flight; reading Stack Auth's users to find them")
        return {sid: u for u in self.client.iter_users() if (sid := supabase_id_of(u))}

    def _earlier(self, item: PlannedUser, previous: dict[str, Any] | None) -> UserOutcome:
        stack_id = self.mapping.get(item.user.id)
        if previous and previous.get("stackAuthUserId") == stack_id and previous.get("status") in ("migrated", "linked"):
            return UserOutcome(item.user.id, previous["status"], previous.get("reason"), stack_id, item.email,
                               previous.get("password", "none"), previous.get("resetReason"),
                               list(previous.get("notes") or []))
        return UserOutcome(item.user.id, "migrated", item.reason, stack_id, item.email, item.password,
                           item.reset_reason, item.notes + ["in user-mapping.json from an earlier run"])


def supabase_id_of(user: dict[str, Any]) -> str | None:
    meta = user.get("server_metadata")
    value = meta.get("supabase_user_id") if isinstance(meta, dict) else None
    return str(value) if value else None


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
        if item.action == "skip":
            outcomes.append(UserOutcome(sid, "skipped", item.reason, None, item.email, notes=item.notes))
        elif item.action == "done":
            outcomes.append(UserOutcome(sid, "done", "already-migrated", None, item.email, item.password,
                                        item.reset_reason, item.notes))
        elif item.email_auth and item.email in existing:
            outcomes.append(UserOutcome(sid, "link", "existing-stack-auth-user", existing[item.email], item.email,
                                        notes=item.notes))
        else:
            outcomes.append(UserOutcome(sid, "create", item.reason, None, item.email, item.password,
                                        item.reset_reason, item.notes))
    return outcomes


def _previous_report(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        data = orjson.loads(path.read_bytes())
        return {u["supabaseUserId"]: u for u in data.get("users", [])}
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        log.warning("%s is damaged; rebuilding it from the export and the mapping", path)
        return {}


def write_reports(datadir: DataDir, result: MigrationResult) -> None:
    """user-migration-report.json (every user) and password-reset-required.json, both 0600."""
    now = iso(datetime.now(UTC))
    counts = result.counts
    summary = {"total": len(result.outcomes), "migrated": counts["migrated"], "linked": counts["linked"],
               "skipped": counts["skipped"], "failed": counts["failed"], "createdThisRun": result.created,
               "passwordResetRequired": len(result.reset_required)}
    write_json(datadir.users_report, {"generatedAt": now, "summary": summary,
                                      "users": [o.to_json() for o in result.outcomes]})
    write_json(datadir.password_resets, {"generatedAt": now, "users": [
        {"supabaseUserId": o.supabase_user_id, "stackAuthUserId": o.stack_auth_user_id, "email": o.email,
         "reason": o.reset_reason} for o in result.reset_required]})
    result.report_path, result.reset_path = datadir.users_report, datadir.password_resets


# --- map-users -------------------------------------------------------------------------------


@dataclass
class MapResult:
    matched: list[dict[str, Any]]
    unmatched_supabase: list[tuple[str, str | None, str]]  # (id, e-mail, why)
    unmatched_stack: list[tuple[str, str | None]]
    dry_run: bool
    mapping_path: Path | None = None


def map_users(client: StackAuthClient, datadir: DataDir, dry_run: bool = False,
              progress: Progress | None = None) -> MapResult:
    """Rebuild user-mapping.json from the users already in Stack Auth; creates nothing.

    One-to-one, as migrate-users maps: first by the Supabase id kept in server_metadata; then a
    Stack Auth user with none (one who signed up on their own) by its e-mail, to the Supabase user
    who signs in with that e-mail (the oldest live one having it), never to two Supabase users.
    """
    progress = progress or NullProgress()
    users = load_auth_export(datadir)
    by_id = {u.id: u for u in users}
    holders = email_holders(users)
    matched: dict[str, dict[str, Any]] = {}
    by_email: dict[str, list[dict[str, Any]]] = {}
    unmatched_stack: list[tuple[str, str | None]] = []
    progress.start("stack auth users", None)
    for stack_user in client.iter_users():
        progress.advance("stack auth users")
        sid = supabase_id_of(stack_user)
        email = normalize_email(stack_user.get("primary_email"))
        if sid in by_id and sid not in matched:
            matched[sid] = _mapping_entry(by_id[sid], stack_user)
        elif sid is None and email in holders:
            by_email.setdefault(email, []).append(stack_user)  # type: ignore[arg-type]
        else:
            unmatched_stack.append((stack_user["id"], stack_user.get("primary_email")))
    progress.finish("stack auth users")
    for email, candidates in by_email.items():  # ids first, then e-mails for the rest
        candidates.sort(key=lambda u: not u.get("primary_email_auth_enabled"))  # the one signing in first
        holder = holders[email]
        for stack_user in candidates:
            if holder.id not in matched:
                matched[holder.id] = _mapping_entry(holder, stack_user)
            else:
                unmatched_stack.append((stack_user["id"], stack_user.get("primary_email")))
    unmatched = [(u.id, u.normalized_email, _why_unmatched(u, holders)) for u in users if u.id not in matched]
    ordered = [matched[u.id] for u in users if u.id in matched]
    result = MapResult(ordered, unmatched, unmatched_stack, dry_run)
    if not dry_run:
        mapping = UserMapping(datadir.user_mapping)
        for entry in ordered:
            mapping.add(entry["supabaseUserId"], entry["stackAuthUserId"], entry["email"], entry["migratedAt"])
        mapping.save()
        result.mapping_path = mapping.path
    return result


def _mapping_entry(user: SupabaseUser, stack_user: dict[str, Any]) -> dict[str, Any]:
    millis = stack_user.get("signed_up_at_millis")
    when = iso(datetime.fromtimestamp(millis / 1000, UTC)) if isinstance(millis, int | float) else None
    return {"supabaseUserId": user.id, "stackAuthUserId": stack_user["id"], "email": user.normalized_email,
            "migratedAt": when}


def _why_unmatched(user: SupabaseUser, holders: dict[str, SupabaseUser]) -> str:
    email = user.normalized_email
    if email and not EMAIL_RE.match(email) and not user.deleted_at and not user.is_anonymous:
        return "invalid e-mail (never migrated)"
    later = "; `supamove migrate-users` creates it"
    if user.deleted_at:
        return "deleted: no Stack Auth user with its id" + later
    if user.is_anonymous:
        return "anonymous: no Stack Auth user with its id" + later
    holder = holders.get(email) if email else None
    if holder is not None and holder.id != user.id:
        return f"shares its e-mail with {holder.id}: no Stack Auth user with its id" + later
    return "no Stack Auth user with its id or e-mail" + later
