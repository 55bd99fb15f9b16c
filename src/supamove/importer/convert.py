"""Exported JSON lines to COPY text, user ids swapped, converted on a thread ahead of the load (a big file's
blocks on worker processes: importer.workers)."""

from __future__ import annotations

import functools
import operator
import queue
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import orjson

from supamove.errors import DataFileError
from supamove.files import (
    COPY_NULL,
    UUID,
    copy_bytes,
    copy_escaped,
    copy_fields,
    copy_split,
    copy_text,
    parse_row,
    restore_or_export_again,
)
from supamove.importer import workers
from supamove.importer.model import ColumnLoad, ImportPlan, Span, TablePlan, Unmapped
from supamove.importer.scan import file_blocks, line_blocks
from supamove.importer.workers import Converter
from supamove.userids import JSON_STRING_UUID

T = TypeVar("T")


PREFETCH = 4  # converted blocks waiting for the target: memory stays flat
JSON_UUID = re.compile(JSON_STRING_UUID)


def copy_blocks(table: TablePlan, plan: ImportPlan, digest: Any = None,
                span: Span | None = None) -> Iterator[tuple[bytes, int]]:
    """The file as COPY text format, in blocks of rows; the file's bytes go through `digest` too.

    With `span`, only the lines of that range of the file.
    """
    start, end = (span.start, span.end) if span else (0, None)
    if table.as_is:  # COPY text to load as it is: the file's own blocks
        for _, data in file_blocks(table.path, digest, start, end):
            yield data, data.count(b"\n")
        return
    convert = _block_converter(table, plan)
    if workers.pooled(table):
        blocks = ((offset, len(data)) for offset, data in file_blocks(table.path, digest, start, end))
        yield from workers.converted_blocks(table, blocks, convert, functools.partial(_lines_before, span))
        return
    rows = 0
    for lines in line_blocks(table.path, digest, start, end):
        yield convert(lines, functools.partial(_lines_before, span, rows)), len(lines)
        rows += len(lines)


def conversion_workers(plan: ImportPlan) -> AbstractContextManager[None]:
    """Worker processes converting the plan's big files while the load lasts (see importer.workers)."""
    return workers.converting(plan, _block_converter)


def _lines_before(span: Span | None, rows: int) -> int:
    """The file's lines before a block that comes `rows` lines into `span` (or into the file)."""
    return rows + (span.lines_before() if span else 0)


def _block_converter(table: TablePlan, plan: ImportPlan) -> Converter:
    """The file's lines to the COPY text the load sends."""
    if table.entry.format == "copy":
        return _copy_converter(table, plan)
    return _json_converter(table, plan)


def _copy_converter(table: TablePlan, plan: ImportPlan) -> Converter:
    """COPY text lines with the columns the target takes, in order, their user ids swapped."""
    width, path, fix = len(table.file_columns), table.path, restore_or_export_again(*table.key)
    picks = [table.file_columns.index(c.name) for c in table.columns]
    swaps = [(i, _field_swapper(c, plan)) for i, c in enumerate(table.columns) if c.user_ids or c.json_user_ids]

    def convert(lines: list[bytes], before: Callable[[], int]) -> bytes:
        text = []
        for number, line in enumerate(lines, 1):
            if (fields := copy_split(line, width)) is None:  # copy_fields names the line
                fields = copy_fields(line, width, path, before() + number, fix)
            row = [fields[i] for i in picks]
            for i, swap in swaps:
                row[i] = swap(row[i])
            text.append(b"\t".join(row))
        text.append(b"")
        return b"\n".join(text)

    return convert


