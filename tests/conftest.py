"""Real PostgreSQL servers for the tests: one shaped like Supabase (source), one plain (target).

Each test gets its own databases, copied from templates built once per session.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from click.testing import CliRunner, Result

from supamove.cli import main
from supamove.sandbox import fixtures
from supamove.sandbox.pgserver import PostgresServer
from supamove.sandbox.stackauth import StackAuthSandbox
from supamove.usermap import UserMapping

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


# edge.posts.meta holds Supabase user ids inside JSON, which the import does not rewrite: kept on purpose.
KEEP_JSON_IDS = ("--keep-supabase-ids", "edge.posts.meta")


def assert_verify_passes(cli: Any) -> None:
    """`supamove verify` exits 0 and its report passes every table."""
    data_dir = Path(os.environ["MIGRATION_DATA_DIR"])
    result = cli("verify", *(KEEP_JSON_IDS if "edge.posts" in entries(data_dir) else ()))
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
    """(schema, table, row count) of every table the target's import progress records."""
    with dbs.target() as conn:
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
