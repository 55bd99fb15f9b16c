"""The auth export read back: auth.users and auth.identities rows as typed Supabase users."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from supamove.clock import iso, parse_iso
from supamove.errors import DataFileError
from supamove.files import (
    UUID,
    digest_mismatch,
    export_again,
    file_sha256,
    missing_error,
    read_rows,
    restore_or_export_again,
    size_mismatch,
)
from supamove.metadata import Metadata
from supamove.paths import DataDir
from supamove.words import counted

FAR_FUTURE = datetime.max.replace(tzinfo=UTC)
# The largest integer a JavaScript number holds exactly: Stack Auth's server parses a request's JSON into them.
JS_SAFE_INTEGER = 2**53 - 1
# A double holds every number of 15 significant digits: a shorter run of digits needs no closer look.
_LONG_DIGITS = re.compile(r"\d{16}")


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
    factors: list[dict[str, Any]] = field(default_factory=list, repr=False)  # auth.mfa_factors rows
    # auth.users.email_change: the new address of a change asked for and not yet confirmed ('' or NULL: none).
    email_change: str | None = field(default=None, repr=False)
    # A metadata column's text, by column name, where it holds numbers Stack Auth cannot hold exactly.
    inexact_meta: dict[str, tuple[str, list[str]]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SupabaseUser:
        """One exported auth.users row, its values checked (USERS_SHAPE, by _checked_rows)."""
        return cls(
            id=str(row["id"]), email=row.get("email"), phone=row.get("phone"),
            encrypted_password=row.get("encrypted_password"), email_confirmed_at=row.get("email_confirmed_at"),
            created_at=row.get("created_at"), raw_user_meta_data=jsonb(row.get("raw_user_meta_data")),
            raw_app_meta_data=jsonb(row.get("raw_app_meta_data")), is_anonymous=bool(row.get("is_anonymous")),
            deleted_at=row.get("deleted_at"), banned_until=row.get("banned_until"),
            is_sso_user=bool(row.get("is_sso_user")), email_change=row.get("email_change") or None,
            inexact_meta=_inexact_meta(row))

    @property
    def normalized_email(self) -> str | None:
        return normalize_email(self.email)


@dataclass(frozen=True)
class RowShape:
    """The kinds of value the export writes in the fields of one auth table that supamove reads."""

    uuids: tuple[str, ...]
    texts: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    times: tuple[str, ...] = ()  # those read as moments


USERS_SHAPE = RowShape(("id",), ("email", "phone", "encrypted_password", "email_change"),
                       ("is_anonymous", "is_sso_user"), ("created_at", "deleted_at", "banned_until"))
IDENTITIES_SHAPE = RowShape(("user_id",), ("id", "provider", "provider_id"), (),
                            ("created_at", "updated_at", "last_sign_in_at"))
FACTORS_SHAPE = RowShape(("id", "user_id"), ("factor_type", "status", "secret"), (), ("created_at", "updated_at"))


def _check_row(row: dict[str, Any], shape: RowShape) -> None:
    """ValueError naming the first field whose value is of a kind the export never writes there."""
    for name in shape.uuids:
        if not isinstance(row.get(name), str) or not UUID.fullmatch(row[name]):
            raise ValueError(f"{name} is {_shown(row.get(name))}, not a uuid")
    for name in shape.texts:
        if row.get(name) is not None and not isinstance(row[name], str):
            raise ValueError(f"{name} is {_shown(row[name])}, not text")
    for name in shape.flags:
        if row.get(name) is not None and not isinstance(row[name], bool):
            raise ValueError(f"{name} is {_shown(row[name])}, not true or false")
    for name in shape.times:
        if row.get(name) is not None:
            try:
                parse_ts(row[name])
            except (TypeError, ValueError, AttributeError):
                raise ValueError(f"{name} is {_shown(row[name])}, not a timestamp") from None


def _shown(value: Any) -> str:
    return orjson.dumps(value).decode()[:40]


def jsonb(value: Any) -> Any:
    """A jsonb column's value: export writes PostgreSQL's text of it, a JSON document in a string.
    A number beyond a double's range (jsonb's numeric has none) becomes null, as Stack Auth's server
    (JavaScript) would store it; inexact_numbers finds such numbers."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            try:  # orjson refuses a number a double cannot hold, where the standard library reads it
                return json.loads(value, parse_int=_as_number, parse_float=_as_number)
            except ValueError:
                return value
    return value


def _as_number(text: str) -> int | float | None:
    number = float(text)
    if math.isinf(number):
        return None
    return int(text) if "." not in text and "e" not in text.lower() and abs(number) < 2**63 else number


