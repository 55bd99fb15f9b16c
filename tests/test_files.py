"""Files of every user written and read an item at a time: the same bytes as written whole, the same errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from supamove import files
from supamove.errors import DataFileError, SupamoveError
from supamove.files import read_json_items, write_json, write_json_items
from supamove.users.sync import SyncState

CASES: list[tuple[dict[str, Any], list[Any], bool]] = [
    ({"generatedAt": "2024-01-01T00:00:00Z", "summary": {"total": 2, "nested": [1, {"a": "x\ny"}], "empty": {}}},
     [{"supabaseUserId": "a", "notes": [], "mfaNotCarried": [{"factorId": "f"}], "mfa": None}, 2, "x", [], {}], False),
    ({"formatVersion": 1}, [("id-1", {"sent": {"display_name": "abc"}, "oauthProviders": [["github", "1"]]}),
                            ('a "quoted" id', None), ("id-3", {})], True),
    ({"generatedAt": None}, [], False),
    ({"formatVersion": 1}, [], True),
]


@pytest.fixture(params=["streamed", "parsed whole"])
def reading(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """read_json_items both ways: an item at a time (as a file of WHOLE_BELOW bytes or more), and parsed whole (a
    smaller one): the same head, items and errors."""
    if request.param == "streamed":
        monkeypatch.setattr(files, "WHOLE_BELOW", 0)
    return str(request.param)


@pytest.mark.usefixtures("reading")
@pytest.mark.parametrize(("head", "items", "named"), CASES)
def test_a_file_written_an_item_at_a_time_is_the_file_written_whole(tmp_path: Path, head: dict[str, Any],
                                                                     items: list[Any], named: bool) -> None:
    whole, streamed = tmp_path / "whole.json", tmp_path / "streamed.json"
    write_json(whole, {**head, "users": dict(items) if named else items})
    write_json_items(streamed, head, "users", iter(items), named=named)
    assert streamed.read_bytes() == whole.read_bytes()
    assert streamed.stat().st_mode & 0o777 == 0o600
    found = read_json_items(streamed, "users", "migrate-users", named=named)
    assert found is not None and found[0] == head and list(found[1] or []) == items
    # Laid out otherwise (compacted by another tool): read whole, the same values.
    whole.write_bytes(orjson.dumps({**head, "users": dict(items) if named else items}))
    found = read_json_items(whole, "users", "migrate-users", named=named)
    assert found is not None and found[0] == head and list(found[1] or []) == items


@pytest.mark.usefixtures("reading")
def test_a_damaged_file_read_an_item_at_a_time_is_the_same_error_as_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "user-sync-state.json"
    write_json_items(path, {"formatVersion": 1}, "users", [("a", {"x": 1}), ("b", {"y": [2]})], named=True)
    text = path.read_bytes()
    for damaged in (text[:-3], text[: len(text) // 2], text.replace(b"},", b"}", 1), b""):
        path.write_bytes(damaged)
        with pytest.raises(DataFileError, match=r"user-sync-state.json is not valid JSON .*\(fix: restore it or "
                                                r"run `supamove migrate-users` again\)"):
            found = read_json_items(path, "users", "migrate-users", named=True)
            list(found[1] or []) if found else None
    path.write_bytes(b'{"users": [1]}')
    assert read_json_items(path, "users", "migrate-users", named=True) == ({"users": [1]}, None)
    assert read_json_items(tmp_path / "missing.json", "users", "migrate-users", missing_ok=True) is None


@pytest.mark.usefixtures("reading")
@pytest.mark.parametrize("named", [False, True])
def test_items_are_read_back_across_batches_and_past_an_item_bigger_than_a_batch(tmp_path: Path, named: bool) -> None:
    items: list[Any] = [{"supabaseUserId": f"user-{n}", "email": f"u{n}@example.com", "notes": [n, None]}
                        for n in range(20_000)]
    items.insert(7_000, {"big": "x" * (3 << 20), "lines": list(range(50_000))})  # several batches on its own
    pairs = [(f"id-{n}", item) for n, item in enumerate(items)]
    path = tmp_path / "user-sync-state.json"
    write_json_items(path, {"formatVersion": 1}, "users", iter(pairs if named else items), named=named)
    assert path.stat().st_size > 6 << 20  # six batches of a megabyte
    found = read_json_items(path, "users", "migrate-users", named=named)
    assert found is not None and list(found[1] or []) == (pairs if named else items)


def test_only_a_file_smaller_than_the_threshold_is_parsed_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of a million users is never held whole: from WHOLE_BELOW bytes on, it is read an item at a time."""
    path = tmp_path / "user-mapping.json"
    write_json_items(path, {"generatedAt": None}, "mappings", [{"n": n} for n in range(100)])
    parsed_whole: list[Path] = []
    read_json = files.read_json
    monkeypatch.setattr(files, "read_json", lambda path, *args, **kwargs: parsed_whole.append(path)
                        or read_json(path, *args, **kwargs))
    for threshold, whole in ((path.stat().st_size + 1, [path]), (path.stat().st_size, [])):
        monkeypatch.setattr(files, "WHOLE_BELOW", threshold)
        parsed_whole.clear()
        found = read_json_items(path, "mappings", "map-users")
        assert found is not None and list(found[1] or []) == [{"n": n} for n in range(100)]
        assert parsed_whole == whole


