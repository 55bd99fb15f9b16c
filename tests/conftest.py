"""Real PostgreSQL servers for the tests: one shaped like Supabase (source), one plain (target).

Each test gets its own databases, copied from templates built once per session.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import bcrypt
import orjson
import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql

from supamove.cli import main
from supamove.paths import DataDir
from supamove.sandbox import fixtures
from supamove.sandbox.pgserver import PostgresServer
from supamove.sandbox.stackauth import SandboxConfig, StackAuthSandbox
from supamove.usermap import UserMapping
from supamove.users.client import RetryPolicy
from supamove.users.transport import Answer, Origin, StdlibTransport

SQL_DIR = Path(__file__).parent / "sql"
APP_PASSWORD = "s3cret-app-pw-!x"
SEED_ROWS = 2000
database_counter = itertools.count()


def run_sql_file(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute((SQL_DIR / name).read_text())


def create_database(server: PostgresServer, name: str, template: str | None = None) -> str:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return server.url(name)


@pytest.fixture(scope="session")
def pg_source() -> Iterator[PostgresServer]:
    server = PostgresServer("source").start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def pg_target() -> Iterator[PostgresServer]:
    server = PostgresServer("target").start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def source_template(pg_source: PostgresServer) -> str:
    """A Supabase-shaped database with the FreshTrack app and the `edge` schema of hard cases."""
    url = create_database(pg_source, "source_template")
    fixtures.create_source(url, rows=SEED_ROWS, app_password=APP_PASSWORD)
    for name in ("edge_cases.sql", "edge_source_extras.sql", "edge_data.sql", "billing_source.sql"):
        run_sql_file(url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return "source_template"


@pytest.fixture(scope="session")
def target_template(pg_target: PostgresServer) -> str:
    url = create_database(pg_target, "target_template")
    fixtures.create_target(url)
    run_sql_file(url, "edge_cases.sql")
    return "target_template"


@dataclass
class Databases:
    """The URLs of one test's source and target databases."""

    source_server: PostgresServer
    target_server: PostgresServer
    source_db: str
    target_db: str

    @property
    def source_url(self) -> str:
        """As the app role (not superuser, BYPASSRLS), with a password, like Supabase's postgres."""
        return self.source_server.url(self.source_db, fixtures.APP_ROLE, APP_PASSWORD)

    @property
    def source_admin_url(self) -> str:
        return self.source_server.url(self.source_db)

    @property
    def target_url(self) -> str:
        return self.target_server.url(self.target_db)

    def source(self) -> psycopg.Connection:
        return psycopg.connect(self.source_admin_url, autocommit=True)

    def target(self) -> psycopg.Connection:
        return psycopg.connect(self.target_url, autocommit=True)


