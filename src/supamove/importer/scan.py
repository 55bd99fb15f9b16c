"""The export files checked before anything is loaded: size, SHA-256, rows, JSON, user ids."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from supamove.errors import DataFileError, SupamoveError
from supamove.files import (
    COPY_NULL,
    UUID,
    copy_fields,
    copy_split,
    copy_text,
    digest_mismatch,
    export_again,
    file_sha256,
    parse_row,
    restore_or_export_again,
    size_mismatch,
)
from supamove.importer.model import TablePlan
from supamove.importer.workers import split_lines, started_pool
from supamove.userids import JSON_STRING_UUID
from supamove.words import counted

JSON_STRING = re.compile(JSON_STRING_UUID)
READ_BYTES = 1 << 20  # a block of lines: Python works per block, not per row


SCAN_BYTES = 32 << 20  # a unit of work for the processes that check the files


SCAN_JOBS = min(4, os.cpu_count() or 1)


def check_files(plans: list[TablePlan], problems: list[SupamoveError], jobs: int, full: bool = True,
                unmapped: frozenset[str] = frozenset()) -> None:
    """Each file is the one the export wrote: size, SHA-256, rows, JSON; its user ids are collected, and in
    its JSON columns with user ids, the strings that are one of `unmapped` (Supabase users the mapping lacks).

    Short of `full` (the real run, not --dry-run), only the files holding user ids are read now, to
    check them against the mapping before anything loads: the others are checked as they load (SHA-256,
    rows, JSON, see `line_blocks`), a damaged one failing its own table's transaction, which saves
    reading every file twice.
    """
    present = [p for p in plans if _file_present(p, problems)
               and (full or any(c.user_ids or (c.json_user_ids and unmapped) for c in p.columns))]
    scans = _scan_files(present, jobs, unmapped)
    for plan, (sha, rows, bad_line) in zip(present, scans, strict=True):
        path = plan.path
        if (error := mismatch(plan, sha)) is not None:
            problems.append(error)
        elif bad_line is not None:  # found now, before any table is loaded: the target stays unchanged
            problems.append(bad_line)
        elif rows != plan.rows:
            problems.append(DataFileError(f"{path} has {counted(rows, 'row')}, metadata.json says {plan.rows:,}",
                                          fix=export_again(*plan.key)))


def _file_present(plan: TablePlan, problems: list[SupamoveError]) -> bool:
    path, entry = plan.path, plan.entry
    if not path.exists():
        problems.append(DataFileError(f"{path} not found (table {plan.qualified})", fix=export_again(*plan.key)))
        return False
    if (error := size_mismatch(path, entry.bytes, *plan.key)) is not None:
        problems.append(error)
        return False
    if not os.access(path, os.R_OK):  # found before a --truncate-first empties the target
        problems.append(DataFileError(f"cannot read {path}: permission denied (table {plan.qualified})",
                                      fix="give this user read access (chmod u+r), or run supamove as the user "
                                          "who exported"))
        return False
    return True


@dataclass
class RangeScan:
    """What one byte range of a file holds: its lines, the first bad one, the user ids of each column."""

    lines: int = 0
    bad_index: int | None = None
    bad_line: bytes = b""
    user_ids: dict[str, set[str]] = field(default_factory=dict)
    json_unmapped: dict[str, set[str]] = field(default_factory=dict)


def _scan_files(plans: list[TablePlan], jobs: int,
                unmapped: frozenset[str]) -> list[tuple[str, int, DataFileError | None]]:
    """Hash, count and parse the files: JSON parsed in byte ranges on `jobs` processes, while this one hashes."""
    tasks = [(p.path, start, min(start + SCAN_BYTES, p.path.stat().st_size),
              [(c.name, c.array) for c in p.columns if c.user_ids],
              ([c.name for c in p.columns if c.json_user_ids and unmapped], unmapped),
              p.file_columns if p.entry.format == "copy" else None)
             for p in plans for start in range(0, max(p.path.stat().st_size, 1), SCAN_BYTES)]
    worth = sum(task[2] - task[1] for task in tasks) > SCAN_BYTES and jobs > 1  # a process or more
    if worth and (pool := started_pool(jobs)) is not None:
        with pool:
            scans = pool.map(_scan_range, *zip(*tasks, strict=True))
            digests = [file_sha256(p.path) for p in plans]
            ranges = list(scans)
    else:
        digests = [file_sha256(p.path) for p in plans]
        ranges = [_scan_range(*task) for task in tasks]
    results = []
    for plan, digest in zip(plans, digests, strict=True):
        mine = [r for task, r in zip(tasks, ranges, strict=True) if task[0] == plan.path]
        results.append((digest, *_combine(plan, mine)))
    return results


def _combine(plan: TablePlan, ranges: list[RangeScan]) -> tuple[int, DataFileError | None]:
    """One file's rows and first bad line from its ranges, in order; its user ids go to the plan."""
    rows, bad_line = 0, None
    plan.user_ids = {c.name: set() for c in plan.columns if c.user_ids}
    plan.json_unmapped = {}
    for part in ranges:
        if bad_line is None and part.bad_index is not None:
            number, fix = rows + part.bad_index + 1, restore_or_export_again(*plan.key)
            try:
                if plan.entry.format == "copy":
                    copy_fields(part.bad_line, len(plan.file_columns), plan.path, number, fix)
                else:
                    parse_row(part.bad_line, plan.path, number, fix)
            except DataFileError as exc:
                bad_line = exc
        for name, ids in part.user_ids.items():
            plan.user_ids[name] |= ids
        for name, ids in part.json_unmapped.items():
            plan.json_unmapped.setdefault(name, set()).update(ids)
        rows += part.lines
    return rows, bad_line


