"""Who each Supabase Auth user becomes in Stack Auth: one decision each, a pure function of the export.

Each user gets one deliberate treatment (see README.md, "Migration Runbook", "Step 3: Migrate
users", the table of the treatment of every kind of user). The mapping is one-to-one: every
Supabase user an application row may reference (deleted, anonymous and e-mail-sharing ones
included) gets a Stack Auth user of its own, so `supamove import` can rewrite every reference.
The users themselves are read from the export by `supamove.users.source`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from supamove.users.source import FAR_FUTURE, SupabaseUser, iso_ts, jsonb, parse_ts
from supamove.words import counted

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
# schema-fields.ts userDisplayNameSchema: yup max(256), a JavaScript length (UTF-16 code units).
DISPLAY_NAME_MAX = 256
# The whole name, in server_metadata, when display_name had to be cut.
FULL_NAME_KEY = "supabase_display_name"
# Supabase Auth keeps an asked-for change of e-mail in auth.users.email_change until its link is followed;
# Stack Auth has no change pending, and the link's token means nothing there.
PENDING_EMAIL_CHANGE = ("a change of e-mail was pending in Supabase (auth.users.email_change, its link not yet "
                        "followed): not carried, the user keeps the current address and asks for the change again")
# Second factors Stack Auth cannot hold (auth.mfa_factors.factor_type -> why).
FACTORS_NOT_CARRIED = {
    "phone": "phone (SMS) second factor: Stack Auth has no SMS second factor",
    "webauthn": "WebAuthn second factor: its credential cannot be moved; the user registers a passkey anew",
}


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
    full_name: str | None = None  # the whole display name, when Stack Auth's limit cut it
    totp_secret_base64: str | None = field(default=None, repr=False)  # set by an update after the create
    totp_factor_id: str | None = None
    mfa_not_carried: list[dict[str, Any]] = field(default_factory=list)  # {factorId, type, reason}
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
    """E-mail -> the Supabase user who signs in with it in Stack Auth: the oldest live user having it, an SSO
    user only when no other has it.

    Deleted and anonymous users never sign in by e-mail, so they never hold one; `users` is oldest first.
    Supabase lets an SSO user and an e-mail user share an address (its unique index leaves SSO users out),
    and only the e-mail user signed in with it there: Stack Auth has no SSO, so the e-mail user keeps it.
    """
    holders: dict[str, SupabaseUser] = {}
    for user in sorted(users, key=is_sso):  # stable: oldest first among each kind
        email = user.normalized_email
        if email and EMAIL_RE.match(email) and not user.deleted_at and not user.is_anonymous:
            holders.setdefault(email, user)
    return holders


def plan_users(users: list[SupabaseUser], mapped: set[str], use_password_hashes: bool = True,
               now: datetime | None = None) -> list[PlannedUser]:
    """One decision per user, oldest first; a pure function of the export and the mapping."""
    now = now or datetime.now(UTC)
    holders = email_holders(users)
    accounts = account_holders(users)
    plan: list[PlannedUser] = []
    for user in users:
        item = _classify(user, holders)
        if user.id in mapped:
            item.action = "done"
        if item.action in ("create", "done"):
            _decide_create(item, use_password_hashes, now, accounts)
        plan.append(item)
    return plan


def identity_left_behind(note: str) -> bool:
    """Whether a user's note says one of its OAuth identities was not carried (a sign-in way it loses)."""
    return "identity" in note and "not carried over" in note


def account_holders(users: list[SupabaseUser]) -> dict[tuple[str, str], SupabaseUser]:
    """(Stack Auth provider, account id) -> the Supabase user who signs in with it in Stack Auth: the oldest
    live user carrying it. Stack Auth signs one user in with an account; Supabase may hold it twice (one
    user's linkedin identity, another's linkedin_oidc with the same account id), which would be a 500."""
    found: dict[tuple[str, str], SupabaseUser] = {}
    for user in users:
        if user.identities and not user.deleted_at:
            for provider in oauth_providers([user])[0]:
                found.setdefault((provider["id"], provider["account_id"]), user)
    return found


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


def _decide_create(item: PlannedUser, use_hashes: bool, now: datetime,
                   accounts: dict[tuple[str, str], SupabaseUser]) -> None:
    user = item.user
    deleted = item.reason == "deleted"
    providers = _carried_identities(item, accounts)
    banned = is_banned(user, now)
    item.password, item.reset_reason = _password(item, bool(providers), use_hashes)
    if banned and item.password == "reset-required":
        item.password, item.reset_reason = "none", None
        item.notes.append("banned: no password-reset e-mail")
    _kind_notes(item, bool(providers))
    body: dict[str, Any] = {}
    if item.email:
        body.update(primary_email=item.email, primary_email_verified=bool(user.email_confirmed_at),
                    primary_email_auth_enabled=item.email_auth)
    _display_name(item, body)
    if not deleted:
        plan_mfa(item)
    if item.password == "kept":
        body["password_hash"] = user.encrypted_password
    if providers:
        body["oauth_providers"] = providers
    if user.is_anonymous:
        body["is_anonymous"] = True
    body["server_metadata"] = server_metadata(user, item)
    _inexact_notes(item)
    if user.email_change and not deleted:
        item.notes.append(PENDING_EMAIL_CHANGE)
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