@contextmanager
def fresh_databases(pg_source: PostgresServer, pg_target: PostgresServer, source_template: str,
                    target_template: str | None) -> Iterator[Databases]:
    """A source and a target database copied from the templates (no target template: empty), dropped afterwards."""
    n = next(database_counter)
    source_db, target_db = f"src_{os.getpid()}_{n}", f"tgt_{os.getpid()}_{n}"
    create_database(pg_source, source_db, source_template)
    create_database(pg_target, target_db, target_template)
    try:
        yield Databases(pg_source, pg_target, source_db, target_db)
    finally:
        for server, name in ((pg_source, source_db), (pg_target, target_db)):
            with psycopg.connect(server.url(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dbs(pg_source: PostgresServer, pg_target: PostgresServer, source_template: str,
        target_template: str) -> Iterator[Databases]:
    """Fresh source and target databases for one test."""
    with fresh_databases(pg_source, pg_target, source_template, target_template) as databases:
        yield databases


@pytest.fixture
def env(dbs: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The settings of a runbook run, in the environment, in an empty working directory."""
    monkeypatch.chdir(tmp_path)
    values = {
        "SUPABASE_DB_URL": dbs.source_url,
        "DATABASE_URL": dbs.target_url,
        "MIGRATION_DATA_DIR": str(tmp_path / "migration-data"),
        "LOG_FILE_PATH": str(tmp_path / "migration.log"),
    }
    for name in ("STACK_AUTH_PROJECT_ID", "STACK_AUTH_SECRET_KEY", "STACK_AUTH_API_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def data_dir(env: dict[str, str]) -> Path:
    return Path(env["MIGRATION_DATA_DIR"])


class Cli:
    """Runs supamove in-process (click's runner) or as a real process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)

    def process(self, *args: str, **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "supamove", *args], env={**os.environ, **self.env},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)  # type: ignore[call-overload]


@pytest.fixture
def cli(env: dict[str, str]) -> Cli:
    return Cli(env)


EDGE = ("--schema", "public", "--schema", "edge")


@pytest.fixture
def exported(cli: Cli, data_dir: Path) -> Path:
    """The data directory after a real `supamove export` of public and edge."""
    result = cli("export", *EDGE)
    assert result.exit_code == 0, result.output
    return data_dir


@pytest.fixture
def exported_jsonl(cli: Cli, data_dir: Path) -> Path:
    """The same export with the application tables in JSON Lines (`--table-format jsonl`)."""
    result = cli("export", *EDGE, "--table-format", "jsonl")
    assert result.exit_code == 0, result.output
    return data_dir


# --- shared: Stack Auth sandbox + settings (test_faults, test_bad_input, test_secrets) ---

STACK_PROJECT = "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b"
STACK_SECRET = "ssk_shared_fixture_secret_13579"


@pytest.fixture
def stack_auth(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[StackAuthSandbox]:
    """A Stack Auth sandbox, its settings in the environment (and in `env`, for cli.process)."""
    with StackAuthSandbox(STACK_PROJECT, STACK_SECRET) as sandbox:
        values = {"STACK_AUTH_API_URL": sandbox.url, "STACK_AUTH_PROJECT_ID": STACK_PROJECT,
                  "STACK_AUTH_SECRET_KEY": STACK_SECRET}
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        env.update(values)
        yield sandbox


# --- end shared: Stack Auth sandbox + settings ---


# --- shared helpers of several test modules ---


def metadata(data_dir: Path) -> dict[str, Any]:
    """metadata.json of the data directory, as written."""
    return orjson.loads((data_dir / "metadata.json").read_bytes())


def entries(data_dir: Path) -> dict[str, dict[str, Any]]:
    """metadata.json's table and auth entries by schema.name."""
    meta = metadata(data_dir)
    return {f"{e['schema']}.{e['name']}": e for e in meta["tables"] + meta.get("auth", [])}


def error_line(output: str) -> str:
    """The single `Error:` line of a failed command; never a traceback."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, output
    assert "(fix: " in lines[0], lines[0]
    return lines[0]


def flat(text: str) -> str:
    """The text with every run of whitespace one space (rich wraps long lines)."""
    return " ".join(text.split())


def assert_verify_passes(cli: Any) -> None:
    """`supamove verify` exits 0 and its report passes every table."""
    result = cli("verify")
    assert result.exit_code == 0, result.output
    report = orjson.loads((Path(os.environ["MIGRATION_DATA_DIR"]) / "verification-report.json").read_bytes())
    assert report["tables"] and {t["status"] for t in report["tables"]} == {"pass"}, \
        [(t["table"], t["reason"]) for t in report["tables"] if t["status"] != "pass"]


def write_mapping(dbs: Any, data_dir: Path, leave_out: int = 0) -> dict[str, str]:
    """Map every auth.users id (but the first `leave_out`) to a fresh uuid, in the documented format."""
    with dbs.source() as conn:
        ids = [r[0] for r in conn.execute("SELECT id::text FROM auth.users ORDER BY id")]
    mapping = UserMapping(data_dir / "user-mapping.json")
    for sid in ids[leave_out:]:
        mapping.add(sid, str(uuid.uuid4()), None)
    mapping.save()
    return {sid: mapping.get(sid) for sid in ids[leave_out:]}  # type: ignore[misc]


def import_state(dbs: Any) -> list[tuple]:
    """(schema, table, row count) of every table the target's import progress records: none before the first
    load made the record (a run that stopped before any load began)."""
    with dbs.target() as conn:
        if conn.execute("SELECT to_regclass('_supamove.import_state')").fetchone() == (None,):
            return []
        return conn.execute("SELECT schema_name, table_name, row_count FROM _supamove.import_state "
                            "ORDER BY 1, 2").fetchall()


def wait_for_copy_into(dbs: Any, table: str, process: Any) -> None:
    """Wait until the target runs a COPY into `table` (the running `process` is loading it)."""
    with dbs.target() as conn:
        for _ in range(600):
            running = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active'",
                                   (f"COPY %{table}%",)).fetchone()[0]
            if running:
                return
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.05)
    raise AssertionError(f"no COPY into {table} seen")


# --- shared: a big table, and commands stopped at a chosen moment (faults, safety, migrate, ranges) ---


BIG_ROWS = 150_000


BIG_DDL = "CREATE TABLE public.fault_big (id bigint PRIMARY KEY, payload text, at timestamptz)"


BIG_FILE = "tables/public.fault_big.copy"


def app_table(dbs: Any, name: str, ddl: str, *fill: str, on_target: bool = True) -> None:
    """An application table public.<name>: `ddl` then `fill` on the source, owned by supabase_app as the
    application's tables are, and `ddl` alone on the target (unless not `on_target`)."""
    with dbs.source() as conn:
        conn.execute(ddl)
        for statement in fill:
            conn.execute(statement)
        conn.execute(sql.SQL("ALTER TABLE {} OWNER TO supabase_app").format(sql.Identifier("public", name)))
    if on_target:
        with dbs.target() as conn:
            conn.execute(ddl)


def make_big_table(dbs: Any, rows: int = BIG_ROWS) -> None:
    """A table on both sides big enough to stop a command in the middle of it."""
    with dbs.source() as conn:
        conn.execute(BIG_DDL)
        conn.execute("INSERT INTO public.fault_big SELECT i, repeat(md5(i::text), 3), "
                     f"'2024-01-01'::timestamptz + i * interval '1 s' FROM generate_series(1, {rows}) i")
        conn.execute("ALTER TABLE public.fault_big OWNER TO supabase_app")
        conn.execute("CHECKPOINT")  # the test servers commit asynchronously: survive a crash restart
    with dbs.target() as conn:
        conn.execute(BIG_DDL)
        conn.execute("CHECKPOINT")


@contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path | None]:
    """A file system of `size` (tmpfs) at `mount`, or None where mounting is not permitted."""
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def wait_until(condition: Callable[[], bool], what: str, process: subprocess.Popen[str] | None = None,
               timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"finished before {what}: {process.stdout.read() if process.stdout else ''}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert process.returncode == -signal.SIGKILL


def kill_when(process: subprocess.Popen[str], ready: Callable[[], object]) -> None:
    """SIGKILL `process` once `ready()` returns (it waits for the moment itself); never leave it running."""
    try:
        ready()
        kill(process)
    finally:
        if process.poll() is None:
            process.kill()


def assert_users_once(stack: StackAuthSandbox, data_dir: Path) -> None:
    """Every exported user that is migrated exists once in Stack Auth and once in the mapping."""
    created = Counter((u["server_metadata"] or {}).get("supabase_user_id") for u in stack.users.values())
    created.pop(None, None)
    assert set(created.values()) <= {1}, [sid for sid, n in created.items() if n > 1]
    mappings = orjson.loads((data_dir / "user-mapping.json").read_bytes())["mappings"]
    supabase_ids = [m["supabaseUserId"] for m in mappings]
    stack_ids = [m["stackAuthUserId"] for m in mappings]
    assert len(supabase_ids) == len(set(supabase_ids)) and len(stack_ids) == len(set(stack_ids))
    assert set(created) <= set(supabase_ids)
    assert set(stack_ids) <= set(stack.users)
    exported = {orjson.loads(line)["id"] for line in (data_dir / "auth" / "auth.users.jsonl").read_bytes().splitlines()}
    report = orjson.loads((data_dir / "user-migration-report.json").read_bytes())["users"]
    assert {u["supabaseUserId"] for u in report} == exported
    assert {u["supabaseUserId"] for u in report if u["status"] in ("migrated", "linked")} == set(supabase_ids)


# --- shared: Ctrl-C (safety, migrate) ---


def interrupt_and_wait(process: subprocess.Popen[str], signum: int | None = None) -> tuple[float, str]:
    """Send one SIGINT (or `signum`); the seconds until the process ended (it must end) and its output."""
    import signal
    import time

    started = time.monotonic()
    process.send_signal(signal.SIGINT if signum is None else signum)
    try:
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    return time.monotonic() - started, output


# --- shared: auth exports written by hand (users, users_sync) ---


FAST = RetryPolicy(attempts=8, base_delay=0.01, max_delay=0.05, timeout=3)


PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "mallory": "mallory-pw", "victor": "victor-pw",
             "oscar": "oscar-pw", "judy": "judy-pw", "grace": "grace-pw", "xavier": "xavier-pw"}


HASHES = {
    "alice": bcrypt.hashpw(PASSWORDS["alice"].encode(), bcrypt.gensalt(10, prefix=b"2a")).decode(),
    "bob": bcrypt.hashpw(PASSWORDS["bob"].encode(), bcrypt.gensalt(6, prefix=b"2a")).decode(),  # pgcrypto seed
    **{name: bcrypt.hashpw(PASSWORDS[name].encode(), bcrypt.gensalt(4, prefix=b"2a")).decode()
       for name in ("mallory", "victor", "oscar", "judy", "grace", "xavier")},
    "carol": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$3q2+7w0Pq2a6s0GcCqJm2Q",
}


def ts(days: int) -> str:
    moment = datetime(2024, 1, 1, 9, 30, tzinfo=UTC) + timedelta(days=days, microseconds=123456)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f+00")


def auth_user(name: str, day: int, **columns: Any) -> dict[str, Any]:
    """An auth.users row as export writes it: every column, PostgreSQL text values."""
    row = {
        "instance_id": "00000000-0000-0000-0000-000000000000", "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
        "aud": "authenticated", "role": "authenticated", "email": f"{name}@example.com",
        "encrypted_password": HASHES.get(name, ""), "email_confirmed_at": ts(day), "invited_at": None,
        "confirmation_token": "", "recovery_token": "", "last_sign_in_at": ts(day + 30),
        "raw_app_meta_data": {"provider": "email", "providers": ["email"]},
        "raw_user_meta_data": {"full_name": name.title() + " Example", "plan": "pro"},
        "is_super_admin": None, "created_at": ts(day), "updated_at": ts(day + 1), "phone": None,
        "phone_confirmed_at": None, "confirmed_at": ts(day), "banned_until": None, "reauthentication_token": "",
        "is_sso_user": False, "deleted_at": None, "is_anonymous": False,
    }
    row.update(columns)
    return row


def identity(user: dict[str, Any], provider: str, account: str, email: str | None) -> dict[str, Any]:
    return {"provider_id": account, "user_id": user["id"], "identity_data": {"sub": account, "email": email},
            "provider": provider, "last_sign_in_at": user["created_at"], "created_at": user["created_at"],
            "updated_at": user["created_at"], "email": email, "id": str(uuid.uuid4())}


def uid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, name))


def write_export(root: Path, users: list[dict[str, Any]], identities: list[dict[str, Any]],
                 factors: list[dict[str, Any]] | None = None) -> DataDir:
    datadir = DataDir(root).ensure()
    for table, rows in (("users", users), ("identities", identities), ("mfa_factors", factors)):
        if rows is None:
            continue
        with open(datadir.table_file("auth", table), "wb") as handle:
            for row in rows:
                handle.write(orjson.dumps(row) + b"\n")
    return datadir


# The app's domain, trusted in the Stack Auth project: the real server sends reset links only there.
TRUSTED = SandboxConfig(trusted_domains=("https://app.example.com",))


def factor(user: str, kind: str, status: str = "verified", secret: str | None = "JBSWY3DPEHPK3PXP") -> dict[str, Any]:
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{user}-{kind}-{status}")), "user_id": uid(user),
            "friendly_name": kind, "factor_type": kind, "status": status, "created_at": ts(3), "updated_at": ts(3),
            "secret": secret if kind == "totp" else None, "phone": "15550001234" if kind == "phone" else None}