def _scan_range(path: Path, start: int, end: int, columns: list[tuple[str, bool]],
                json_columns: tuple[list[str], frozenset[str]] = ([], frozenset()),
                layout: list[str] | None = None) -> RangeScan:
    """Parse the lines that start in [start, end) of the file, collecting user ids (runs in a worker process).
    `layout`: a COPY text file's columns; None for JSON Lines."""
    scan = RangeScan(user_ids={name: set() for name, _ in columns}, json_unmapped={name: set() for name in json_columns[0]})
    with open(path, "rb") as handle:
        if start:
            handle.seek(start - 1)
            handle.readline()  # the line under way at `start` belongs to the range before
        position = handle.tell()
        while position < end and (data := handle.read(min(READ_BYTES, end - position))):
            if not data.endswith(b"\n"):
                data += handle.readline()  # the rest of the last line, which starts in this range
            position += len(data)
            lines = split_lines(data)
            if scan.bad_index is None and layout is not None:
                _check_copy_block(lines, scan, columns, json_columns[1], layout)
            elif scan.bad_index is None:
                _check_block(lines, scan, columns, json_columns[1])
            scan.lines += len(lines)
    return scan


def _check_block(lines: list[bytes], scan: RangeScan, columns: list[tuple[str, bool]],
                 unmapped: frozenset[str] = frozenset()) -> None:
    """Note the block's first bad line, or collect its user ids."""
    try:
        records = list(map(orjson.loads, lines))
        if set(map(type, records)) - {dict}:
            raise TypeError
    except (orjson.JSONDecodeError, TypeError):
        records = []
        for index, line in enumerate(lines):
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                records.append(None)
            if not isinstance(records[-1], dict):
                scan.bad_index, scan.bad_line = scan.lines + index, line
                return
    for name, array in columns:
        ids = scan.user_ids[name]
        values = [v for v in (r.get(name) for r in records) if isinstance(v, str)]
        if array:
            ids.update(m.lower() for v in values for m in UUID.findall(v))
        else:
            ids.update(v.lower() for v in values)
    for name, ids in scan.json_unmapped.items():  # the import's rewrite reads the same strings (convert)
        docs = [v for v in (r.get(name) for r in records) if isinstance(v, str)]
        ids.update(m for v in docs for m in JSON_STRING.findall(v) if m in unmapped)


def _check_copy_block(lines: list[bytes], scan: RangeScan, columns: list[tuple[str, bool]],
                      unmapped: frozenset[str], layout: list[str]) -> None:
    """Note the block's first line of another width than the file's columns, or collect its user ids."""
    rows = []
    for index, line in enumerate(lines):
        if (fields := copy_split(line, len(layout))) is None:
            scan.bad_index, scan.bad_line = scan.lines + index, line
            return
        rows.append(fields)
    for name, array in columns:
        at, ids = layout.index(name), scan.user_ids[name]
        values = [copy_text(f[at]) for f in rows if f[at] != COPY_NULL]
        if array:
            ids.update(m.lower() for v in values for m in UUID.findall(v))
        else:
            ids.update(v.lower() for v in values)
    for name, found in scan.json_unmapped.items():  # the import's rewrite reads the same strings (convert)
        at = layout.index(name)
        found.update(m for f in rows if f[at] != COPY_NULL for m in JSON_STRING.findall(copy_text(f[at]))
                     if m in unmapped)


def line_blocks(path: Path, digest: Any = None, start: int = 0, end: int | None = None) -> Iterator[list[bytes]]:
    """The file's lines (without the newline), in blocks; every byte read goes through `digest` too.

    With `start` and `end` (offsets at line starts), only the lines between them.
    """
    for _, data in file_blocks(path, digest, start, end):
        yield split_lines(data)


def file_blocks(path: Path, digest: Any = None, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """The file in blocks of whole lines, each with its offset; every byte read goes through `digest` too."""
    with open(path, "rb") as handle:
        handle.seek(start)
        offset, left = start, end - start if end is not None else None
        while data := handle.read(READ_BYTES if left is None else min(READ_BYTES, left)):
            if left is None or len(data) < left:
                data += handle.readline()
            if left is not None:
                left -= len(data)
            if digest is not None:
                digest.update(data)  # hashlib lets the loading thread run meanwhile
            yield offset, data
            offset += len(data)


def mismatch(plan: TablePlan, sha: str) -> DataFileError | None:
    """The error for a file whose SHA-256 is not the one metadata.json records, or None."""
    return digest_mismatch(plan.path, sha, plan.entry.sha256, *plan.key)