def _carried_identities(item: PlannedUser, accounts: dict[tuple[str, str], SupabaseUser]) -> list[dict[str, Any]]:
    """The user's oauth_providers; those left behind noted on it."""
    if item.reason == "deleted":
        if any(str(i.get("provider") or "") in OAUTH_PROVIDERS for i in item.user.identities):
            item.notes.append("OAuth identities not carried over: deleted users cannot sign in")
        return []
    providers, notes = oauth_providers([item.user])
    item.notes += notes
    return [p for p in providers if not _held_by_another(item, p, accounts)]


def _held_by_another(item: PlannedUser, provider: dict[str, Any], accounts: dict[tuple[str, str], SupabaseUser]) -> bool:
    """Whether an older Supabase user carries this account: then only that one signs in with it (noted)."""
    holder = accounts.get((provider["id"], provider["account_id"]))
    if holder is None or holder.id == item.user.id:
        return False
    item.notes.append(f"{provider['id']} identity (account {provider['account_id']}) not carried over: Supabase "
                      f"user {holder.id} has the same account and signs in with it (Stack Auth signs one user in "
                      "with an account; the oldest keeps it)")
    return True


def _kind_notes(item: PlannedUser, has_oauth: bool) -> None:
    """The note saying how a special kind of user was created."""
    user = item.user
    if item.reason == "deleted":
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
                          ("" if has_oauth else "; cannot sign in until an e-mail or OAuth account is added"))


def _inexact_notes(item: PlannedUser) -> None:
    """The note on metadata Stack Auth stores rounded (its server reads JSON numbers as doubles); the numbers
    themselves are not shown (metadata may be private), their exact document is in server_metadata."""
    for name, (_, numbers) in item.user.inexact_meta.items():
        item.notes.append(f"{name} holds {counted(len(numbers), 'number')} Stack Auth stores rounded (its server "
                          "keeps JavaScript numbers: integers up to 2**53, about 16 digits): the exact document "
                          f"kept as text in server_metadata.supabase_{name}_text")


def _display_name(item: PlannedUser, body: dict[str, Any]) -> None:
    """display_name within Stack Auth's limit; a longer name whole in server_metadata."""
    name = display_name(item.user.raw_user_meta_data)
    if not name:
        return
    body["display_name"] = cut_utf16(name, DISPLAY_NAME_MAX)
    if body["display_name"] != name:
        item.full_name = name
        item.notes.append(f"name longer than {DISPLAY_NAME_MAX} UTF-16 units: display_name cut, "
                          f"the whole name kept in server_metadata.{FULL_NAME_KEY}")


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
        if user.email_confirmed_at:
            return "kept", None
        # Supabase refuses a password sign-in until the address is confirmed, and Stack Auth would allow it: the
        # hash of whoever signed up with someone else's address would sign in as them. The reset e-mail, which
        # only the address's owner reads, stands for the confirmation.
        return ("none", None) if has_oauth else ("reset-required", "unconfirmed-email")
    if stored:
        return "reset-required", "unsupported-hash"
    if has_oauth:
        return "none", None  # never had a password: signs in with the provider as before
    return "reset-required", "no-password"


def oauth_providers(users: list[SupabaseUser]) -> tuple[list[dict[str, Any]], list[str]]:
    """Stack Auth oauth_providers for these users' identities, and notes on those left behind.

    Stack Auth keeps one account per provider per user (linkedin and linkedin_oidc, twitter and x
    are one provider there): of several, the identity signed in last is kept.
    """
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
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
            account, why = account_id(name, identity)
            if account is None:
                notes.append(str(why))
                continue
            groups.setdefault(target, []).append((account, identity))
    providers = []
    for target, group in groups.items():
        group.sort(key=lambda pair: _signed_in(pair[1]), reverse=True)
        account, kept = group[0]
        address = identity_data(kept).get("email")
        # Informational only (the account id signs in), and POST /oauth-providers (a sync pass adding an identity)
        # refuses one that is no valid address where a create takes any text: sent only when it is one.
        valid = isinstance(address, str) and EMAIL_RE.match(address)
        providers.append({"id": target, "account_id": account, "email": address if valid else None})
        for other, identity in group[1:]:
            if other != account:
                notes.append(f"{identity.get('provider')} identity (account {other}) not carried over: Stack Auth "
                             f"keeps one {target} account per user; kept the {kept.get('provider')} identity "
                             f"(account {account}), signed in last")
    return providers, notes


