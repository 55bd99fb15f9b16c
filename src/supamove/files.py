"""Files written whole or not at all, readable by the owner only."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from supamove.errors import DataFileError, SupamoveError

PRIVATE = 0o600


@contextmanager
def atomic_writer(path: Path, mode: int = PRIVATE) -> Iterator[IO[bytes]]:
    """Write to `path.partial`, fsync, then rename: a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    try:
        with os.fdopen(fd, "wb", buffering=1024 * 1024) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise disk_error(path, exc) from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def disk_error(path: Path, exc: OSError) -> SupamoveError:
    """A failed write as one line: a full disk or quota, a file size limit, or anything else."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SupamoveError(f"no space left on the device writing {path}",
                             fix="free disk space or point --data-dir at a larger disk, then run the same command again")
    if exc.errno == errno.EFBIG:
        return SupamoveError(f"the file size limit stopped writing {path}",
                             fix="raise the limit (ulimit -f unlimited) or point --data-dir at a file system that "
                                 "allows large files, then run the same command again")
    return SupamoveError(f"cannot write {path}: {exc.strerror}", fix="check the path and its permissions")


def write_json(path: Path, data: Any, mode: int = PRIVATE) -> None:
    with atomic_writer(path, mode) as handle:
        handle.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
        handle.write(b"\n")


def read_json(path: Path, produced_by: str) -> Any:
    """Read a JSON file of the data directory; naming the step that makes it when it is missing."""
    if not path.exists():
        raise DataFileError(f"{path} not found", fix=f"run `supamove {produced_by}` first")
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DataFileError(f"{path} is not valid JSON ({exc})",
                            fix=f"restore it or run `supamove {produced_by}` again") from None


def parse_row(line: bytes, path: Path, number: int) -> dict[str, Any]:
    """One row of an exported table file, or a DataFileError naming the file and line."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise DataFileError(f"{path} line {number} is not valid JSON ({exc.msg})",
                            fix="restore the file or run `supamove export --force` to write it again") from None
    if not isinstance(record, dict):
        raise DataFileError(f"{path} line {number} is not a JSON object",
                            fix="restore the file or run `supamove export --force` to write it again")
    return record


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of an exported table file, one at a time."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            yield parse_row(line, path, number)

