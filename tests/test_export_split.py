"""A table larger than --split-tables-larger-than is read as block ranges at once, from the one snapshot,
and written as the same single file an unsplit export writes."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import orjson
import pytest
from conftest import (
    BIG_FILE,
    BIG_ROWS,
    EDGE,
    entries,
    error_line,
    flat,
    kill_when,
    make_big_table,
    metadata,
    tmpfs,
    wait_until,
    write_mapping,
)

from supamove import export
from supamove.export import block_ranges

SPLIT = ("--split-tables-larger-than", "1")  # fault_big (about 20 MB) becomes --jobs x 4 ranges


def ids(path: Path) -> list[int]:
    return [int(line.split(b"\t", 1)[0]) for line in path.read_bytes().splitlines()]


def test_block_ranges_cover_every_block_once() -> None:
    parts = block_ranges(10, 3)
    assert [(p.number, p.count, p.start, p.end) for p in parts] == [(1, 3, 0, 3), (2, 3, 3, 6), (3, 3, 6, None)]
    assert [p.condition().as_string(None) for p in parts] == [
        "ctid < '(3,0)'::tid", "ctid >= '(3,0)'::tid AND ctid < '(6,0)'::tid", "ctid >= '(6,0)'::tid"]
    assert len(block_ranges(2, 8)) == 2  # never more ranges than blocks


def test_a_split_table_is_exported_as_one_whole_file_and_loads(cli, dbs, data_dir: Path) -> None:
    make_big_table(dbs)
    plan = cli("export", *EDGE, *SPLIT, "--dry-run", "--json")
    assert plan.exit_code == 0, plan.output
    parts = {f"{t['schema']}.{t['table']}": t["parts"] for t in orjson.loads(plan.stdout)["tables"]}
    assert parts["public.fault_big"] == 8 and {n for name, n in parts.items() if name != "public.fault_big"} == {1}
    never = cli("export", *EDGE, "--split-tables-larger-than", "0", "--dry-run", "--json")
    assert {t["parts"] for t in orjson.loads(never.stdout)["tables"]} == {1}  # 0: no table is split
    shown = cli("export", *EDGE, *SPLIT, "--dry-run")
    assert "public.fault_big: read as 8 block ranges at once (--split-tables-larger-than)" in flat(shown.output)

    result = cli("export", *EDGE, *SPLIT)
    assert result.exit_code == 0, result.output
    path = data_dir / BIG_FILE
    entry = entries(data_dir)["public.fault_big"]
    assert entry["complete"] and entry["rowCount"] == BIG_ROWS and entry["bytes"] == path.stat().st_size
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ids(path) == list(range(1, BIG_ROWS + 1))  # block order: the rows as one scan reads them
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(data_dir.rglob("*.partial"))
    with dbs.source() as conn, conn.cursor() as cur:  # the same bytes as PostgreSQL's own single scan writes
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'")
        with cur.copy("COPY (SELECT * FROM public.fault_big ORDER BY id) TO STDOUT") as copy:
            expected = b"".join(bytes(chunk) for chunk in copy)
    assert path.read_bytes() == expected

    write_mapping(dbs, data_dir)
    assert cli("import").exit_code == 0
    checked = cli("verify", "--tables", "fault_big")
    assert checked.exit_code == 0, checked.output


def test_a_split_table_reads_the_snapshot_and_a_killed_run_starts_it_again(cli, dbs, data_dir: Path) -> None:
    make_big_table(dbs)
    process = cli.process("export", *EDGE, *SPLIT, "--jobs", "1")
    ranges = data_dir / "tables"
    kill_when(process, lambda: wait_until(lambda: (ranges / "public.fault_big.copy.2.partial").exists(),
                                          "the second range's file", process))
    assert not entries(data_dir)["public.fault_big"]["complete"]
    # the first range, whole (on its own, or already the start of the table's file): left for the rerun to remove
    assert any((ranges / name).exists() for name in ("public.fault_big.copy.partial", "public.fault_big.copy.1.partial"))
    for number in (3, 4):  # begun before the kill landed: the rerun's own third file is the one to wait for
        (ranges / f"public.fault_big.copy.{number}.partial").unlink(missing_ok=True)

    process = cli.process("export", *EDGE, *SPLIT, "--jobs", "1")  # one at a time: the ranges in order
    wait_until(lambda: (ranges / "public.fault_big.copy.3.partial").exists(), "the third range's file", process)
    with dbs.source() as conn:  # after the snapshot: rows added at the end, rows moved by an update, rows gone
        conn.execute(f"INSERT INTO public.fault_big SELECT i, 'late', now() FROM generate_series({BIG_ROWS + 1}, "
                     f"{BIG_ROWS + 5000}) i")
        conn.execute("UPDATE public.fault_big SET payload = 'moved' WHERE id <= 5000")
        conn.execute("DELETE FROM public.fault_big WHERE id > 145000")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert ids(data_dir / BIG_FILE) == list(range(1, BIG_ROWS + 1))
    assert b"moved" not in (data_dir / BIG_FILE).read_bytes()
    assert not list(data_dir.rglob("*.partial"))


def test_ranges_are_joined_the_same_where_the_kernel_cannot_copy_them(cli, dbs, data_dir: Path, monkeypatch) -> None:
    """A system without copy_file_range for these files (or one that stops after a part): through Python."""
    real = os.copy_file_range
    calls: list[int] = []

    def copies_once_then_fails(*args: int) -> int:
        calls.append(args[2])
        if len(calls) > 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(args[0], args[1], 1000, *args[3:])  # a part copied before the failure: overwritten

    monkeypatch.setattr(os, "copy_file_range", copies_once_then_fails)
    make_big_table(dbs)
    result = cli("export", *EDGE, *SPLIT)
    assert result.exit_code == 0, result.output
    assert len(calls) > 1
    path = data_dir / BIG_FILE
    entry = entries(data_dir)["public.fault_big"]
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and entry["bytes"] == path.stat().st_size
    assert ids(path) == list(range(1, BIG_ROWS + 1))


def fill(path: Path) -> None:
    """Write to `path` until the disk is full: what a killed run's range files leave."""
    with open(path, "wb") as handle:
        try:
            while True:
                handle.write(b"x" * (1 << 20))
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def disk_full_from_the_second_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no tmpfs can be mounted: the second range's file fills the disk after its first megabyte."""
    real = export.copy_table

    class Full:
        def __init__(self, out) -> None:
            self.out, self.written = out, 0

        def write(self, data: bytes) -> int:
            self.written += len(data)
            if self.written > 1 << 20:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.out.write(data)

    def copy_table(conn, table, out, progress, part=None):
        return real(conn, table, Full(out) if part and part.number == 2 else out, progress, part)

    monkeypatch.setattr(export, "copy_table", copy_table)


