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
