"""Settings: environment and .env, and one-line errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import error_line

from supamove.config import load_settings
from supamove.errors import ConfigError


def test_env_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://env@h:5432/db")
    (tmp_path / ".env").write_text("SUPABASE_DB_URL=postgresql://file@h:5432/db\n"
                                   "DATABASE_URL=postgresql://file@t:5432/db\n")
    settings = load_settings()
    assert settings.SUPABASE_DB_URL == "postgresql://env@h:5432/db"
    assert settings.DATABASE_URL == "postgresql://file@t:5432/db"
    assert settings.STACK_AUTH_API_URL == "https://api.stack-auth.com"
    assert settings.MIGRATION_DATA_DIR == Path("./migration-data")


def test_missing_setting_names_the_variable(cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SUPABASE_DB_URL")
    result = cli("export")
    assert result.exit_code == 2
    assert error_line(result.output) == (
        f"Error: SUPABASE_DB_URL is not set and .env was not found in {tmp_path} (fix: copy .env.example to "
        f"{tmp_path / '.env'} and fill it in, or set SUPABASE_DB_URL in the environment (source: Supabase's "
        "direct connection, postgresql://postgres:***@db.REF.supabase.co:5432/postgres))")
    (tmp_path / ".env").write_text("STACK_AUTH_API_URL=https://api.stack-auth.com\n")
    result = cli("export")
    assert result.exit_code == 2
    assert error_line(result.output) == (
        "Error: SUPABASE_DB_URL is not set (fix: set SUPABASE_DB_URL in .env or the environment (source: "
        "Supabase's direct connection, postgresql://postgres:***@db.REF.supabase.co:5432/postgres))")


def test_url_that_is_not_postgres(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root@localhost/db")
    result = cli("import", "--dry-run")
    assert result.exit_code == 2
    assert "Error: DATABASE_URL must be a postgresql:// URL (fix: correct DATABASE_URL" in result.output


def test_data_dir_that_is_a_file(cli, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    result = cli("export", "--data-dir", str(blocker))
    assert result.exit_code == 2
    assert f"Error: data directory {blocker} is a file, not a directory" in result.output


def test_stack_auth_url_must_be_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STACK_AUTH_API_URL", "ftp://x")
    with pytest.raises(ConfigError, match="STACK_AUTH_API_URL must be an http"):
        load_settings()
