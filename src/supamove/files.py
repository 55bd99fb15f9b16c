"""Files written whole or not at all, readable by the owner only."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import shlex
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from supamove.errors import ConfigError, DataFileError, SupamoveError
from supamove.paths import DATA_DIR_SETTING

# A uuid's text form, in either case (uuids ignore case).
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

PRIVATE = 0o600
PARTIAL = ".partial"  # a file being written; renamed over its final name once whole
EXPORT_AGAIN = "run `supamove export --force` to write it again"
RESTORE_OR_EXPORT_AGAIN = f"restore the file or {EXPORT_AGAIN}"


def export_command(schema: str, table: str) -> str:
    """The command that exports one table again and keeps every other file:
    `supamove export --force --schema billing --tables billing.invoices`."""
    pattern = re.sub(r"([*?\[])", r"[\1]", f"{schema}.{table}")  # the name itself, not a shell pattern
    option = "" if schema in ("public", "auth") else f" --schema {shlex.quote(schema)}"
    return f"supamove export --force{option} --tables {shlex.quote(pattern)}"


def export_again(schema: str, table: str) -> str:
    """The fix for one damaged or missing table file."""
    return f"run `{export_command(schema, table)}` to write it again"


def restore_or_export_again(schema: str, table: str) -> str:
    return f"restore the file or {export_again(schema, table)}"


READ_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_BYTES):
            digest.update(chunk)  # hashlib lets other threads run meanwhile
    return digest.hexdigest()


def size_mismatch(path: Path, recorded: int | None, schema: str, table: str) -> DataFileError | None:
    """The error for a file shorter than metadata.json records (a longer one fails its SHA-256), or None."""
    size = path.stat().st_size
    if size >= (recorded or 0):
        return None
    return DataFileError(f"{path} is {size:,} bytes, metadata.json records {recorded:,}: the file was cut short "
                         f"or changed (table {schema}.{table})", fix=export_again(schema, table))


def digest_mismatch(path: Path, sha: str, recorded: str | None, schema: str, table: str) -> DataFileError | None:
    """The error for a file whose SHA-256 is not the one metadata.json records, or None."""
    if sha == recorded:
        return None
    return DataFileError(
        f"{path} does not match metadata.json: SHA-256 {sha[:12]}… instead of {str(recorded)[:12]}…",
        fix=f"the file was changed or damaged: {export_again(schema, table)}")


def partial_path(path: Path) -> Path:
    """`metadata.json.partial` for `metadata.json`: where `atomic_writer` writes before the rename."""
    return path.with_name(path.name + PARTIAL)


def remove_partials(folder: Path) -> None:
    """Delete the half-written files a killed run left in `folder`."""
    for stale in folder.glob("*" + PARTIAL):
        stale.unlink()


@contextmanager
def atomic_writer(path: Path, mode: int = PRIVATE) -> Iterator[IO[bytes]]:
    """Write to `path.partial`, fsync, then rename: a reader never sees half a file."""
    partial = partial_path(path)
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


def write_json_items(path: Path, head: dict[str, Any], key: str, items: Iterable[Any] | Iterable[tuple[str, Any]],
                     named: bool = False, mode: int = PRIVATE) -> None:
    """The same bytes as `write_json(path, {**head, key: list(items)})` (with `named`, items are (name, value)
    pairs and `key` holds an object), written an item at a time: a file of every user never whole in memory."""
    opening, closing = (b"{", b"}") if named else (b"[", b"]")
    with atomic_writer(path, mode) as handle:
        handle.write(orjson.dumps(head, option=orjson.OPT_INDENT_2)[:-2] if head else b"{\n")
        handle.write((b",\n  " if head else b"  ") + orjson.dumps(key) + b": " + opening)
        first = True
        for item in items:
            name, value = item if named else (None, item)
            handle.write((b"\n    " if first else b",\n    ") + (orjson.dumps(name) + b": " if named else b""))
            # JSON text holds no raw newline but between values: each line indented two levels deeper.
            handle.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n    "))
            first = False
        handle.write(closing if first else b"\n  " + closing)
        handle.write(b"\n}\n")


def missing_error(path: Path, produced_by: str, why: str = "") -> DataFileError:
    """A file an earlier step writes is not there: that step has not run, or --data-dir names another directory
    (a mistyped one: "run export first" alone sent the operator to export again into it)."""
    return DataFileError(f"{path} not found{why}", fix=f"run `supamove {produced_by}` first, or, if it ran, set "
                                                       "--data-dir (or MIGRATION_DATA_DIR) to the directory it wrote")


def read_json(path: Path, produced_by: str, *, fix: str | None = None, missing_ok: bool = False) -> Any:
    """A JSON file of the data directory, or a DataFileError naming the file and the fix.

    A missing file is None with `missing_ok`, else an error naming the step that makes it; a damaged
    one is an error with `fix` (by default: restore it or run that step again).
    """
    if not path.exists():
        if missing_ok:
            return None
        raise missing_error(path, produced_by)
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DataFileError(f"{path} is not valid JSON ({exc})",
                            fix=fix or f"restore it or run `supamove {produced_by}` again") from exc


def read_json_items(path: Path, key: str, produced_by: str, *, named: bool = False, fix: str | None = None,
                    missing_ok: bool = False) -> tuple[Any, Iterator[Any] | None] | None:
    """A file `write_json_items` wrote, read an item at a time: (the other keys, an iterator over the items
    of `key`, with `named` (name, value) pairs), or None for a missing file with `missing_ok`. The iterator
    is None when `key` holds no such list (or object). A file laid out otherwise (edited by hand), or smaller
    than WHOLE_BELOW, is read whole; errors are read_json's.
    """
    opening = b"  " + orjson.dumps(key) + (b": {" if named else b": [")
    head = _layout(path, opening) if _size(path) >= WHOLE_BELOW else None
    if head is not None:
        return head, _items(path, opening, named, produced_by, fix)
    data = read_json(path, produced_by, fix=fix, missing_ok=missing_ok)
    if data is None:
        return None
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, dict if named else list):
        return data, None
    del data[key]
    return data, iter(items.items()) if isinstance(items, dict) else iter(items)


# A file smaller than this is parsed whole, in one orjson call: the same head and items as read an item at a time,
# a few times faster (each run of migrate-users, import and verify reads the mapping: 4,000 users' in 3 ms, not
# 15). Its values held whole take about five times its size, 5 MB at most (at 8 MB, `migrate` with 12,000 users
# peaked 10 to 20 MB higher): a larger file (a million users) is read an item at a time, its memory flat.
WHOLE_BELOW = 1 << 20


def _size(path: Path) -> int:
    """The file's size in bytes; -1 for no file (read_json says what is missing)."""
    return path.stat().st_size if path.exists() else -1


