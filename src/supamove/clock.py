"""Timestamps as every supamove file writes them: ISO-8601 in UTC, with a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime, timespec: str = "seconds") -> str:
    """`2026-01-23T10:05:00Z`; `timespec="auto"` keeps the microseconds when there are any."""
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def now_iso() -> str:
    """Now, to the microsecond: `2026-01-23T10:05:00.123456Z`."""
    return iso(datetime.now(UTC), "auto")


def parse_iso(value: str) -> datetime:
    """An ISO-8601 timestamp (`Z` or an offset); one without a zone is taken as UTC."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def age(moment: datetime, now: datetime | None = None) -> str:
    """How long ago `moment` was, roughly: `40 s`, `12 min`, `3 h`, `2 days`."""
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size * (2 if unit == "days" else 1):
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
