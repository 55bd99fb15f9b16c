"""`supamove map-users`: user-mapping.json rebuilt from the users already in Stack Auth, creating none."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from supamove.clock import iso
from supamove.errors import StackAuthError, SupamoveError
from supamove.paths import DataDir
from supamove.progress import NullProgress, Progress
from supamove.usermap import UserMapping
from supamove.users.client import StackAuthClient, supabase_id_of
from supamove.users.plan import EMAIL_RE, email_holders
from supamove.users.source import SupabaseUser, load_auth_export, normalize_email
from supamove.users.sync import SyncState
from supamove.words import counted

LABEL = "stack auth users"


@dataclass
class MapResult:
    matched: list[dict[str, Any]]
    unmatched_supabase: list[tuple[str, str | None, str]]  # (id, e-mail, why)
    unmatched_stack: list[tuple[str, str | None]]
    dry_run: bool
    mapping_path: Path | None = None
    kept: int = 0  # entries of the mapping it replaces, their Stack Auth user there and matched by nothing else
    # Supabase id -> every Stack Auth user claiming it: {stackAuthUserId, email, inMapping (the mapping replaced)}
    claimed_twice: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """`map-users --dry-run --json`: the mappings found, and the users left unmatched on either side."""
        return {"dryRun": self.dry_run, "matched": self.matched,
                "unmatchedSupabase": [{"supabaseUserId": sid, "email": email, "why": why}
                                      for sid, email, why in self.unmatched_supabase],
                "unmatchedStackAuth": [{"stackAuthUserId": sid, "email": email}
                                       for sid, email in self.unmatched_stack],
                "mappingPath": None if self.mapping_path is None else str(self.mapping_path),
                "keptFromEarlierMapping": self.kept,
                "claimedByMoreThanOne": [{"supabaseUserId": sid, "stackAuthUsers": claims}
                                         for sid, claims in self.claimed_twice.items()]}

    def failure(self) -> SupamoveError | None:
        """A Supabase user that two Stack Auth users claim: which one the data belongs to is the operator's call."""
        if not self.claimed_twice:
            return None
        shown = "; ".join(f"{sid}: {', '.join(map(_claimant, claims))}"
                          for sid, claims in list(self.claimed_twice.items())[:5])
        more = f" and {len(self.claimed_twice) - 5:,} more" if len(self.claimed_twice) > 5 else ""
        written = "" if self.dry_run else "; user-mapping.json was not written"
        count = len(self.claimed_twice)
        return StackAuthError(
            f"{count:,} Supabase user{'s are each' if count > 1 else ' is'} claimed by more than one Stack Auth user "
            f"(server_metadata.supabase_user_id): {shown}{more}{written}",
            fix="keep one Stack Auth user for each, the one user-mapping.json names if the data is imported (delete "
                "the others in the dashboard, or clear their server_metadata.supabase_user_id), then run "
                "`supamove map-users` again")


def _claimant(claim: dict[str, Any]) -> str:
    email = f" {claim['email']}" if claim["email"] else ""
    return f"{claim['stackAuthUserId']}{email}" + (" (in user-mapping.json)" if claim["inMapping"] else "")


@dataclass
class _Matches:
    """The matching so far: Supabase id to mapping entry, and what is left on the Stack Auth side."""

    matched: dict[str, dict[str, Any]]
    by_email: dict[str, list[dict[str, Any]]]  # Stack Auth users with no Supabase id, by their e-mail
    unmatched_stack: list[tuple[str, str | None]]
    claims: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # Supabase id -> the Stack Auth users claiming it
    unverified: set[str] = field(default_factory=set)  # Stack Auth users with no Supabase id and an unverified e-mail
    present: set[str] = field(default_factory=set)  # every Stack Auth user's id, in lower case