def _layout(path: Path, opening: bytes) -> dict[str, Any] | None:
    """The keys before the items when the file has write_json_items' layout (checked in one pass, the
    items not parsed), else None."""
    head: list[bytes] = []
    with open(path, "rb") as handle:
        if handle.readline() != b"{\n":
            return None
        for line in handle:
            if line.startswith(opening):
                break
            head.append(line)
        else:
            return None
        rest = line[len(opening):]
        if rest == (b"}" if opening.endswith(b"{") else b"]") + b"\n":
            last = b""  # no items
        elif rest != b"\n" or (last := _item_lines(handle, opening)) is None:  # type: ignore[assignment]
            return None
        if last.endswith(b",\n") or handle.readline() != b"}\n" or handle.read(1):
            return None
    try:
        head_keys: dict[str, Any] = orjson.loads(b"{" + b"".join(head) + b'"": null}')
    except orjson.JSONDecodeError:
        return None
    del head_keys[""]
    return head_keys


def _item_lines(handle: IO[bytes], opening: bytes) -> bytes | None:
    """Past the items to their closing line: the items' last line, or None when a line is out of place."""
    closing = b"  " + (b"}" if opening.endswith(b"{") else b"]") + b"\n"
    previous = b""
    for line in handle:
        if line == closing:
            return previous
        if not line.startswith(b"    ") or (_starts_item(line) and previous and not previous.endswith(b",\n")):
            return None
        previous = line
    return None


def _starts_item(line: bytes) -> bool:
    """Whether a line inside the items begins one: indented by exactly four spaces, no closing bracket."""
    return line[4:5] not in (b" ", b"}", b"]")


