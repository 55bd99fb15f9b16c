"""Files of every user written and read an item at a time: the same bytes as written whole, the same errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from supamove.errors import DataFileError
from supamove.files import read_json_items, write_json, write_json_items

CASES: list[tuple[dict[str, Any], list[Any], bool]] = [
    ({"generatedAt": "2024-01-01T00:00:00Z", "summary": {"total": 2, "nested": [1, {"a": "x\ny"}], "empty": {}}},
     [{"supabaseUserId": "a", "notes": [], "mfaNotCarried": [{"factorId": "f"}], "mfa": None}, 2, "x", [], {}], False),
    ({"formatVersion": 1}, [("id-1", {"sent": {"display_name": "abc"}, "oauthProviders": [["github", "1"]]}),
                            ('a "quoted" id', None), ("id-3", {})], True),
    ({"generatedAt": None}, [], False),
    ({"formatVersion": 1}, [], True),
]


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
