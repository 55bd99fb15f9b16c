"""Who each Supabase Auth user becomes in Stack Auth: one decision each, a pure function of the export.

Each user gets one deliberate treatment (see README.md, "Migration Runbook", "Step 3: Migrate
users", the table of the treatment of every kind of user). The mapping is one-to-one: every
Supabase user an application row may reference (deleted, anonymous and e-mail-sharing ones
included) gets a Stack Auth user of its own, so `supamove import` can rewrite every reference.
The users themselves are read from the export by `supamove.users.source`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from supamove.users.source import FAR_FUTURE, SupabaseUser, iso_ts, parse_ts

# Stack Auth's rules (schema-fields.ts emailSchema = yup email; hashes.tsx for bcrypt). Both end
# with \Z: JavaScript's `$` is the end of the text, Python's `$` also matches before a final newline.
EMAIL_RE = re.compile(r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
                      r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\Z")
BCRYPT_RE = re.compile(r"^\$2[ayb]\$(\d\d)\$[./A-Za-z0-9]{53}\Z")
# Supabase provider name -> Stack Auth provider id (utils/oauth.tsx standardProviders).
OAUTH_PROVIDERS = {
    "google": "google", "github": "github", "azure": "microsoft", "spotify": "spotify",
    "facebook": "facebook", "discord": "discord", "gitlab": "gitlab", "bitbucket": "bitbucket",
    "linkedin": "linkedin", "linkedin_oidc": "linkedin", "apple": "apple", "twitter": "x", "x": "x",
    "twitch": "twitch",
}
NOT_OAUTH = {"email", "phone", "anonymous"}


@dataclass
class PlannedUser:
    """What will happen to one Supabase user, and why."""

    user: SupabaseUser
    action: str  # create, done (in the mapping already)
    reason: str | None = None  # its special kind: deleted, anonymous, invalid-email, duplicate-email
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
    if email and not valid:  # rows may reference them too: created without the address
        return PlannedUser(user, "create", "invalid-email")
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
    elif item.reason == "invalid-email":
        item.notes.append("its e-mail is not a valid address: created without one, "
                          "the address kept in server_metadata.supabase_email")
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