def _items(path: Path, opening: bytes, named: bool, produced_by: str, fix: str | None) -> Iterator[Any]:
    """The items of a file `_layout` accepted, parsed a batch of lines (about ITEM_BATCH bytes) at a time."""
    with open(path, "rb") as handle:
        for line in handle:
            if line.startswith(opening):
                break
        pending: list[bytes] = []
        while lines := handle.readlines(ITEM_BATCH):
            if (end := _items_end(lines)) is not None:  # the closing line: the items are all read
                yield from _parsed(b"".join(pending + lines[:end]).rstrip(b",\n"), named, path, produced_by, fix)
                return
            pending += lines
            cut = next((i for i in range(len(pending) - 1, 0, -1) if _starts_item(pending[i])), 0)
            if cut:  # the lines before the last item's first: whole items
                yield from _parsed(b"".join(pending[:cut]).rstrip(b",\n"), named, path, produced_by, fix)
                del pending[:cut]


ITEM_BATCH = 1 << 20


def _items_end(lines: list[bytes]) -> int | None:
    """Where the items' closing line is among `lines` (not indented by four spaces), if it is."""
    return next((i for i, line in enumerate(lines) if not line.startswith(b"    ")), None)


def _parsed(text: bytes, named: bool, path: Path, produced_by: str, fix: str | None) -> Iterator[Any]:
    """Items (one or more, separated by commas) parsed in one call."""
    try:
        value = orjson.loads(b"{" + text + b"}" if named else b"[" + text + b"]")
    except orjson.JSONDecodeError:
        read_json(path, produced_by, fix=fix)  # the error naming the file, as when it is read whole
        raise DataFileError(f"{path} is not laid out as supamove writes it",
                            fix=fix or f"restore it or run `supamove {produced_by}` again") from None
    yield from value.items() if named else value


def json_list(data: Any, key: str, path: Path, fix: str) -> list[Any]:
    """`data[key]` of a file read by `read_json`, or a DataFileError when it is not a list there."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataFileError(f"{path} has no \"{key}\" list", fix=fix)
    return data[key]  # type: ignore[no-any-return]


def parse_row(line: bytes, path: Path, number: int, fix: str = RESTORE_OR_EXPORT_AGAIN) -> dict[str, Any]:
    """One row of an exported table file, or a DataFileError naming the file and line."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise DataFileError(f"{path} line {number} is not valid JSON ({exc.msg})",
                            fix=fix) from exc
    if not isinstance(record, dict):
        raise DataFileError(f"{path} line {number} is not a JSON object", fix=fix)
    return record


# COPY's text format (docs/files.md): fields split by tabs, \N for NULL, and a backslash before a backslash,
# a line break, a tab or a carriage return. COPY writes \b, \f and \v too, and reads octal and \x escapes.
COPY_NULL = b"\\N"
COPY_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
COPY_ESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def copy_split(line: bytes, width: int) -> list[bytes] | None:
    """A COPY text line's fields, or None when it holds another number than `width` (a table of no columns
    has an empty line a row)."""
    fields = line.split(b"\t") if width else ([line] if line else [])
    return fields if len(fields) == width else None


def copy_fields(line: bytes, width: int, path: Path, number: int, fix: str = RESTORE_OR_EXPORT_AGAIN) -> list[bytes]:
    """One line of a COPY text file as its `width` fields, or a DataFileError naming the file and line."""
    fields = copy_split(line, width)
    if fields is None:
        count = len(line.split(b"\t")) if width or line else 0
        raise DataFileError(f"{path} line {number} has {count} fields, the export writes {width} (one a column)",
                            fix=fix)
    return fields


def copy_text(field: bytes) -> str:
    """A field's value (not \\N) as text: COPY's escapes undone. Bytes that are not UTF-8 (a damaged file) are
    kept as surrogates: copy_bytes gives them back as they were, for the target to refuse."""
    text = field.decode(errors="surrogateescape")
    return COPY_ESCAPE.sub(_unescaped, text) if "\\" in text else text


def _unescaped(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] == "x" and len(code) > 1:
        return chr(int(code[1:], 16))
    if code[0] in "01234567":
        return chr(int(code, 8) & 0xFF)
    return COPY_ESCAPED.get(code, code)


def copy_bytes(text: str) -> bytes:
    """Text as a COPY text field's bytes: copy_text undone."""
    return copy_escaped(text).encode(errors="surrogateescape")


def copy_escaped(text: str) -> str:
    """Text as a COPY text field (the escapes COPY needs on input)."""
    if "\\" in text or "\n" in text or "\r" in text or "\t" in text:
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return text


