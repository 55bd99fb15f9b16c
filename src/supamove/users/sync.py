"""A rerun of migrate-users brings changes across: what supamove sent each user, and saw in Stack Auth, as fingerprints.

`user-sync-state.json` keeps, per Supabase user, a fingerprint of each field supamove last sent
(`sent`) and of each field of the Stack Auth user as Stack Auth last answered (`seen`). A rerun
compares `sent` with what the current export would send: the fields that differ are the user's
changes, sent with one PATCH. Before that PATCH, a fresh read of the Stack Auth user is compared with
`seen`: a user changed on the Stack Auth side since (a new password, a new e-mail, a sign-in) is a
conflict and is not overwritten unless asked. The fingerprints are truncated SHA-256 of each value:
no password hash or TOTP secret is ever kept in clear. Beside them, `oauthProviders` lists the
(provider, account id) pairs supamove carried: an identity new in Supabase since is added with
`POST /oauth-providers` (Stack Auth's user update takes none), one removed there is noted. An e-mail
replaced (or removed) in Supabase: Stack Auth's update only demotes the old address's contact channel,
which still signs the user in and keeps the address from anyone else (crud.tsx onUpdate), so that
channel is deleted after the PATCH; the journal's intent names it, for a rerun to finish.
"""

from __future__ import annotations

import binascii
import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from supamove.clock import now_iso
from supamove.errors import DataFileError
from supamove.files import SavePacer, read_json_items, write_json_items
from supamove.users.plan import PlannedUser
from supamove.users.source import normalize_email

FORMAT = 1
# server_metadata key counting supamove's updates of a user: a lost answer is found by it.
REVISION_KEY = "supamove_sync_revision"
# The fields a rerun carries, by the names the report uses (Stack Auth's update body names).
SENT_FIELDS = ("primary_email", "primary_email_verified", "primary_email_auth_enabled", "display_name",
               "password_hash", "restricted_by_admin", "totp_secret_base64", "is_anonymous", "server_metadata",
               "oauth_providers")
# Stack Auth's update takes no oauth_providers (crud.tsx onUpdate): a new identity is added with
# POST /oauth-providers instead, a removed one noted.
NOT_SENT = ("oauth_providers",)
IDENTITY_ADDED = "{} identity (account {}) added in Stack Auth"
IDENTITY_KEPT = ("{} identity (account {}) not added: the Stack Auth user already signs in with {} account {} "
                 "(Stack Auth keeps one per provider)")
IDENTITY_REMOVED = ("{} identity (account {}) no longer in Supabase: left in Stack Auth (Stack Auth's API "
                    "removes none for supamove; remove it in the Stack Auth dashboard if it must not sign in)")

EMAIL_FIELDS = ("primary_email", "primary_email_verified", "primary_email_auth_enabled")
EMAIL_REMOVED = ("previous e-mail {} removed from its Stack Auth user: it no longer signs in with it, and another "
                 "user may take it")
EMAIL_REMOVING = ("previous e-mail {} would be removed from its Stack Auth user: it would no longer sign in with it, "
                  "and another user may take it")


def fingerprint(value: Any) -> str:
    """A short, non-reversible fingerprint of one field's value (never the value itself)."""
    digest = hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).digest()[:12]
    return binascii.b2a_base64(digest, newline=False).decode()  # base64.b64encode's, less a Python call


def desired(item: PlannedUser) -> dict[str, Any]:
    """Each carried field's value as the current export would send it."""
    body = item.body or {}
    restricted = [bool(body.get("restricted_by_admin")), body.get("restricted_by_admin_reason"),
                  body.get("restricted_by_admin_private_details")]
    return {
        "primary_email": body.get("primary_email"),
        "primary_email_verified": bool(body.get("primary_email_verified")),
        "primary_email_auth_enabled": bool(body.get("primary_email_auth_enabled")),
        "display_name": body.get("display_name"),
        "password_hash": body.get("password_hash"),
        "restricted_by_admin": restricted,
        "totp_secret_base64": item.totp_secret_base64,
        "is_anonymous": bool(body.get("is_anonymous")),
        "server_metadata": body.get("server_metadata"),
        "oauth_providers": sorted([p["id"], p["account_id"]] for p in body.get("oauth_providers", [])),
    }