def _field_swapper(column: ColumnLoad, plan: ImportPlan) -> Callable[[bytes], bytes]:
    """A COPY text field with its user ids swapped, as _encoder swaps a JSON value's."""
    if column.user_ids:
        remap = _remapper(plan.mapping, plan.options.unmapped_users, column.array)

        def swap(field: bytes) -> bytes:
            if field == COPY_NULL:
                return field
            new = remap(copy_text(field))
            return COPY_NULL if new is None else copy_bytes(new)
        return swap
    rewrite = _json_rewriter(plan.mapping)
    return lambda field: field if field == COPY_NULL else copy_bytes(rewrite(copy_text(field)))


def _json_converter(table: TablePlan, plan: ImportPlan) -> Converter:
    """JSON lines to COPY text a column at a time; any doubt about a line goes through the per-row converter."""
    getters = [operator.itemgetter(c.name) for c in table.columns]
    encoders = [_column_encoder(c, plan) for c in table.columns]
    convert_row = _row_converter(table, plan)

    def convert(lines: list[bytes], before: Callable[[], int]) -> bytes:
        """`before`: the lines of the file before these, asked for only to name a line in an error."""
        try:
            # One parse of the block as an array: a line holding anything but one object changes the count.
            records = orjson.loads(b"[" + b",".join(lines) + b"]")
            if len(records) != len(lines):
                raise ValueError("not one object per line")
            columns = [enc(list(map(get, records))) for get, enc in zip(getters, encoders, strict=True)]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
            # The per-row converter names the line and the problem.
            text = [convert_row(line, number) for number, line in enumerate(lines, before() + 1)]
        else:
            text = list(map("\t".join, zip(*columns, strict=True))) if columns else [""] * len(records)
        text.append("")
        return "\n".join(text).encode()

    return convert


def _row_converter(table: TablePlan, plan: ImportPlan) -> Callable[[bytes, int], str]:
    encoders = [(c.name, _encoder(c, plan)) for c in table.columns]
    path, fix = table.path, restore_or_export_again(*table.key)

    def convert(line: bytes, number: int) -> str:
        record = parse_row(line, path, number, fix)
        try:
            return "\t".join([enc(record[name]) for name, enc in encoders])
        except KeyError as exc:  # the message names the column: the KeyError would only repeat it
            raise DataFileError(f"{path} line {number} has no value for column {exc.args[0]}", fix=fix) from None
        except (TypeError, AttributeError) as exc:  # which value and type: for the log
            column = next(c for c in table.columns if not _encodes(encoders, c.name, record[c.name]))
            raise DataFileError(f"{path} line {number} has {_json_kind(record[column.name])} in column {column.name}, "
                                f"where the export writes {EXPECTED.get(column.encoding, 'a string')}",
                                fix=fix) from exc

    return convert


EXPECTED = {"number": "an integer", "boolean": "true or false"}


def _encodes(encoders: list[tuple[str, Callable[[Any], str]]], name: str, value: Any) -> bool:
    """Whether the column's encoder takes the value (a line already refused: which of its values did)."""
    try:
        dict(encoders)[name](value)
    except (TypeError, AttributeError):
        return False
    return True


def _json_kind(value: Any) -> str:
    kinds = {bool: "true or false", int: "a number", float: "a number", str: "a string", dict: "an object",
             list: "an array"}
    return kinds.get(type(value), type(value).__name__)


NULL = "\\N"
BOOLEAN = {True: "t", False: "f"}
BOOLEAN_TYPES = {bool, type(None)}
INTEGER_TEXT = b"0123456789-,nul"  # a list of integers and nulls as JSON, less its brackets


def _column_encoder(column: ColumnLoad, plan: ImportPlan) -> Callable[[list[Any]], list[str]]:
    """A column's exported values to COPY text, the same as _encoder gives one value at a time."""
    if column.user_ids or column.json_user_ids:
        one = _encoder(column, plan)
        return lambda values: list(map(one, values))
    if column.encoding == "number":
        return _number_column
    if column.encoding == "boolean":
        return _boolean_column
    return _text_column