def map_users(client: StackAuthClient, datadir: DataDir, dry_run: bool = False,
              progress: Progress | None = None, forget_missing: bool = False) -> MapResult:
    """Rebuild user-mapping.json from the users already in Stack Auth; creates nothing.

    One-to-one, as migrate-users maps: first by the Supabase id kept in server_metadata; then a
    Stack Auth user with none (one who signed up on their own) by its e-mail, to the Supabase user
    who signs in with that e-mail (the oldest live one having it), never to two Supabase users.
    """
    users = load_auth_export(datadir)
    holders = email_holders(users)
    found = _match_by_id(client, users, holders, progress or NullProgress())
    earlier = _earlier_mapping(datadir.user_mapping)
    if earlier is not None and not forget_missing:
        _check_not_all_missing(client, earlier, found.present)
    claimed = _claimed_twice(found, earlier)  # left out of every match below: which one is the operator's call
    unverified = _match_by_email(found, holders, set(claimed))  # ids first, then e-mails for the rest
    kept = _keep_earlier(found, users, earlier, set(claimed), _linked(datadir))
    unmatched = [(u.id, u.normalized_email, _why_unmatched(u, holders, unverified)) for u in users
                 if u.id not in found.matched and u.id not in claimed]
    ordered = [found.matched[u.id] for u in users if u.id in found.matched]
    result = MapResult(ordered, unmatched, found.unmatched_stack, dry_run, kept=kept, claimed_twice=claimed)
    if not dry_run and not claimed:
        mapping = UserMapping.fresh(datadir.user_mapping, client.project_id)
        for entry in ordered:
            mapping.add(entry["supabaseUserId"], entry["stackAuthUserId"], entry["email"], entry["migratedAt"])
        mapping.save()
        result.mapping_path = mapping.path
    return result


def _match_by_id(client: StackAuthClient, users: list[SupabaseUser], holders: dict[str, SupabaseUser],
                 progress: Progress) -> _Matches:
    """Every Stack Auth user read once: matched by its Supabase id, or set aside by its e-mail."""
    by_id = {u.id: u for u in users}
    found = _Matches({}, {}, [])
    progress.start(LABEL, None)
    for stack_user in client.iter_users():
        progress.advance(LABEL)
        found.present.add(str(stack_user["id"]).lower())
        sid = supabase_id_of(stack_user)
        email = normalize_email(stack_user.get("primary_email"))
        if sid in by_id:
            found.claims.setdefault(sid, []).append(stack_user)
            found.matched.setdefault(sid, _mapping_entry(by_id[sid], stack_user))
        elif sid is None and email is not None and email in holders:
            found.by_email.setdefault(email, []).append(stack_user)
        else:
            found.unmatched_stack.append((stack_user["id"], stack_user.get("primary_email")))
        if sid is None and not stack_user.get("primary_email_verified"):  # signed up on its own, unverified
            found.unverified.add(stack_user["id"])
    progress.finish(LABEL)
    return found


def _check_not_all_missing(client: StackAuthClient, earlier: UserMapping, present: set[str]) -> None:
    """The mapping being replaced names users, none of them in this Stack Auth: another Stack Auth holding the same
    project (a staging copy), or every user deleted there. Written over, it would map none of them: only on
    purpose (--forget-missing)."""
    if earlier.none_in(present):
        raise StackAuthError(
            f"none of the {counted(len(earlier.entries), 'Stack Auth user')} {earlier.path} names is in the Stack "
            f"Auth at {client.api_url} (project {client.project_id}): a mapping rebuilt from it would name none "
            "of them", fix="point STACK_AUTH_API_URL at the Stack Auth the users were created in; if they were "
            "deleted there on purpose, run `supamove map-users --forget-missing`")


def _claimed_twice(found: _Matches, earlier: UserMapping | None) -> dict[str, list[dict[str, Any]]]:
    """The Supabase ids more than one Stack Auth user claims, taken out of the matches, with every claimant."""
    claimed = {}
    for sid, claims in found.claims.items():
        if len(claims) > 1:
            del found.matched[sid]
            mapped = earlier.get(sid) if earlier is not None else None
            claimed[sid] = [{"stackAuthUserId": u["id"], "email": u.get("primary_email"), "inMapping": u["id"] == mapped}
                            for u in claims]
    return claimed


