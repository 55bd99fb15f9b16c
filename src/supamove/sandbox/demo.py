"""`supamove demo`: the whole runbook on throwaway servers, configured only through a generated .env."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from supamove import interrupt
from supamove.errors import ConfigError, SupamoveError
from supamove.files import read_json, writable_error
from supamove.log import get_logger
from supamove.paths import DataDir
from supamove.sandbox.pgserver import PostgresServer, free_port

log = get_logger("demo")
SOURCE_DB, TARGET_DB = "freshtrack", "freshtrack"
# The runbook's steps, as the operator types them (each runs the real command in-process).
STEPS: tuple[tuple[str, ...], ...] = (
    ("test-connections",),
    ("schema", "--apply"),
    ("export",),
    ("migrate-users",),
    ("import",),
    ("verify",),
)

RunCommand = Callable[[Sequence[str]], int]


def run_in_process(command: Any, verbose: bool, args: Sequence[str]) -> int:
    """Run one supamove command line (`command`: the CLI's group) in this process, as the operator would type it."""
    try:
        command.main(args=(["--verbose"] if verbose else []) + list(args), prog_name="supamove")
    except SystemExit as exc:  # click ends every command line with one, its usage errors shown
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
Announce = Callable[[str], None]


@dataclass
class DemoStep:
    """One runbook command the demo ran, how it ended and how long it took."""

    args: tuple[str, ...]
    exit_code: int
    seconds: float

    @property
    def command(self) -> str:
        return "supamove " + " ".join(self.args)


@dataclass
class DemoEnvironment:
    """The throwaway source, target and Stack Auth, and the settings that point at them."""

    workdir: Path
    source: PostgresServer
    target: PostgresServer
    stack_auth: subprocess.Popen[bytes]
    settings: dict[str, str]

    @property
    def env_file(self) -> Path:
        return self.workdir / ".env"

    @property
    def datadir(self) -> DataDir:
        return DataDir(Path(self.settings["MIGRATION_DATA_DIR"]))

    def stop_commands(self) -> list[str]:
        """How to stop what --keep left running (the postmaster pid stops a whole server)."""
        pids = [str(self.stack_auth.pid)]
        for server in (self.source, self.target):
            pidfile = server.datadir / "postmaster.pid"
            if pidfile.exists():
                pids.append(pidfile.read_text().split("\n", 1)[0].strip())
        roots = " ".join(str(s.root) for s in (self.source, self.target))
        return [f"kill {' '.join(pids)}", f"rm -rf {roots} {self.workdir}"]


@dataclass
class DemoResult:
    """What the demo did: its steps, the verification report, and where everything is."""

    workdir: Path
    env_file: Path
    settings: dict[str, str]
    rows: int
    steps: list[DemoStep] = field(default_factory=list)
    verification: list[dict[str, Any]] = field(default_factory=list)
    setup_seconds: float = 0.0
    seconds: float = 0.0
    kept: bool = False
    stop_commands: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every step succeeded and every table verified pass."""
        return (len(self.steps) == len(STEPS) and all(s.exit_code == 0 for s in self.steps)
                and bool(self.verification) and all(t.get("status") == "pass" for t in self.verification))

    @property
    def datadir(self) -> DataDir:
        return DataDir(Path(self.settings["MIGRATION_DATA_DIR"]))

    @property
    def failed_step(self) -> DemoStep | None:
        return next((s for s in self.steps if s.exit_code != 0), None)

    def failure(self) -> SupamoveError | None:
        """Why the demo did not end with every table verified pass, or None."""
        failed = self.failed_step
        if failed is not None:
            return SupamoveError(f"the demo stopped at `{failed.command}` (exit {failed.exit_code}); its messages "
                                 f"are above, the full log is {self.settings['LOG_FILE_PATH']}",
                                 fix="correct what they name, then run `supamove demo` again")
        if not self.ok:
            return SupamoveError("verification did not pass every table: see the table above",
                                 fix=f"the reasons are in {self.datadir.verification_report}")
        return None


def run_demo(rows: int, keep: bool, workdir: Path | None, run_command: RunCommand,
             announce: Announce = lambda message: None) -> DemoResult:
    """Start the sandboxes, run every runbook step through `run_command`, then clean up unless `keep`.

    `run_command` runs one supamove command line (without the program name) and returns its exit
    code; the CLI passes one that runs the real command in-process. The settings reach each
    command only through the environment and the .env in `workdir`, exactly as the runbook's do.
    """
    started = time.monotonic()
    if workdir is not None:
        check_empty_workdir(Path(workdir))
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="supamove-demo-"))
    with ExitStack() as cleanup:
        env = start_environment(rows, workdir, announce, cleanup)
        result = DemoResult(workdir, env.env_file, env.settings, rows,
                            setup_seconds=time.monotonic() - started)
        with demo_settings(env):
            for number, args in enumerate(STEPS, 1):
                announce(f"STEP {number}/{len(STEPS)}: supamove {' '.join(args)}")
                step_started = time.monotonic()
                code = run_command(list(args))
                result.steps.append(DemoStep(args, code, time.monotonic() - step_started))
                if code != 0:
                    break
        result.verification = read_verification(env.datadir)
        if keep:
            result.kept = True
            result.stop_commands = env.stop_commands()
            cleanup.pop_all()  # leave the servers and Stack Auth running
    result.seconds = time.monotonic() - started
    return result


def check_empty_workdir(workdir: Path) -> None:
    """The demo writes a .env, a log and migration-data/ there: a directory holding anything is refused, and
    one that cannot be made is named before any server starts."""
    if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        raise ConfigError(f"--workdir {workdir} is not an empty directory: the demo would overwrite its .env, "
                          "log and migration-data/", fix="give a new or empty directory, or leave out --workdir")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # it said "cannot use /proc/x: ... (fix: ... run the step that writes it again)"
        raise writable_error(workdir, "demo directory", "--workdir", exc) from None


def start_environment(rows: int, workdir: Path, announce: Announce, cleanup: ExitStack) -> DemoEnvironment:
    """The servers of `_start_environment`; a Ctrl-C while they start is an interruption, not their failure.

    The terminal sends Ctrl-C to initdb and pg_ctl too (this process only notes it until the first step):
    their death said "initdb failed: ... canceling statement due to user request" and exit 1.
    """
    try:
        return _start_environment(rows, workdir, announce, cleanup)
    except SupamoveError:
        if interrupt.pressed_before():
            raise KeyboardInterrupt from None  # the servers started so far are stopped on the way out
        raise


def _start_environment(rows: int, workdir: Path, announce: Announce, cleanup: ExitStack) -> DemoEnvironment:
    """A Supabase-shaped source with FreshTrack data, an empty target database (`supamove schema --apply`
    builds its schema), a Stack Auth, and their .env."""
    from supamove.sandbox import fixtures

    workdir.mkdir(parents=True, exist_ok=True)
    announce("Starting a throwaway source PostgreSQL (shaped like a Supabase project) and target...")
    source = _server("source", cleanup)
    target = _server("target", cleanup)
    project_id, secret_key = str(uuid.uuid4()), "ssk_demo_" + secrets.token_hex(16)
    stack_auth = start_stack_auth(project_id, secret_key, cleanup)
    _create_database(source, SOURCE_DB)
    _create_database(target, TARGET_DB)
    announce(f"Filling the source with a FreshTrack-like application ({rows:,} rows) and its auth users...")
    app_password = secrets.token_urlsafe(12)
    source_url = fixtures.create_source(source.url(SOURCE_DB), rows=rows, app_password=app_password)
    settings = {
        "SUPABASE_DB_URL": source_url,
        "DATABASE_URL": target.url(TARGET_DB),
        "STACK_AUTH_PROJECT_ID": project_id,
        "STACK_AUTH_SECRET_KEY": secret_key,
        "STACK_AUTH_API_URL": f"http://127.0.0.1:{stack_auth.port}",  # type: ignore[attr-defined]
        "LOG_FILE_PATH": str(workdir / "migration.log"),
        "MIGRATION_DATA_DIR": str(workdir / "migration-data"),
    }
    env = DemoEnvironment(workdir, source, target, stack_auth, settings)
    write_env_file(env.env_file, settings)
    return env


def _server(name: str, cleanup: ExitStack) -> PostgresServer:
    server = PostgresServer(f"demo-{name}")
    cleanup.callback(server.destroy)
    return server.start()


def _create_database(server: PostgresServer, name: str) -> None:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def start_stack_auth(project_id: str, secret_key: str, cleanup: ExitStack) -> subprocess.Popen[bytes]:
    """The local Stack Auth sandbox as its own process, so that --keep can leave it running."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "supamove.sandbox.stackauth", "--port", str(port),
         "--project-id", project_id, "--secret-key", secret_key],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        start_new_session=True)
    process.port = port  # type: ignore[attr-defined]
    cleanup.callback(_stop_process, process)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SupamoveError(f"the Stack Auth sandbox exited at start (code {process.returncode})",
                                fix="run `python -m supamove.sandbox.stackauth` to see why")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    raise SupamoveError("the Stack Auth sandbox did not start listening within 20 s",
                        fix="run `python -m supamove.sandbox.stackauth` to see why")


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def write_env_file(path: Path, settings: dict[str, str]) -> None:
    """The .env a real cutover would have, pointing at the sandboxes (readable by its owner only)."""
    lines = ["# Written by `supamove demo`: throwaway servers on 127.0.0.1.", *(
        f"{name}={value}" for name, value in settings.items())]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")


@contextmanager
def demo_settings(env: DemoEnvironment) -> Iterator[None]:
    """Run in the demo's directory with its settings in the environment, as an operator would.

    The environment is set too, not only .env, because a variable already exported in the
    operator's shell would otherwise win over .env and point the demo at a real database.
    """
    saved_env = {name: os.environ.get(name) for name in env.settings}
    saved_cwd = Path.cwd()
    os.environ.update(env.settings)
    os.chdir(env.workdir)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def read_verification(datadir: DataDir) -> list[dict[str, Any]]:
    """The tables of verification-report.json, or nothing when verify did not run."""
    if not datadir.verification_report.exists():
        return []
    report = read_json(datadir.verification_report, "verify")
    tables = report.get("tables", []) if isinstance(report, dict) else []
    return [t for t in tables if isinstance(t, dict)]