def _number_column(values: list[Any]) -> list[str]:
    # orjson writes the whole column's text in one call, a third of the time of str() on each value, and the
    # text shows the types: an integer or a null is written with these characters only, anything else is not.
    text = orjson.dumps(values)[1:-1]
    if text.translate(None, INTEGER_TEXT):
        raise TypeError("not an integer")
    return text.decode().replace("null", NULL).split(",") if values else []


def _boolean_column(values: list[Any]) -> list[str]:
    if not set(map(type, values)) <= BOOLEAN_TYPES:
        raise TypeError("not a boolean")
    return _nulls(values, list(map(BOOLEAN.get, values)))


def _text_column(values: list[Any]) -> list[str]:
    present = [v for v in values if v is not None] if None in values else values
    if not present:
        return [NULL] * len(values)
    joined = "".join(present)  # TypeError on a value that is not a string
    if "\\" in joined or "\n" in joined or "\r" in joined or "\t" in joined:
        return [NULL if v is None else copy_escaped(v) for v in values]
    return _nulls(values, values)


def _nulls(values: list[Any], texts: list[Any]) -> list[str]:
    """`texts`, with \\N where the value is None: counted first, as most columns hold none or only None."""
    nulls = values.count(None)
    if not nulls:
        return texts
    if nulls == len(values):
        return [NULL] * nulls
    return [NULL if v is None else text for v, text in zip(values, texts, strict=True)]


def _encoder(column: ColumnLoad, plan: ImportPlan) -> Callable[[Any], str]:
    """Exported JSON value to COPY text: PostgreSQL's own text form, user ids swapped."""
    if column.user_ids:
        remap = _remapper(plan.mapping, plan.options.unmapped_users, column.array)
        return lambda v: NULL if v is None else _null_or(remap(v))
    if column.json_user_ids:
        rewrite = _json_rewriter(plan.mapping)
        return lambda v: NULL if v is None else copy_escaped(rewrite(v))
    if column.encoding == "number":
        return lambda v: _number_column([v])[0]
    if column.encoding == "boolean":
        return lambda v: _boolean_column([v])[0]
    return lambda v: NULL if v is None else copy_escaped(v)


def _null_or(value: str | None) -> str:
    return NULL if value is None else copy_escaped(value)


def _json_rewriter(mapping: dict[str, str]) -> Callable[[str], str]:
    """JSON text with each string that is a Supabase user id of the mapping (a value or a key, at any depth) as
    its Stack Auth id; other uuids stay, and so does an id inside a longer string (a storage path). Lower case
    only, as Supabase writes its ids: what verify reads back, and counts when left."""
    def rewrite(text: str) -> str:
        return JSON_UUID.sub(lambda m: f'"{mapping.get(m.group(1), m.group(1))}"', text)

    return rewrite


def _remapper(mapping: dict[str, str], unmapped: Unmapped, array: bool) -> Callable[[str], str | None]:
    def one(old: str) -> str | None:
        new = mapping.get(old.lower())
        if new is not None:
            return new
        return old if unmapped != "null" else None

    if not array:
        return one
    return lambda v: UUID.sub(lambda m: one(m.group()) or "NULL", v)


@contextmanager
def prefetched(items: Iterator[T], depth: int = PREFETCH) -> Iterator[Iterator[T]]:
    """`items`, made on a thread of their own up to `depth` ahead: Python converts while the target ingests."""
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _offer(ready, (True, item), stop):
                    return
            _offer(ready, (False, None), stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the consuming thread
            _offer(ready, (False, exc), stop)

    def consume() -> Iterator[T]:
        while True:
            more, item = ready.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item

    worker = threading.Thread(target=produce, name="supamove-convert", daemon=True)
    worker.start()
    try:
        yield consume()
    finally:
        stop.set()
        worker.join()


def _offer(ready: queue.Queue[tuple[bool, Any]], item: tuple[bool, Any], stop: threading.Event) -> bool:
    """Put `item` once there is room, unless the consumer has stopped."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