def read_rows(path: Path, skip_damaged: bool = False, fix: str = RESTORE_OR_EXPORT_AGAIN) -> Iterator[dict[str, Any]]:
    """The rows of a JSON-lines file, one at a time; a damaged line is a DataFileError, or with
    `skip_damaged` (a journal whose last line a crash cut short) passed over."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                row = parse_row(line, path, number, fix)
            except DataFileError:
                if skip_damaged:
                    continue
                raise
            yield row



def writable_error(path: Path, what: str, setting: str, exc: OSError) -> ConfigError:
    """The one-line error for a data directory or log file that cannot be written."""
    reason = exc.strerror.lower() if exc.strerror else type(exc).__name__
    if exc.errno == errno.EACCES or exc.errno == errno.EPERM:
        fix = f"make it writable by this user (chmod u+w), or set {setting} to a path you can write"
    else:  # a read-only file system, a missing or odd parent (/proc): no chmod mends it
        fix = f"set {setting} to a path on a writable disk"
    return ConfigError(f"cannot write the {what} {path}: {reason}", fix=fix)


def check_can_create(path: Path, what: str, setting: str) -> None:
    """A path that does not exist yet could be created: a folder made and removed in its nearest existing one."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".supamove-check-", dir=folder))
    except OSError as exc:
        raise writable_error(path, what, setting, exc) from None


ORPHANS_END_SECONDS = 10.0


def _locked(fd: int, wait: float = 0.0) -> bool:
    """Whether this process now holds the lock, trying for up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _ended(holder: str) -> bool:
    """Whether the command the lock file names (`... (process N)`) is no longer running."""
    found = re.search(r"\(process (\d+)\)", holder)
    if found is None:
        return False
    try:
        os.kill(int(found.group(1)), 0)  # PermissionError: another user's process, running
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def lock_data_dir(lock: Path, command: str, read_only: bool = False) -> int:
    """Hold the data directory's lock for this process (its descriptor); a SupamoveError naming the holder.

    `read_only` (a dry run in a directory it cannot write): the existing lock file is held without naming
    this command in it (flock needs no write access), so a command writing there is still found."""
    try:
        fd = os.open(lock, os.O_RDONLY) if read_only else os.open(lock, os.O_RDWR | os.O_CREAT, PRIVATE)
    except OSError as exc:
        raise writable_error(lock.parent, "data directory", DATA_DIR_SETTING, exc) from None
    if not _locked(fd):
        holder = os.read(fd, 4096).decode(errors="replace").strip() or "another supamove command"
        # A command killed a moment ago: its worker processes, which share the lock, are being ended
        # by the kernel with it. The rerun waits for them rather than refusing.
        if not (_ended(holder) and _locked(fd, wait=ORPHANS_END_SECONDS)):
            os.close(fd)
            raise SupamoveError(f"the data directory {lock.parent} is in use by {holder}",
                                fix="wait for that command to finish (or stop it), then run this one again")
    if not read_only:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"`supamove {command}` (process {os.getpid()})\n".encode(), 0)  # from the start: it may have been read
    return fd


@dataclass
class SavePacer:
    """When a file rewritten in batches (the user mapping, the sync state) is due: every 1,000 changes or 2 s,
    but never sooner than 20 times as long as the last rewrite took.

    A rewrite costs the whole file, so without that bound the rewrites of a run creating n users would
    cost n squared: at 100,000 users, each rewrite of the sync state takes most of a second. With it, they
    take at most a twentieth of the run. The journals keep what happened in between.

    Callers hold their own lock around it.
    """

    every: int = 1000
    seconds: float = 2.0
    patience: float = 20.0
    unsaved: int = 0
    saved_at: float = field(default_factory=time.monotonic)
    cost: float = 0.0  # seconds the last rewrite took

    def changed(self) -> None:
        self.unsaved += 1

    def due(self) -> bool:
        """Enough changes, or enough time since the last save, to be worth a rewrite."""
        if not self.unsaved:
            return False
        elapsed = time.monotonic() - self.saved_at
        return elapsed >= self.cost * self.patience and (self.unsaved >= self.every or elapsed >= self.seconds)

    def saved(self, started: float) -> None:
        """The rewrite begun at `started` (time.monotonic()) is on disk."""
        self.saved_at = time.monotonic()
        self.unsaved, self.cost = 0, self.saved_at - started