def account_id(provider: str, identity: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the account id Stack Auth matches this identity on at sign-in, or None and why)."""
    data = identity_data(identity)
    if provider == "azure":  # Stack's microsoft provider matches on Graph's /me id, the ID token's oid claim
        claims = data.get("custom_claims")
        oid = claims.get("oid") if isinstance(claims, dict) else None
        if not isinstance(oid, str) or not oid.strip():
            return None, ("azure identity not carried over: its identity_data has no custom_claims.oid (the "
                          "Microsoft object id Stack Auth signs in with)")
        return oid.strip(), None
    if provider == "bitbucket":  # Supabase keeps Bitbucket's uuid; Stack signs in with its account_id, not kept
        return None, ("bitbucket identity not carried over: Supabase recorded the Bitbucket uuid, and Stack Auth "
                      "signs in with the Bitbucket account_id, which Supabase does not keep")
    account = identity.get("provider_id") or data.get("sub") or data.get("provider_id") or identity.get("id")
    return str(account), None


def identity_data(identity: dict[str, Any]) -> dict[str, Any]:
    data = jsonb(identity.get("identity_data"))
    return data if isinstance(data, dict) else {}


def _signed_in(identity: dict[str, Any]) -> tuple[datetime, datetime]:
    """When the identity was last used (last sign-in, else last update), for picking the newest."""
    never = datetime.min.replace(tzinfo=UTC)
    return (parse_ts(identity.get("last_sign_in_at")) or never,
            parse_ts(identity.get("updated_at")) or parse_ts(identity.get("created_at")) or never)


def cut_utf16(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-16 code units, never between the halves of a surrogate pair."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:index]
    return text


TOTP_CARRIED = "verified TOTP factor carried (totp_secret_base64, requires_totp_mfa)"


def plan_mfa(item: PlannedUser) -> None:
    """The newest verified TOTP factor carried; verified factors Stack Auth cannot hold noted; unverified ignored."""
    verified = [f for f in item.user.factors if f.get("status") == "verified"]
    for factor in sorted(verified, key=_signed_in, reverse=True):
        kind = str(factor.get("factor_type") or "")
        reason = FACTORS_NOT_CARRIED.get(kind, f"{kind} second factor: Stack Auth has no such factor")
        if kind == "totp" and item.totp_secret_base64 is not None:
            reason = "a second TOTP factor: Stack Auth keeps one TOTP secret per user (the newest is carried)"
        elif kind == "totp":
            secret, why = totp_base64(factor.get("secret"))
            if secret is not None:
                item.totp_secret_base64, item.totp_factor_id = secret, str(factor.get("id"))
                item.notes.append(TOTP_CARRIED)
                continue
            reason = str(why)
        item.mfa_not_carried.append({"factorId": str(factor.get("id")), "type": kind, "reason": reason})
        item.notes.append(f"second factor not carried: {reason}")


def totp_base64(secret: Any) -> tuple[str | None, str | None]:
    """A stored TOTP secret (base32 text) as Stack Auth's totp_secret_base64, or None and why not."""
    text = secret.strip() if isinstance(secret, str) else ""
    if text.startswith("{") and isinstance(jsonb(text), dict):
        return None, ("TOTP secret stored encrypted by Supabase Auth (a JSON envelope, not the base32 text): "
                      "supamove cannot read it")
    try:
        raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        return None, "TOTP secret is not base32 text"
    return base64.b64encode(raw).decode(), None


# Where a name sits in raw_user_meta_data: `display_name` is what the Supabase dashboard shows and edits, the
# OAuth providers write `full_name` and `name`, sign-up forms often `first_name` and `last_name`.
NAME_KEYS = ("display_name", "full_name", "name")


def display_name(meta: Any) -> str | None:
    """The user's name from their Supabase metadata, the first of NAME_KEYS set, else first and last name."""
    if not isinstance(meta, dict):
        return None
    for key in NAME_KEYS:
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    parts = [meta.get(key) for key in ("first_name", "last_name")]
    joined = " ".join(part.strip() for part in parts if isinstance(part, str) and part.strip())
    return joined or None


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
    if item is not None and item.full_name:
        meta[FULL_NAME_KEY] = item.full_name
    for name, (text, _) in user.inexact_meta.items():
        meta[f"supabase_{name}_text"] = text
    if user.email and (item is None or not item.email):
        meta["supabase_email"] = user.email  # not carried as primary_email (invalid address, anonymous user)
    return meta