def _inexact_meta(row: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    """Each metadata column whose text holds numbers Stack Auth would round: its text and those numbers."""
    found = {}
    for name in ("raw_user_meta_data", "raw_app_meta_data"):
        text = row.get(name)
        if isinstance(text, str) and (numbers := inexact_numbers(text)):
            found[name] = (text, numbers)
    return found


def inexact_numbers(text: str) -> list[str]:
    """The numbers of a JSON document (as written) that a JavaScript number does not hold exactly:
    integers beyond 2**53, decimals with more digits than a double keeps, numbers beyond its range."""
    if not _LONG_DIGITS.search(text):
        return []
    found: list[str] = []

    def check(number: str) -> None:
        value = float(number)
        if math.isinf(value) or Decimal(repr(value)) != Decimal(number) or (
                "." not in number and abs(int(number)) > JS_SAFE_INTEGER):
            found.append(number)

    try:
        json.loads(text, parse_int=check, parse_float=check)
    except ValueError:  # not JSON: carried as the text it is
        return []
    return found


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
    return parse_iso(value)


def iso_ts(value: str | None) -> str | None:
    """An exported timestamp as ISO-8601 UTC; infinities (and None) as they are."""
    moment = parse_ts(value)
    if moment is None or moment in (FAR_FUTURE,) or moment.year == 1:
        return value
    return iso(moment, "auto")


def load_auth_export(datadir: DataDir) -> list[SupabaseUser]:
    """The exported auth users with their identities, oldest first; DataFileError when not exported."""
    users_file = datadir.table_file("auth", "users")
    identities_file = datadir.table_file("auth", "identities")
    for path in (users_file, identities_file):
        if not path.exists():
            raise missing_error(path, "export", " (the auth users are read from the export)")
    meta = Metadata.load(datadir, require_complete=False) if datadir.metadata.exists() else None
    if meta is not None:
        _check_digests(datadir, meta)
    users = {}
    for _, row in _checked_rows(users_file, "users", USERS_SHAPE):
        user = SupabaseUser.from_row(row)
        users[user.id] = user
    identities = 0
    for owner, row in _owned_rows(identities_file, "identities", IDENTITIES_SHAPE, users):
        identities += 1
        owner.identities.append({**row, "identity_data": jsonb(row.get("identity_data"))})
    factors = _attach_factors(datadir, users)
    if meta is not None:
        _check_counts(meta, {"users": len(users), "identities": identities, "mfa_factors": factors})
    return sorted(users.values(), key=lambda u: (parse_ts(u.created_at) or FAR_FUTURE, u.id))


def _attach_factors(datadir: DataDir, users: dict[str, SupabaseUser]) -> int:
    """Each user's auth.mfa_factors rows; an export of a Supabase Auth without the table has no file."""
    path = datadir.table_file("auth", "mfa_factors")
    if not path.exists():
        return 0
    count = 0
    for owner, row in _owned_rows(path, "mfa_factors", FACTORS_SHAPE, users):
        count += 1
        owner.factors.append(row)
    return count


def _owned_rows(path: Path, table: str, shape: RowShape,
                users: dict[str, SupabaseUser]) -> Iterator[tuple[SupabaseUser, dict[str, Any]]]:
    """Each row of an auth table that belongs to a user, with that user. The export reads every auth table
    in one snapshot and auth's foreign keys tie each row to a user, so a row of no user is a changed file."""
    for number, row in _checked_rows(path, table, shape):
        owner = users.get(row["user_id"])
        if owner is None:
            raise DataFileError(f"{path} line {number}: user_id {row['user_id']} is no user of auth.users.jsonl",
                                fix=restore_or_export_again("auth", table))
        yield owner, row


def _checked_rows(path: Path, table: str, shape: RowShape) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each row of an auth file with its line number; a value of a kind the export never writes is named by
    its line (read_rows has named a line that is not JSON)."""
    fix = restore_or_export_again("auth", table)
    for number, row in enumerate(read_rows(path, fix=fix), 1):
        try:
            _check_row(row, shape)
        except ValueError as exc:
            raise DataFileError(f"{path} line {number}: {exc}", fix=fix) from None
        yield number, row


def _check_digests(datadir: DataDir, meta: Metadata) -> None:
    """Each auth file is the one the export wrote (size and SHA-256 as metadata.json records them):
    a user's e-mail or password hash changed by hand would otherwise reach Stack Auth."""
    for entry in meta.auth:
        path = datadir.table_file("auth", entry.name)
        if not entry.complete or entry.sha256 is None or not path.exists():
            continue  # an unfinished export is named by _check_counts; a missing file where it is read
        error = size_mismatch(path, entry.bytes, "auth", entry.name) \
            or digest_mismatch(path, file_sha256(path), entry.sha256, "auth", entry.name)
        if error is not None:
            raise error


def _check_counts(meta: Metadata, counts: dict[str, int]) -> None:
    """When metadata.json records the auth tables' row counts, the files must hold that many rows."""
    for entry in meta.auth:
        expected, name = entry.row_count, entry.name
        if name in counts and not entry.complete:  # a kill midway: the files are of two snapshots
            raise DataFileError(f"auth.{name} was not exported completely",
                                fix="run `supamove export --auth-only` again")
        if name in counts and expected is not None and expected != counts[name]:
            raise DataFileError(f"auth.{name}: metadata.json records {counted(expected, 'row')}, the file holds {counts[name]:,}",
                                fix=export_again("auth", name))
