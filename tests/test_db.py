"""Sessions: no server timeouts on the direct connection, nothing session-bound on the pooler port."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from supamove import db
from supamove.db import Endpoint, connect, redact_url
from supamove.sandbox.pgserver import PostgresServer


@pytest.fixture(scope="module")
def timeouts_server():
    """A server with timeouts like hosted Supabase's global ones."""
    server = PostgresServer("timeouts", settings={"statement_timeout": "'2min'",
                                                  "idle_in_transaction_session_timeout": "'1min'"})
    server.start()
    yield server
    server.destroy()


def test_direct_connection_lifts_the_timeouts(timeouts_server: PostgresServer) -> None:
    with connect(Endpoint(timeouts_server.url(), "source")) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("0",)
        assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)
        assert conn.execute("SHOW jit").fetchone() == ("off",)  # no compiling for one pass over a table
        assert conn.prepare_threshold == 5


def test_transaction_pooler_prepares_nothing_and_sets_no_session_timeouts(
        timeouts_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "TRANSACTION_POOLER_PORT", timeouts_server.port)  # this server plays port 6543
    endpoint = Endpoint(timeouts_server.url(), "source")
    assert endpoint.transaction_pooler
    with connect(endpoint) as conn:
        assert conn.prepare_threshold is None
        assert conn.execute("SHOW statement_timeout").fetchone() == ("2min",)


@pytest.fixture(scope="module")
def german_money_server():
    """A server whose lc_monetary is de_DE (money reads '1.234,56 €'), the locale built for it with localedef."""
    assert shutil.which("localedef") and Path("/usr/share/i18n/locales/de_DE").exists(), \
        "localedef and the de_DE locale source are needed (.ci/run installs the locales package)"
    locales = Path(tempfile.mkdtemp(prefix="supamove-locales-"))
    locales.chmod(0o755)  # the server may run as another account
    subprocess.run(["localedef", "-i", "de_DE", "-f", "UTF-8", str(locales / "de_DE.UTF-8")], check=True,
                   capture_output=True)
    server = PostgresServer("money", settings={"lc_monetary": "'de_DE.UTF-8'"})
    os.environ["LOCPATH"] = str(locales)  # the server finds the locale through it
    try:
        server.start()
    finally:
        del os.environ["LOCPATH"]
    yield server
    server.destroy()
    shutil.rmtree(locales, ignore_errors=True)


def test_money_has_the_same_text_whatever_the_servers_lc_monetary(german_money_server: PostgresServer) -> None:
    """The export writes money as its text and the import reads it back: a source in de_DE and a target in C
    must agree on it (the target refused '1.234,56 €'), and verify's checksums compare it."""
    with psycopg.connect(german_money_server.url(), autocommit=True) as plain:
        assert plain.execute("SELECT 1234.56::money::text").fetchone() == ("1.234,56 €",)
    with connect(Endpoint(german_money_server.url(), "source")) as conn:
        texts = conn.execute("SELECT 1234.56::money::text, (-92233720368547758.08)::money::text").fetchone()
        assert texts == ("$1,234.56", "-$92,233,720,368,547,758.08")
        assert conn.execute("SELECT %s::money = 1234.56::money", [texts[0]]).fetchone() == (True,)


def test_port_6543_is_the_transaction_pooler() -> None:
    assert Endpoint("postgresql://u:pw@db.example.supabase.co:6543/postgres", "source").transaction_pooler
    assert not Endpoint("postgresql://u:pw@db.example.supabase.co:5432/postgres", "source").transaction_pooler


def test_sslmode_defaults_to_require_and_is_kept_when_named() -> None:
    assert "sslmode=require" in Endpoint("postgresql://u:pw@h:5432/db", "source").conninfo()
    named = Endpoint("postgresql://u:pw@h:5432/db?sslmode=verify-full&sslrootcert=/ca.crt", "source").conninfo()
    assert "sslmode=verify-full" in named and "sslrootcert=%2Fca.crt" in named


def test_redacted_url_hides_the_password() -> None:
    assert redact_url("postgresql://postgres:s3cr3t@db.x.supabase.co:5432/postgres") == \
        "postgresql://postgres:***@db.x.supabase.co:5432/postgres"