# --- shared: requests recorded and judged by Stack Auth's schema (contract, users_sync) ---


CONTRACT = Path(__file__).parent / "contract"


NODE_MODULES_ENV = "SUPAMOVE_CONTRACT_NODE_MODULES"


@dataclass
class Sent:
    """One request as it left supamove: method, path, query parameters, JSON body."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


class RecordingTransport(StdlibTransport):
    """The client's own HTTP transport, keeping a copy of every request it sends."""

    def __init__(self) -> None:
        super().__init__(ssl.create_default_context())
        self.sent: list[Sent] = []

    def exchange(self, method: str, origin: Origin, target: str, headers: dict[str, str], body: bytes | None,
                 timeout: tuple[float | None, float | None]) -> Answer:
        path, _, query = target.partition("?")
        self.sent.append(Sent(method, path, dict(parse_qsl(query, keep_blank_values=True)),
                              orjson.loads(body) if body else None))
        return super().exchange(method, origin, target, headers, body, timeout)


def validate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stack Auth's verdict on each {schema, body}, from one node process."""
    node = shutil.which("node")
    assert node, "node is not installed: run .ci/run (it installs nodejs and npm, then the contract's packages)"
    env = {**os.environ, NODE_MODULES_ENV: os.environ.get(NODE_MODULES_ENV, str(CONTRACT / "node_modules"))}
    done = subprocess.run([node, str(CONTRACT / "validate.mjs")], input=orjson.dumps(items), env=env,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    verdicts = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert len(verdicts) == len(items), done.stdout.decode()
    return verdicts


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 no public CA signed (a self-hosted Stack Auth's), and its key."""
    assert shutil.which("openssl"), "openssl is needed to make the test certificate (.ci/run installs it)"
    key, cert = folder / "stack.key", folder / "stack.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key
