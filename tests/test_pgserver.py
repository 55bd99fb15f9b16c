"""The throwaway servers: the pip-installed PostgreSQL works when the machine has none."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import psycopg

from supamove.pgtools import pip_postgres_bindirs
from supamove.sandbox import fixtures
from supamove.sandbox.pgserver import PostgresServer


def pip_server_copy() -> Path:
    """pgserver's bundled server, copied where an unprivileged server account can read it."""
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None and spec.origin, "pgserver is a dependency of supamove"
    package = Path(spec.origin).parent
    assert str(package / "pginstall" / "bin") in pip_postgres_bindirs()
    root = Path(tempfile.mkdtemp(prefix="supamove-pip-pg-"))
    os.chmod(root, 0o755)  # as root the server runs as another account
    shutil.copytree(package / "pginstall", root / "pgserver" / "pginstall", symlinks=True)
    libs = package.parent / "pgserver.libs"  # the wheel's shared libraries, found relative to bin/
    if libs.exists():
        shutil.copytree(libs, root / "pgserver.libs", symlinks=True)
    return root


def test_pip_installed_server_holds_the_supabase_fixture() -> None:
    root = pip_server_copy()
    server = PostgresServer("pip", bindir=root / "pgserver" / "pginstall" / "bin")
    try:
        server.start()
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE app")
        app_url = fixtures.create_source(server.url("app"), rows=500)
        with psycopg.connect(app_url) as conn:
            users = conn.execute("SELECT count(*) FROM auth.users WHERE encrypted_password LIKE '$2a$06$%'").fetchone()
        assert users is not None and users[0] > 0
    finally:
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)


def test_seed_sizes_are_what_create_source_seeds(dbs) -> None:
    """The fixture is deterministic: seed_sizes() predicts every table's count."""
    from conftest import SEED_ROWS

    expected = fixtures.seed_sizes(SEED_ROWS).table_counts()
    assert fixtures.table_counts(dbs.source_admin_url, list(expected)) == expected