def test_a_full_disk_during_a_split_export_deletes_the_ranges_and_names_the_table(cli, dbs, tmp_path: Path,
                                                                                  monkeypatch) -> None:
    make_big_table(dbs)
    with tmpfs(tmp_path / "small", "12m") as disk:  # about half of fault_big's file
        if disk is None:
            disk = tmp_path
            disk_full_from_the_second_range(monkeypatch)
        data_dir = disk / "migration-data"
        monkeypatch.setenv("MIGRATION_DATA_DIR", str(data_dir))
        result = cli("export", "--tables", "fault_big", *SPLIT)
        assert result.exit_code == 1, result.output
        assert not list(data_dir.rglob("*.partial")) and not (data_dir / BIG_FILE).exists()
        assert error_line(result.output) == (
            f"Error: no space left on the device writing {data_dir / BIG_FILE} (fix: free disk space or point "
            "--data-dir at a larger disk, then run the same command again)")
        assert not entries(data_dir)["public.fault_big"]["complete"] and metadata(data_dir)["finishedAt"] is None

        if disk != tmp_path:  # a killed run's range files filled the disk: the rerun deletes them first
            fill(data_dir / "tables" / "public.fault_big.copy.3.partial")
            rerun = cli("export", "--tables", "sites", *SPLIT)
            assert rerun.exit_code == 0, rerun.output
            assert not list(data_dir.rglob("*.partial")) and entries(data_dir)["public.sites"]["complete"]
