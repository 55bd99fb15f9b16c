"""test-connections: reachability, versions, TLS, latency and what would break later steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from supamove.cli import main
from supamove.config import Settings


def test_all_usable(cli, dbs, stack_auth) -> None:
    result = cli("test-connections")
    assert result.exit_code == 0, result.output
    assert "All configured endpoints are usable." in result.output
    with dbs.source() as conn:  # whichever PostgreSQL the tests run on
        assert str(conn.execute("SHOW server_version").fetchone()[0]) in result.output
    assert "ms" in result.output  # latency
    assert "the source connection is not encrypted" in result.output


def test_stack_auth_out_of_reach_is_named_with_the_reason(cli, dbs, stack_auth, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # It said only "ConnectError", and a CA file that could not be read ended in "unexpected FileNotFoundError".
    monkeypatch.setenv("STACK_AUTH_API_URL", "http://127.0.0.1:1")
    result = cli("test-connections")
    assert result.exit_code != 0
    assert ("cannot reach Stack Auth: [Errno 111] Connection refused: check STACK_AUTH_API_URL (for https, the "
            "server's certificate and SSL_CERT_FILE)") in " ".join(result.output.split())
    monkeypatch.setenv("STACK_AUTH_API_URL", stack_auth.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))
    result = cli("test-connections")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "cannot reach Stack Auth: [Errno 2] No such file or directory" in " ".join(result.output.split())


def test_wrong_password_names_the_setting(cli, dbs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_DB_URL", dbs.source_url.replace("s3cret-app-pw-!x", "wrong-pw"))
    result = cli("test-connections")
    assert result.exit_code != 0
    assert "refused the password (fix: check the user and password in SUPABASE_DB_URL)" in result.output
    assert "wrong-pw" not in result.output


def test_a_source_through_the_transaction_pooler_is_refused_by_every_command_that_reads_it(
        cli, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Port 6543 keeps neither the export's snapshot nor its session settings: an export through it could
    mix moments. Refused before anything is read or written; a target on that port is only warned about."""
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://postgres:pw@db.abc.supabase.co:6543/postgres")
    result = cli("test-connections")
    assert result.exit_code != 0
    assert "source (SUPABASE_DB_URL): SUPABASE_DB_URL uses port 6543, Supabase's transaction pooler" in result.output
    assert "fix: set SUPABASE_DB_URL to the direct connection string" in result.output
    for command in (("export",), ("export", "--dry-run"), ("verify",), ("schema",), ("migrate",)):
        result = cli(*command)
        assert result.exit_code == 2, (command, result.output)
        assert "SUPABASE_DB_URL uses port 6543" in result.output and "port 5432" in result.output, command
        assert "Traceback" not in result.output
    assert {p.name for p in data_dir.iterdir()} <= {"supamove.lock"}  # nothing exported, nothing planned
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://postgres:pw@127.0.0.1:5432/postgres?sslmode=disable")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@127.0.0.1:6543/app?sslmode=disable")
    result = cli("test-connections")
    assert "warning: target (DATABASE_URL): port 6543 is Supabase's transaction pooler" in result.output


def test_role_hidden_by_rls_is_reported(cli, dbs, monkeypatch: pytest.MonkeyPatch) -> None:
    with dbs.source() as conn:
        conn.execute("CREATE ROLE weak LOGIN PASSWORD 'weak-pw-1' NOBYPASSRLS")
        conn.execute("GRANT USAGE ON SCHEMA auth TO weak")
        conn.execute("GRANT SELECT ON auth.users, auth.identities TO weak")
    try:
        monkeypatch.setenv("SUPABASE_DB_URL", dbs.source_server.url(dbs.source_db, "weak", "weak-pw-1"))
        result = cli("test-connections")
        assert result.exit_code != 0
        assert "row-level security hides auth.users from this user" in result.output
    finally:
        with dbs.source() as conn:
            conn.execute("DROP OWNED BY weak")
            conn.execute("DROP ROLE weak")


def test_verbose_shows_debug_lines_of_its_own_command_line_only(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    verbose = runner.invoke(main, ["--verbose", "test-connections"])
    quiet = runner.invoke(main, ["test-connections"])
    assert verbose.exit_code == quiet.exit_code == 1
    assert "STEP test-connections: started" in verbose.output
    assert "STEP test-connections: started" not in quiet.output
    assert "Error: not every endpoint is usable (fix: correct the settings named above)" in quiet.output
