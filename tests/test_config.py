"""Settings: environment and .env, and one-line errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import error_line

from supamove.config import load_settings, misspelled_settings
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
    # A .env's own quotes are taken off, as python-dotenv reads them: only quotes kept to the end are refused.
    monkeypatch.delenv("SUPABASE_DB_URL")
    (tmp_path / ".env").write_text('SUPABASE_DB_URL="postgresql://file@h:5432/db"\n'
                                   "STACK_AUTH_SECRET_KEY='ssk_quoted'\nMIGRATION_DATA_DIR=\"./md\"\n")
    settings = load_settings()
    assert (settings.SUPABASE_DB_URL, settings.STACK_AUTH_SECRET_KEY) == ("postgresql://file@h:5432/db", "ssk_quoted")
    assert settings.MIGRATION_DATA_DIR == Path("./md")


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


def test_an_env_file_with_a_byte_order_mark_reads_the_same_and_one_not_utf8_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUPABASE_DB_URL", raising=False)
    (tmp_path / ".env").write_bytes(b"\xef\xbb\xbfSUPABASE_DB_URL=postgresql://file@h:5432/db\n")  # a Windows editor's
    assert load_settings().SUPABASE_DB_URL == "postgresql://file@h:5432/db"
    (tmp_path / ".env").chmod(0o600)
    assert misspelled_settings(tmp_path / ".env") == []
    (tmp_path / ".env").write_bytes(b"SUPABASE_DB_URL=postgresql://u:caf\xe9@h:5432/db\n")  # Latin-1
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert str(raised.value) == ".env is not UTF-8 text (byte 0xe9 at position 34) (fix: save .env as UTF-8)"


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("STACK_AUTH_SECRET_KEY", "ssk_SeCrEt_5531\n", "holds a space, a line break or a character other than plain "
     "ASCII: copy the value again from the Stack Auth dashboard"),
    ("STACK_AUTH_SECRET_KEY", "ssk_SeCrEt_5531 ", "holds a space, a line break"),
    ("STACK_AUTH_PROJECT_ID", "prójekt-5531", "holds a space, a line break"),
    ("STACK_AUTH_API_URL", "http://127.0.0.1:37x1", "has a port that is not a number from 1 to 65535"),
    ("STACK_AUTH_API_URL", "http://127.0.0.1:99999", "has a port that is not a number from 1 to 65535"),
    ("STACK_AUTH_API_URL", "https://[stack5531.example.com", "is not a valid URL: a [ or ] belongs only around an "
     "IPv6 address, like https://[2001:db8::1]/"),
    ("SUPABASE_DB_URL", "postgresql://app:Pq%zz5531@db.example.com:5432/app", "is not a valid URL: a % in the user "
     "or password must be followed by two hex digits (write % itself as %25)"),
    # Quotes the environment kept (docker's env files do): the URL's scheme, the key's own characters.
    ("SUPABASE_DB_URL", '"postgresql://app:pw5531@db.example.com:5432/app"', "is wrapped in quotes: remove them (a "
     ".env's quotes are taken off; through the environment, docker's env files and CI variables included, they "
     "arrive as part of the value)"),
    ("STACK_AUTH_SECRET_KEY", "'ssk_SeCrEt_5531'", "is wrapped in quotes: remove them"),
    ("STACK_AUTH_API_URL", '"https://stack5531.example.com"', "is wrapped in quotes: remove them"),
    ("MIGRATION_DATA_DIR", '"/tmp/data5531"', "is wrapped in quotes: remove them"),
    # Another of the dashboard's keys: Stack Auth refused the credentials, and nothing said which key was wrong.
    ("STACK_AUTH_SECRET_KEY", "pck_publishable5531", "holds a publishable client key (Stack Auth's keys begin pck_, "
     "ssk_ and sak_): put the secret server key (ssk_…) in STACK_AUTH_SECRET_KEY and the project id in "
     "STACK_AUTH_PROJECT_ID (Stack Auth dashboard: API Keys, Project Settings)"),
    ("STACK_AUTH_SECRET_KEY", "sak_admin5531", "holds a super secret admin key (Stack Auth's keys begin"),
    ("STACK_AUTH_PROJECT_ID", "ssk_secret5531", "holds a secret server key (Stack Auth's keys begin"),
    # A byte that is no UTF-8 (Latin-1's é): psycopg's own decoding failed, "unexpected UnicodeDecodeError".
    ("DATABASE_URL", "postgresql://app:Pq%E95531@db.example.com:5432/app", "is not a valid URL: its %XX bytes are "
     "not UTF-8 text (write each character of the user and password as its UTF-8 bytes, é as %C3%A9)"),
    ("SUPABASE_DB_URL", "postgresql://app:Pq@Rz5531@db.example.com:5432/app", "is not a valid URL: percent-encode "
     "the special characters of the user and password (# as %23, / as %2F, ? as %3F, @ as %40, : as %3A)"),
    ("DATABASE_URL", "postgresql://app:pw5531@db.example.com:99999/app", "has a port out of range (99999): use the "
     "server's port, e.g. 5432"),
    # A / then an @ in the password: the host part ended at the /, and libpq looked up a host named after the password.
    ("SUPABASE_DB_URL", "postgresql://app:Pq@55/31@db.example.com:5432/app", "is not a valid URL: percent-encode "),
    # Brackets in the password: Python's URL parser refused them as an IPv6 address, quoting what they held.
    ("SUPABASE_DB_URL", "postgresql://app:Pq[5531]@db.example.com:5432/app", "is not a valid URL: it holds [ or ] in "
     "the user or password (taken for an IPv6 address): the dashboard's [YOUR-PASSWORD] is replaced whole, brackets "
     "included; a password's own are written %5B and %5D"),
    ("SUPABASE_DB_URL", "postgresql://postgres:[YOUR-PASSWORD]@db.abcdefghij5531.supabase.co:5432/postgres",
     "still holds [YOUR-PASSWORD] (from .env.example or the dashboard's connection string): put the database "
     "password (brackets included) in its place"),
    ("DATABASE_URL", "postgresql://freshtrack:YOUR-PASSWORD@localhost:5531/freshtrack", "still holds YOUR-PASSWORD"),
    ("SUPABASE_DB_URL", "postgresql://postgres:Pq5531@db.YOUR-PROJECT-REF.supabase.co:5432/postgres",
     "still holds YOUR-PROJECT-REF (from .env.example or the dashboard's connection string): put the project's "
     "reference (the dashboard's connection string shows it) in its place"),
])
def test_settings_requests_would_fail_on_are_named_without_their_value(
        cli, monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str) -> None:
    monkeypatch.setenv(name, value)
    result = cli("migrate-users", "--dry-run")
    assert result.exit_code == 2, result.output
    assert error_line(result.output).startswith(f"Error: {name} {problem}"), result.output
    assert error_line(result.output).endswith(f"(fix: correct {name} in .env or the environment)")
    assert "5531" not in result.output and "37x1" not in result.output


def test_a_stray_space_or_an_empty_setting_is_no_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://u@h:5432/db?sslmode=disable \n")  # copied with its line end
    for name in ("MIGRATION_DATA_DIR", "LOG_FILE_PATH", "STACK_AUTH_API_URL"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert settings.SUPABASE_DB_URL == "postgresql://u@h:5432/db?sslmode=disable"
    assert settings.MIGRATION_DATA_DIR == Path("./migration-data") and settings.LOG_FILE_PATH == Path("./migration.log")
    assert settings.STACK_AUTH_API_URL == "https://api.stack-auth.com"


def test_an_env_file_others_may_read_is_warned_about(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("SUPABASE_DB_URL=postgresql://u:pw@h:5432/db\n")
    env_file.chmod(0o644)
    assert misspelled_settings(env_file) == [
        f"{env_file} may be read by other users of this machine (mode 644) and holds passwords: chmod 600 {env_file}"]
    env_file.chmod(0o600)
    assert misspelled_settings(env_file) == []


def test_a_tilde_in_the_data_dir_or_the_log_file_is_the_home_directory(cli, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`MIGRATION_DATA_DIR=~/md` in .env (or `--data-dir=~/md`, which no shell expands) made a directory named
    `~` in the working directory, while `${HOME}/md` was the home directory's."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("MIGRATION_DATA_DIR", "LOG_FILE_PATH"):
        monkeypatch.delenv(name)
    (tmp_path / ".env").write_text("MIGRATION_DATA_DIR=~/md\nLOG_FILE_PATH=~/supamove.log\n")
    result = cli("export", "--tables", "public.organizations")
    assert result.exit_code == 0, result.output
    assert (home / "md" / "metadata.json").is_file() and (home / "supamove.log").is_file()
    result = cli("export", "--tables", "public.organizations", "--data-dir", "~/elsewhere")
    assert result.exit_code == 0, result.output
    assert (home / "elsewhere" / "metadata.json").is_file()
    assert not (tmp_path / "~").exists()