def observed(user: dict[str, Any]) -> dict[str, Any]:
    """The fields of a Stack Auth user (as the API reads it) that tell it changed since supamove wrote it."""
    meta = user.get("server_metadata")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k != REVISION_KEY}
    return {
        "primary_email": user.get("primary_email"),
        "primary_email_verified": user.get("primary_email_verified"),
        "primary_email_auth_enabled": user.get("primary_email_auth_enabled"),
        "display_name": user.get("display_name"),
        "has_password": user.get("has_password"),
        "requires_totp_mfa": user.get("requires_totp_mfa"),
        "restricted_by_admin": [user.get("restricted_by_admin"), user.get("restricted_by_admin_reason"),
                                user.get("restricted_by_admin_private_details")],
        "is_anonymous": user.get("is_anonymous"),
        "server_metadata": meta,
        "oauth_providers": sorted([p.get("id"), p.get("account_id")] for p in user.get("oauth_providers") or []),
        "last_active_at_millis": user.get("last_active_at_millis"),  # a sign-in there (or a new password)
    }


def stack_differs(values: dict[str, Any], user: dict[str, Any]) -> list[str]:
    """The fields a Stack Auth user holds otherwise than the export would send them, among those its API shows
    (a password hash and a TOTP secret never come back; identities are only ever added)."""
    meta = user.get("server_metadata")
    shown = {
        "primary_email": (user.get("primary_email") or "").strip().lower() or None,
        "primary_email_verified": bool(user.get("primary_email_verified")),
        "primary_email_auth_enabled": bool(user.get("primary_email_auth_enabled")),
        "display_name": user.get("display_name"),
        "restricted_by_admin": [bool(user.get("restricted_by_admin")), user.get("restricted_by_admin_reason"),
                                user.get("restricted_by_admin_private_details")],
        "is_anonymous": bool(user.get("is_anonymous")),
        "server_metadata": {k: v for k, v in meta.items() if k != REVISION_KEY} if isinstance(meta, dict) else meta,
    }
    restricted = values["restricted_by_admin"]
    wanted = {**values, "restricted_by_admin": restricted if restricted[0] else [False, None, None]}
    return [name for name, value in shown.items() if fingerprint(wanted[name]) != fingerprint(value)]


def new_identities(values: dict[str, Any], record: dict[str, Any]) -> list[list[str]] | None:
    """The (provider, account id) pairs to add: in the export now, not carried by an earlier run
    (None: that run kept no list; the Stack Auth user's own list decides)."""
    carried = record.get("oauthProviders")
    if carried is None:
        return None
    return [pair for pair in values["oauth_providers"] if pair not in carried]


def without_pairs(user: dict[str, Any], pairs: list[list[str]]) -> dict[str, Any]:
    """The user without these OAuth accounts: ones a sync adds are no change on the Stack Auth side."""
    kept = [p for p in user.get("oauth_providers") or [] if [p.get("id"), p.get("account_id")] not in pairs]
    return {**user, "oauth_providers": kept}


def fingerprints(values: dict[str, Any]) -> dict[str, str]:
    return {name: fingerprint(value) for name, value in values.items()}


