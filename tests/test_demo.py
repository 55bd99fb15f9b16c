"""`supamove demo` runs the whole runbook on a machine with nothing configured."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from supamove.config import Settings
from supamove.pgtools import find_bindir
from supamove.sandbox.demo import STEPS, DemoResult, DemoStep

ROWS = "3000"


def run_supamove(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """A real `supamove` process, as a newcomer runs it: no setting in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    env["COLUMNS"] = "160"  # rich's width when not on a terminal: keep table rows on one line
    return subprocess.run([sys.executable, "-m", "supamove", *args], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)


def test_demo_ends_with_every_table_pass(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = run_supamove("demo", "--rows", ROWS, "--workdir", str(workdir), cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 0, out
    for step in ("test-connections", "schema --apply", "export", "migrate-users", "import", "verify"):
        assert f"supamove {step}" in out
    assert (workdir / "migration-data" / "schema.sql").exists()  # the target's schema came from the source
    report = json.loads((workdir / "migration-data" / "verification-report.json").read_text())
    statuses = {f"{t['schema']}.{t['table']}": t["status"] for t in report["tables"]}
    assert statuses and set(statuses.values()) == {"pass"}, statuses
    tables = len(statuses)
    assert f"Verification: {tables} of {tables} tables pass." in out
    table_rows = [line for line in out.splitlines() if re.match(r"^│ public\.", line)]
    verified = [line for line in table_rows if re.search(r"│ (pass|WARN|FAIL) ", line)]
    assert len(verified) == tables and all("│ pass " in line for line in verified), out
    assert f"Files: {workdir / 'migration-data'}/" in out
    assert "were stopped and removed" in out
    assert (workdir / ".env").stat().st_mode & 0o077 == 0


def test_demo_keep_leaves_a_working_setup(tmp_path: Path) -> None:
    workdir = tmp_path / "kept"
    result = run_supamove("demo", "--rows", "500", "--keep", "--workdir", str(workdir), cwd=tmp_path)
    out = result.stdout
    stop = re.search(r"^\s+kill ([\d ]+)$", out, re.MULTILINE)
    assert stop, out
    try:
        env_file = (workdir / ".env").read_text()
        for name in Settings.model_fields:
            assert f"\n{name}=" in env_file and f"{name}=" in out
        check = run_supamove("test-connections", cwd=workdir)
        assert check.returncode == 0, check.stdout
        assert "All configured endpoints are usable." in check.stdout
    finally:
        stop_kept(out, [int(pid) for pid in stop.group(1).split()])


def stop_kept(out: str, pids: list[int]) -> None:
    """What the demo told the operator to do: kill the processes, remove the directories."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    remove = re.search(r"^\s+rm -rf (.+)$", out, re.MULTILINE)
    for path in remove.group(1).split() if remove else []:
        if "supamove-demo-" in path:  # the servers' temporary roots, nothing else
            shutil.rmtree(path, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_while_the_demo_starts_its_servers_is_an_interruption(tmp_path: Path) -> None:
    # A Ctrl-C reaches the whole process group, initdb too: the demo said "Error: initdb failed: ... canceling
    # statement due to user request" with exit 1. An initdb that waits stands for the real one at that moment.
    bindir = Path(tempfile.mkdtemp(prefix="supamove-bindir-"))  # not under tmp_path: the server's account runs it
    try:
        bindir.chmod(0o755)
        for program in find_bindir().iterdir():
            if program.name != "initdb":
                (bindir / program.name).symlink_to(program)
        (bindir / "initdb").write_text("#!/bin/sh\nexec sleep 60\n")
        (bindir / "initdb").chmod(0o755)
        scratch = tmp_path / "tmp"
        scratch.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
        env.update(PG_BINDIR=str(bindir), TMPDIR=str(scratch))
        demo = subprocess.Popen([sys.executable, "-m", "supamove", "demo", "--workdir", str(tmp_path / "demo")],
                                env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        wait_for_sleeper(demo.pid)
        os.killpg(demo.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        out, _ = demo.communicate(timeout=60)
    finally:
        shutil.rmtree(bindir)
    assert demo.returncode == 130, out
    assert "Interrupted." in out and "initdb failed" not in out, out
    assert not list(scratch.iterdir())  # the source server's directory was removed on the way out


def wait_for_sleeper(group: int) -> None:
    """Until a `sleep` of the process group `group` runs (the waiting initdb)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                name, fields = stat.read_text().split("(", 1)[1].rsplit(")", 1)  # pid (comm) state ppid pgrp ...
            except OSError:  # a process that ended meanwhile
                continue
            if name == "sleep" and int(fields.split()[2]) == group:
                return
        time.sleep(0.05)
    raise AssertionError("the demo never ran initdb")


def test_demo_refuses_a_tiny_size(tmp_path: Path) -> None:
    result = run_supamove("demo", "--rows", "5", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "--rows" in result.stdout


@pytest.mark.parametrize("args", [["demo", "--help"]])
def test_demo_help_names_flags_and_defaults(args: list[str], tmp_path: Path) -> None:
    result = run_supamove(*args, cwd=tmp_path, timeout=60)
    assert result.returncode == 0
    for text in ("--rows N", "default: 250000", "--keep", "--workdir DIR", "Example: supamove demo"):
        assert text in result.stdout, result.stdout


def test_a_demo_that_did_not_pass_fails_with_a_fix(tmp_path: Path) -> None:
    settings = {"LOG_FILE_PATH": str(tmp_path / "migration.log"), "MIGRATION_DATA_DIR": str(tmp_path / "data")}
    stopped = DemoResult(tmp_path, tmp_path / ".env", settings, 100,
                         steps=[DemoStep(("test-connections",), 0, 0.1), DemoStep(("export",), 3, 0.2)])
    failure = stopped.failure()
    assert failure is not None and failure.exit_code == 1
    assert str(failure) == (f"the demo stopped at `supamove export` (exit 3); its messages are above, the full log "
                            f"is {tmp_path / 'migration.log'} (fix: correct what they name, then run `supamove demo` "
                            "again)")
    steps = [DemoStep(args, 0, 0.1) for args in STEPS]
    failing = DemoResult(tmp_path, tmp_path / ".env", settings, 100, steps=steps,
                         verification=[{"status": "pass"}, {"status": "fail"}])
    assert str(failing.failure()).endswith(f"(fix: the reasons are in {tmp_path / 'data' / 'verification-report.json'})")
    passing = DemoResult(tmp_path, tmp_path / ".env", settings, 100, steps=steps, verification=[{"status": "pass"}])
    assert passing.failure() is None
