"""Settings from the environment and `.env` (the environment wins)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from supamove.errors import ConfigError

SETTING_HELP = {
    "SUPABASE_DB_URL": "source: Supabase's direct connection, postgresql://postgres:PASSWORD@db.REF.supabase.co:5432/postgres",
    "DATABASE_URL": "target: the new PostgreSQL, postgresql://USER:PASSWORD@HOST:5432/DBNAME",
    "STACK_AUTH_PROJECT_ID": "Stack Auth project id (dashboard, Project Settings)",
    "STACK_AUTH_SECRET_KEY": "Stack Auth secret server key (dashboard, API Keys)",
    "STACK_AUTH_API_URL": "Stack Auth API base URL",
    "LOG_FILE_PATH": "where the complete timestamped log is written",
    "MIGRATION_DATA_DIR": "where export files, the user mapping and reports live",
}


class Settings(BaseSettings):
    """Every setting supamove reads; each named after its environment variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=True)

    SUPABASE_DB_URL: str | None = None
    DATABASE_URL: str | None = None
    STACK_AUTH_PROJECT_ID: str | None = None
    STACK_AUTH_SECRET_KEY: str | None = None
    STACK_AUTH_API_URL: str = "https://api.stack-auth.com"
    LOG_FILE_PATH: Path = Path("./migration.log")
    MIGRATION_DATA_DIR: Path = Path("./migration-data")

    @field_validator("SUPABASE_DB_URL", "DATABASE_URL")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
        if _cut_short(value):  # never echo the value: it holds the password
            raise ValueError("is not a valid URL: percent-encode the special characters of the user and "
                             "password (# as %23, / as %2F, ? as %3F, @ as %40, : as %3A)")
        return value

    @field_validator("STACK_AUTH_API_URL")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/")

    def require(self, name: str) -> str:
        """The value of a setting a command cannot do without."""
        value = getattr(self, name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ConfigError(f"{name} is not set", fix=f"set {name} in .env or the environment ({SETTING_HELP[name]})")
        return str(value)

    @property
    def source_url(self) -> str:
        return self.require("SUPABASE_DB_URL")

    @property
    def target_url(self) -> str:
        return self.require("DATABASE_URL")


def _cut_short(url: str) -> bool:
    """Whether a character of the password that is not percent-encoded (# / ?) ends the host part early."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- parsing it raises when the password spilled into the port
    except ValueError:
        return True
    return bool(parts.fragment)


def load_settings(data_dir: Path | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Read the settings; a malformed one is a ConfigError naming the variable."""
    try:
        settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        problem = exc.errors()[0]
        name = str(problem["loc"][0]) if problem["loc"] else "a setting"
        message = str(problem["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{name} {message}", fix=f"correct {name} in .env or the environment") from None
    if data_dir is not None:
        settings.MIGRATION_DATA_DIR = data_dir
    return settings