def differing(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    """The field names whose fingerprints differ (a field missing on either side differs)."""
    return [name for name in now if recorded.get(name) != now[name]]


def revision_of(user: dict[str, Any]) -> int:
    meta = user.get("server_metadata")
    value = meta.get(REVISION_KEY) if isinstance(meta, dict) else None
    return value if isinstance(value, int) else 0


def update_body(values: dict[str, Any], changed: list[str], revision: int) -> dict[str, Any]:
    """The PATCH /users/{id} body for the changed fields; server_metadata always, with the next revision."""
    body: dict[str, Any] = {}
    if set(EMAIL_FIELDS) & set(changed):
        body.update(primary_email=values["primary_email"], primary_email_verified=values["primary_email_verified"],
                    primary_email_auth_enabled=values["primary_email_auth_enabled"])
    if "display_name" in changed:
        body["display_name"] = values["display_name"]
    if "password_hash" in changed:  # no importable hash any more: the old one must not sign in
        body.update({"password_hash": values["password_hash"]} if values["password_hash"] else {"password": None})
    if "restricted_by_admin" in changed:
        restricted, reason, details = values["restricted_by_admin"]
        body["restricted_by_admin"] = restricted
        if restricted:
            body.update(restricted_by_admin_reason=reason, restricted_by_admin_private_details=details)
    if "totp_secret_base64" in changed:
        body["totp_secret_base64"] = values["totp_secret_base64"]  # null turns TOTP off (crud.tsx onUpdate)
    if "is_anonymous" in changed:
        body["is_anonymous"] = values["is_anonymous"]
    body["server_metadata"] = {**(values["server_metadata"] or {}), REVISION_KEY: revision}
    return body


def replaced_email(values: dict[str, Any], changed: list[str], user: dict[str, Any]) -> str | None:
    """The Stack Auth user's present primary e-mail when an update of `changed` gives it another (or none).
    Stack Auth only demotes that address's contact channel and leaves it signing in (crud.tsx onUpdate,
    lib/contact-channel.tsx demoteAllContactChannelsToNonPrimary): the sync deletes it after the update."""
    old = normalize_email(user.get("primary_email"))
    if old is None or not set(EMAIL_FIELDS) & set(changed) or old == normalize_email(values["primary_email"]):
        return None
    return old


def gone_values(supabase_user_id: str, user: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """For a mapped user no longer in auth.users: barred as a deleted user is created (values, fields)."""
    meta = {k: v for k, v in (user.get("server_metadata") or {}).items() if k != REVISION_KEY}
    meta["supabase_deleted_at"] = meta.get("supabase_deleted_at") or now_iso()
    values = {"primary_email": user.get("primary_email"), "primary_email_verified": bool(user.get("primary_email_verified")),
              "primary_email_auth_enabled": False, "password_hash": None,
              "restricted_by_admin": [True, "deleted in Supabase",
                                      f"Supabase user {supabase_user_id} no longer in auth.users (seen by supamove "
                                      f"on {meta['supabase_deleted_at'][:10]}); kept so its data stays linked"],
              "totp_secret_base64": None, "server_metadata": meta}
    changed = ["restricted_by_admin", "server_metadata"]
    changed += ["primary_email_auth_enabled"] if user.get("primary_email_auth_enabled") else []
    changed += ["password_hash"] if user.get("has_password") else []
    changed += ["totp_secret_base64"] if user.get("requires_totp_mfa") else []
    return values, changed


def compact(record: Any) -> str:
    """A record as compact JSON text, in as many bytes as it needs (orjson's own bytes keep a 4 KB buffer)."""
    return orjson.dumps(record).decode()


@dataclass
class SyncState:
    """user-sync-state.json in memory, each user's record as compact JSON (a third of its size as
    objects: the state of every user is held for the whole run); `save` rewrites it atomically (0600)."""

    path: Path
    users: dict[str, str] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _pacer: SavePacer = field(default_factory=SavePacer, repr=False)

    @classmethod
    def load(cls, path: Path) -> SyncState:
        fix = f"move {path.name} away: the next run records every mapped user's state anew (without changes)"
        found = read_json_items(path, "users", "migrate-users", named=True, fix=fix, missing_ok=True)
        if found is None:
            return cls(path)
        head, users = found
        if users is None or head.get("formatVersion") != FORMAT:
            raise DataFileError(f"{path} is not a user sync state of format {FORMAT}", fix=fix)
        return cls(path, {sid: compact(record) for sid, record in users})  # read a user at a time

    def get(self, supabase_user_id: str) -> dict[str, Any] | None:
        with self.lock:
            record = self.users.get(supabase_user_id)
        return None if record is None else orjson.loads(record)

    def record(self, supabase_user_id: str, stack_auth_user_id: str, sent: dict[str, str],
               seen: dict[str, str] | None, revision: int = 0, linked: bool = False, gone: bool = False,
               oauth: list[list[str]] | None = None) -> dict[str, Any]:
        """What was sent to (`sent`) and answered by (`seen`) this Stack Auth user, as fingerprints;
        `oauth`: the (provider, account id) pairs carried. The record, as the file will hold it."""
        record = {"stackAuthUserId": stack_auth_user_id, "linked": linked, "gone": gone, "revision": revision,
                  "sent": sent, "seen": seen, "oauthProviders": oauth, "syncedAt": now_iso()}
        self.restore(supabase_user_id, record)
        return record

    def restore(self, supabase_user_id: str, record: dict[str, Any]) -> None:
        """A record as `record` made it (or as the journal of a run killed before its next save kept it)."""
        text = compact(record)
        with self.lock:
            self.users[supabase_user_id] = text
            self._pacer.changed()

    def due(self) -> bool:
        """Enough new records, or enough time, to be worth a rewrite (as the mapping's)."""
        with self.lock:
            return self._pacer.due()

    def save(self) -> None:
        """Rewrite the file, when something was recorded since it was read or written."""
        with self.lock:
            if not self._pacer.unsaved and self.path.exists():
                return
            started = time.monotonic()
            # Each record written as held, one line per user: a rewrite of every user's state parses nothing.
            write_json_items(self.path, {"formatVersion": FORMAT, "generatedAt": now_iso()}, "users",
                             ((sid, orjson.Fragment(record)) for sid, record in self.users.items()), named=True)
            self._pacer.saved(started)