def _match_by_email(found: _Matches, holders: dict[str, SupabaseUser], claimed: set[str]) -> set[str]:
    """Each e-mail's Stack Auth users to the Supabase user who signs in with it: the first one only, and only
    one whose e-mail is verified (as migrate-users links). The e-mails only unverified users held."""
    unverified = set()
    for email, candidates in found.by_email.items():
        candidates.sort(key=lambda u: not u.get("primary_email_auth_enabled"))  # the one signing in first
        holder = holders[email]
        trusted = bool(candidates[0].get("primary_email_verified"))  # the one migrate-users would link, or none
        if not trusted:
            unverified.add(email)
        for number, stack_user in enumerate(candidates):
            if trusted and number == 0 and holder.id not in found.matched and holder.id not in claimed:
                found.matched[holder.id] = _mapping_entry(holder, stack_user)
            else:
                found.unmatched_stack.append((stack_user["id"], stack_user.get("primary_email")))
    return unverified


def _earlier_mapping(path: Path) -> UserMapping | None:
    try:
        return UserMapping.load(path) if path.exists() else None
    except SupamoveError:  # a damaged mapping is what map-users rebuilds
        return None


def _linked(datadir: DataDir) -> set[str]:
    """The Supabase users an earlier run linked to a Stack Auth user it did not create (user-sync-state.json)."""
    try:
        state = SyncState.load(datadir.user_sync_state)
    except SupamoveError:  # damaged: no link is known
        return set()
    return {sid for sid in state.users if (state.get(sid) or {}).get("linked")}


def _keep_earlier(found: _Matches, users: list[SupabaseUser], earlier: UserMapping | None, claimed: set[str],
                  linked: set[str]) -> int:
    """The entries of the mapping being replaced whose Stack Auth user is still there and matched by nothing
    else (its Supabase id and e-mail changed in Stack Auth): kept, or a rerun of migrate-users would create
    that user a second time; not a link to a Stack Auth user that has not verified its e-mail (it may be
    someone else's). How many."""
    if earlier is None:
        return 0
    free = {stack_id: email for stack_id, email in found.unmatched_stack}
    kept = 0
    for user in users:
        stack_id = earlier.get(user.id)
        if user.id in found.matched or user.id in claimed or stack_id is None or stack_id not in free \
                or (user.id in linked and stack_id in found.unverified):
            continue
        entry = earlier.entries[user.id]
        found.matched[user.id] = {"supabaseUserId": user.id, "stackAuthUserId": stack_id,
                                  "email": user.normalized_email, "migratedAt": entry.get("migratedAt")}
        del free[stack_id]
        kept += 1
    found.unmatched_stack = list(free.items())
    return kept


def _mapping_entry(user: SupabaseUser, stack_user: dict[str, Any]) -> dict[str, Any]:
    millis = stack_user.get("signed_up_at_millis")
    when = iso(datetime.fromtimestamp(millis / 1000, UTC)) if isinstance(millis, int | float) else None
    return {"supabaseUserId": user.id, "stackAuthUserId": stack_user["id"], "email": user.normalized_email,
            "migratedAt": when}


def _why_unmatched(user: SupabaseUser, holders: dict[str, SupabaseUser], unverified: set[str]) -> str:
    email = user.normalized_email
    later = "; `supamove migrate-users` creates it"
    if email and not EMAIL_RE.match(email) and not user.deleted_at and not user.is_anonymous:
        return "invalid e-mail: no Stack Auth user with its id" + later
    if user.deleted_at:
        return "deleted: no Stack Auth user with its id" + later
    if user.is_anonymous:
        return "anonymous: no Stack Auth user with its id" + later
    holder = holders.get(email) if email else None
    if holder is not None and holder.id != user.id:
        return f"shares its e-mail with {holder.id}: no Stack Auth user with its id" + later
    if email in unverified and holder is not None and holder.id == user.id:
        return ("a Stack Auth user signs in with its e-mail without having verified it: not matched (it may be "
                "someone else's account); verify that e-mail in Stack Auth, or delete that user")
    return "no Stack Auth user with its id or e-mail" + later
