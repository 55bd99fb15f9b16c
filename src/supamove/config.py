"""Settings from the environment and `.env` (the environment wins)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

import psycopg
from dotenv import dotenv_values
from pydantic import PrivateAttr, ValidationError, ValidationInfo, field_validator
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


ENCODE_SPECIAL = ("is not a valid URL: percent-encode the special characters of the user and password "
                  "(# as %23, / as %2F, ? as %3F, @ as %40, : as %3A)")
BRACKETS = ("is not a valid URL: it holds [ or ] in the user or password (taken for an IPv6 address): the "
            "dashboard's [YOUR-PASSWORD] is replaced whole, brackets included; a password's own are written %5B and %5D")
QUOTED = ("is wrapped in quotes: remove them (a .env's quotes are taken off; through the environment, docker's "
          "env files and CI variables included, they arrive as part of the value)")
# Left in from .env.example or the dashboard's connection string: each with what goes in its place.
PLACEHOLDERS = {"[YOUR-PASSWORD]": "the database password (brackets included)",
                "YOUR-PASSWORD": "the database password",
                "YOUR-PROJECT-REF": "the project's reference (the dashboard's connection string shows it)"}


class Settings(BaseSettings):
    """Every setting supamove reads; each named after its environment variable."""

    # utf-8-sig: a .env saved by an editor that starts it with a byte-order mark reads the same.
    # env_ignore_empty: `MIGRATION_DATA_DIR=` keeps the default, as if it were not there.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8-sig", extra="ignore",
                                      case_sensitive=True, env_ignore_empty=True)

    SUPABASE_DB_URL: str | None = None
    DATABASE_URL: str | None = None
    STACK_AUTH_PROJECT_ID: str | None = None
    STACK_AUTH_SECRET_KEY: str | None = None
    STACK_AUTH_API_URL: str = "https://api.stack-auth.com"
    LOG_FILE_PATH: Path = Path("./migration.log")
    MIGRATION_DATA_DIR: Path = Path("./migration-data")
    _env_file: Path | None = PrivateAttr(default=None)  # the .env looked for, to name it when a setting is unset

    @field_validator("*", mode="before")
    @classmethod
    def _not_quoted(cls, value: Any) -> Any:
        """Quotes the environment kept (a .env's are taken off): no setting's value begins and ends with them."""
        if isinstance(value, str) and _quoted(value):
            raise ValueError(QUOTED)
        return value

    @field_validator("SUPABASE_DB_URL", "DATABASE_URL")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()  # a space or line break copied along would end up in sslmode or the database name
        if (placeholder := next((p for p in PLACEHOLDERS if p in value), None)) is not None:
            raise ValueError(f"still holds {placeholder} (from .env.example or the dashboard's connection string): "
                             f"put {PLACEHOLDERS[placeholder]} in its place")
        try:
            parts = urlsplit(value)
        except ValueError:  # brackets in the password, taken for an IPv6 host: its message would quote them
            raise ValueError(BRACKETS) from None
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
        # libpq ends the user part at the first @ (another host), and the host part at a / (the rest of the
        # password then reads as the database name)
        if parts.netloc.count("@") > 1 or "@" in parts.path:
            raise ValueError(ENCODE_SPECIAL)
        if (problem := _port_problem(value)) is not None:
            raise ValueError(problem)
        if _cut_short(value):  # never echo the value: it holds the password
            raise ValueError(ENCODE_SPECIAL)
        if (problem := _unknown_parameter(parts.query)) is not None:
            raise ValueError(problem)
        if re.search(r"%(?![0-9A-Fa-f]{2})", value):  # libpq refuses it, quoting the password
            raise ValueError("is not a valid URL: a % in the user or password must be followed by two hex digits "
                             "(write % itself as %25)")
        try:  # psycopg reads every part of the URL as UTF-8 text
            unquote_to_bytes(value).decode()
        except UnicodeDecodeError:
            raise ValueError("is not a valid URL: its %XX bytes are not UTF-8 text (write each character of the user "
                             "and password as its UTF-8 bytes, é as %C3%A9)") from None
        return value

    @field_validator("LOG_FILE_PATH", "MIGRATION_DATA_DIR")
    @classmethod
    def _home_expanded(cls, value: Path) -> Path:
        """`~/md` is the home directory's, as a shell would read it: .env expands `${HOME}` but not `~`, and a
        `~` left as it is became a directory of that name in the working directory."""
        return value.expanduser()

    @field_validator("STACK_AUTH_PROJECT_ID", "STACK_AUTH_SECRET_KEY")
    @classmethod
    def _header_value(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Sent as HTTP headers: a stray space, line break or accent would fail every request (and the
        error would quote the key). Never echoed. A blank one counts as unset (`require` says so)."""
        if value is None or not value.strip():
            return value
        if (other := _other_key(value, info.field_name)) is not None:
            raise ValueError(f"holds {other} (Stack Auth's keys begin pck_, ssk_ and sak_): put the secret server key "
                             "(ssk_…) in STACK_AUTH_SECRET_KEY and the project id in STACK_AUTH_PROJECT_ID "
                             "(Stack Auth dashboard: API Keys, Project Settings)")
        if value != value.strip() or not value.isascii() or not value.isprintable() or " " in value:
            raise ValueError("holds a space, a line break or a character other than plain ASCII: copy the value "
                             "again from the Stack Auth dashboard")
        return value

    @field_validator("STACK_AUTH_API_URL")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if (problem := web_url_problem(value)) is not None:
            raise ValueError(problem)
        return value.rstrip("/")

    def require(self, name: str) -> str:
        """The value of a setting a command cannot do without."""
        return self.require_all(name)[0]

    def require_all(self, *names: str) -> list[str]:
        """The values of settings a command needs together; every one unset is named in one error, so that
        a blank key beside a missing project id is not found only on the next run."""
        if missing := self.unset(*names):
            raise self.unset_error(*missing)
        return [str(getattr(self, name)) for name in names]

    def unset(self, *names: str) -> list[str]:
        """Those of `names` that are not set: absent, empty or blank."""
        return [name for name in names if not str(getattr(self, name) or "").strip()]

    def unset_error(self, *names: str) -> ConfigError:
        """The error for settings that are not set; names the .env looked for when there is none."""
        subject = " and ".join(names) + (" are" if len(names) > 1 else " is")
        help_text = "; ".join(f"{name}: {SETTING_HELP[name]}" for name in names) if len(names) > 1 \
            else SETTING_HELP[names[0]]
        env_file = self._env_file
        if env_file is not None and not env_file.exists():
            folder = env_file.resolve().parent
            return ConfigError(f"{subject} not set and .env was not found in {folder}",
                               fix=f"copy .env.example to {folder / env_file.name} and fill it in, or set "
                                   f"{' and '.join(names)} in the environment ({help_text})")
        if strays := stray_keys(env_file, names):  # SOURCE_DATABSE_URL, supabase_db_url: read by nothing
            renames = ", ".join(f"{key} to {meant}" for key, meant in strays)
            return ConfigError(f"{subject} not set; {env_file} has {', '.join(k for k, _ in strays)}, which supamove "
                               "does not read", fix=f"in {env_file}, rename {renames} ({help_text})")
        return ConfigError(f"{subject} not set",
                           fix=f"set {' and '.join(names)} in .env or the environment ({help_text})")

    @property
    def source_url(self) -> str:
        return self.require("SUPABASE_DB_URL")

    @property
    def target_url(self) -> str:
        return self.require("DATABASE_URL")


# Stack Auth's key prefixes (its backend's api-keys: pck_, ssk_, sak_): the one key a server sends is ssk_.
OTHER_KEYS = {"pck_": "a publishable client key", "sak_": "a super secret admin key", "ssk_": "a secret server key"}


def _other_key(value: str, setting: str | None) -> str | None:
    """What a Stack Auth setting holds in place of its own value (another of the dashboard's keys), or None."""
    kind = next((kind for prefix, kind in OTHER_KEYS.items() if value.startswith(prefix)), None)
    if kind is None or (setting == "STACK_AUTH_SECRET_KEY" and value.startswith("ssk_")):
        return None
    return kind


def _quoted(value: str) -> bool:
    """Whether the value is wrapped in a pair of quotes, which no setting's value begins and ends with."""
    value = value.strip()
    return len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'"


def _cut_short(url: str) -> bool:
    """Whether a character of the password that is not percent-encoded (# / ?) ends the host part early."""
    parts = urlsplit(url)
    if any(not port.isdigit() for port in _ports(parts.netloc) if port):  # the password spilled into a port
        return True
    return bool(parts.fragment)


def _ports(netloc: str) -> list[str]:
    """The port of each host of a URL's host part, '' where none is given: libpq takes several hosts,
    `h1:5432,h2:5433`, and tries them in turn."""
    ports = []
    for host_port in netloc.rpartition("@")[2].split(","):
        if host_port.startswith("["):  # an IPv6 address: [::1]:5432
            host_port = host_port.partition("]")[2]
        ports.append(host_port.partition(":")[2])
    return ports


def web_url_problem(url: str) -> str | None:
    """Why `url` is not an http(s) URL of a host, or None."""
    try:
        parts = urlsplit(url)
    except ValueError:  # a [ or ] not around an IPv6 address
        return "is not a valid URL: a [ or ] belongs only around an IPv6 address, like https://[2001:db8::1]/"
    if parts.scheme not in ("http", "https"):
        return "must be an http(s):// URL"
    if not parts.hostname:
        return "must name a host, like https://app.example.com/..."
    try:
        parts.port  # noqa: B018 -- parsing it raises on a port that is no number, or out of range
    except ValueError:
        return "has a port that is not a number from 1 to 65535"
    return None


def _port_problem(url: str) -> str | None:
    """Why the port of a URL whose host part is whole is no server's port (not a number, out of range), else None."""
    netloc = urlsplit(url).netloc
    if "@" not in netloc and "@" in url:  # the password ended the host part early: not a port
        return None
    for port in _ports(netloc):
        if port and not port.isdigit():
            return f"has a port that is not a number ('{port}'): use the server's port, e.g. 5432"
        if port and not 0 < int(port) < 65536:
            return f"has a port out of range ({port}): use the server's port, e.g. 5432"
    return None


def _unknown_parameter(query: str) -> str | None:
    """Why a URL query parameter libpq does not know would fail, naming the one meant; else None."""
    known = [d.keyword.decode() for d in psycopg.pq.Conninfo.get_defaults()]
    for name, _ in parse_qsl(query, keep_blank_values=True):
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            return f"has an unknown parameter '{name}'" + (f": did you mean '{close[0]}'?" if close else "")
    return None


def env_keys(env_file: Path | None) -> list[str]:
    """The keys of the .env file; none when there is no such file or it is not UTF-8 (load_settings says so)."""
    if env_file is None or not env_file.is_file():
        return []
    try:
        return list(dotenv_values(env_file, encoding="utf-8-sig"))
    except UnicodeDecodeError:
        return []


def stray_keys(env_file: Path | None, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """The .env's keys that are no setting but look like one of the unset `names`, each with the one it looks
    like: a typo too far for misspelled_settings' warning (SOURCE_DATABSE_URL), the name in lower case."""
    known = list(Settings.model_fields)
    others = [name for name in known if name not in names]
    strays = []
    for key in (k for k in env_keys(env_file) if k not in known):
        if key.upper() in known:  # supabase_db_url: that setting, in lower case
            meant = [key.upper()] if key.upper() in names else []
        else:
            meant = difflib.get_close_matches(key.upper(), names, n=1, cutoff=0.6)
        if meant and not difflib.get_close_matches(key.upper(), others, n=1, cutoff=0.8):  # else: that one's typo
            strays.append((key, meant[0]))
    return strays


def misspelled_settings(env_file: Path) -> list[str]:
    """A warning for each key of the .env file that looks like a misspelled supamove setting, and for a
    .env other users of the machine may read (it holds the database passwords and the secret key)."""
    if not env_file.is_file():
        return []
    known = list(Settings.model_fields)
    warnings = []
    mode = env_file.stat().st_mode & 0o777
    if mode & 0o077:
        warnings.append(f"{env_file} may be read by other users of this machine (mode {mode:o}) and holds "
                        f"passwords: chmod 600 {env_file}")
    for key in env_keys(env_file):
        if key in known:
            continue
        close = difflib.get_close_matches(key.upper(), known, n=1, cutoff=0.8)  # supabase_db_url too
        if close:
            warnings.append(f"{env_file}: {key} is not a supamove setting; did you mean {close[0]}? "
                            f"(it is ignored)")
    return warnings


def load_settings(data_dir: Path | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Read the settings; a malformed one is a ConfigError naming the variable."""
    try:
        settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{env_file} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at position {exc.start})",
                          fix=f"save {env_file} as UTF-8") from None
    except ValidationError as exc:
        problem = exc.errors()[0]
        name = str(problem["loc"][0]) if problem["loc"] else "a setting"
        message = str(problem["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{name} {message}", fix=f"correct {name} in .env or the environment") from None
    settings._env_file = Path(env_file) if env_file is not None else None
    if data_dir is not None:  # `--data-dir=~/md`: no shell expands a ~ after the =
        settings.MIGRATION_DATA_DIR = data_dir.expanduser()
    return settings