def test_a_rewrite_of_every_user_waits_twenty_times_as_long_as_the_last_one_took(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pacer = files.SavePacer()
    clock = [pacer.saved_at]
    monkeypatch.setattr(files.time, "monotonic", lambda: clock[0])
    assert not pacer.due()  # nothing changed
    pacer.changed()
    clock[0] += 2.0
    assert pacer.due()  # 2 s since the last save
    pacer.saved(started=clock[0] - 0.5)  # a rewrite of half a second: the next waits 10 s
    for _ in range(5000):
        pacer.changed()
    clock[0] += 9.9
    assert not pacer.due()
    clock[0] += 0.1
    assert pacer.due()
    pacer.saved(started=clock[0] - 0.01)  # a quick one: every 1,000 changes again
    for _ in range(999):
        pacer.changed()
    clock[0] += 0.5
    assert not pacer.due()
    pacer.changed()
    assert pacer.due()


def test_the_sync_state_holds_a_user_a_line_and_reads_back_the_same(tmp_path: Path) -> None:
    path = tmp_path / "user-sync-state.json"
    state = SyncState(path)
    for n in range(3):
        state.record(f"id-{n}", f"stack-{n}", {"display_name": f"f{n}"}, {"has_password": "h"}, revision=n,
                     oauth=[["github", str(n)]])
    state.save()
    lines = path.read_bytes().splitlines()
    assert [line[:10] for line in lines[4:7]] == [b'    "id-0"', b'    "id-1"', b'    "id-2"']
    assert orjson.loads(path.read_bytes())["users"]["id-2"]["oauthProviders"] == [["github", "2"]]
    assert SyncState.load(path).users == state.users
    # A state written a value over many lines (by supamove before, or by hand) reads the same.
    write_json(path, orjson.loads(path.read_bytes()))
    assert len(path.read_bytes().splitlines()) > 20
    assert SyncState.load(path).users == state.users


def test_a_lock_left_to_the_workers_of_a_killed_command_is_waited_for_not_refused(tmp_path: Path) -> None:
    lock = tmp_path / "supamove.lock"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(f"`supamove migrate` (process {gone.stdout.strip()})\n")  # killed: no such process now
    # Its worker process still holds the lock for a moment (the kernel is ending it).
    worker = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1]); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(1)", str(lock)],
                              stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None and worker.stdout.readline() == "held\n"
    started = time.monotonic()
    fd = files.lock_data_dir(lock, "migrate")
    assert 0.3 < time.monotonic() - started < files.ORPHANS_END_SECONDS
    assert lock.read_text().startswith("`supamove migrate` (process ")
    worker.wait()

    # A command still running is refused at once, as before.
    (tmp_path / "busy.lock").write_text("")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; f = open(sys.argv[1], 'r+'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); f.truncate(0); "
                               "f.write(f'`supamove import` (process {os.getpid()})'); f.flush(); "
                               "print('held', flush=True); time.sleep(5)", str(tmp_path / "busy.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with pytest.raises(SupamoveError, match=rf"is in use by `supamove import` \(process {holder.pid}\)"):
            files.lock_data_dir(tmp_path / "busy.lock", "export")
        assert time.monotonic() - started < 0.3
    finally:
        holder.kill()
        holder.wait()
        os.close(fd)


def test_a_copy_text_field_reads_as_its_value_and_writes_back_as_it_was() -> None:
    """The import decodes only the fields whose user ids it swaps: every escape COPY writes is undone, and a
    field written back is the bytes it read, even bytes that are not UTF-8 (a damaged file, for the target
    to refuse, not for the import to stop on with a traceback)."""
    field = b"a\\\\b\\tc\\nd\\re\\bf\\fg\\vh \\101\\x42 \xe9"
    assert files.copy_text(field) == "a\\b\tc\nd\re\bf\fg\vh AB \udce9"
    assert files.copy_bytes(files.copy_text(b"a\\\\b\\tc\\nd\\re \xe9")) == b"a\\\\b\\tc\\nd\\re \xe9"
    assert files.copy_fields(b"1\t\\N\tx", 3, Path("t.copy"), 7) == [b"1", b"\\N", b"x"]
    with pytest.raises(files.DataFileError, match=r"^t.copy line 7 has 2 fields, the export writes 3"):
        files.copy_fields(b"1\tx", 3, Path("t.copy"), 7)
