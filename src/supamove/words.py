"""Counts in words, for every message and summary: `1 table`, `2 tables`, never `1 tables`."""

from __future__ import annotations


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """`1 user id`, `1,204 user ids`: the number (with thousands separators) and its noun, singular for one.
    `plural` for a noun that does not take an s (`1 entry`, `2 entries`)."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def agree(number: int, one: str, more: str) -> str:
    """The verb that goes with a count: `has` for one, `have` for the rest."""
    return one if number == 1 else more
