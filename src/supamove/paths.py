"""Every path in the data directory, in one place."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from supamove.errors import ConfigError, DataFileError

DATA_DIR_SETTING = "MIGRATION_DATA_DIR or --data-dir"  # what names the data directory, in every fix

FORMAT_VERSION = 2  # 2: application tables in COPY text (`.copy`); version 1's JSON Lines still read
READ_VERSIONS = (1, 2)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def table_file_name(schema: str, table: str, suffix: str = "copy") -> str:
    """`public.readings.copy`; any other character is %-escaped so every name maps to one file, and so is a
    dot in the schema's name: the first dot ends it (x."y.z" and "x.y".z were both x.y.z.copy)."""

    def safe(part: str) -> str:
        return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), part)

    return f"{safe(schema).replace('.', '%2E')}.{safe(table)}.{suffix}"


@dataclass(frozen=True)
class DataDir:
    """The layout of MIGRATION_DATA_DIR."""

    root: Path

    @property
    def metadata(self) -> Path:  # migration-data/metadata.json
        return self.root / "metadata.json"

    @property
    def tables(self) -> Path:  # migration-data/tables/public.readings.copy
        return self.root / "tables"

    @property
    def auth(self) -> Path:  # migration-data/auth/auth.users.jsonl
        return self.root / "auth"

    @property
    def user_mapping(self) -> Path:  # migration-data/user-mapping.json
        return self.root / "user-mapping.json"

    @property
    def users_report(self) -> Path:  # migration-data/user-migration-report.json
        return self.root / "user-migration-report.json"

    @property
    def password_resets(self) -> Path:  # migration-data/password-reset-required.json
        return self.root / "password-reset-required.json"

    @property
    def password_resets_sent(self) -> Path:  # migration-data/password-resets-sent.json
        return self.root / "password-resets-sent.json"

    @property
    def pending_resets(self) -> Path:  # migration-data/password-resets-pending.jsonl
        return self.root / "password-resets-pending.jsonl"

    @property
    def mfa_not_carried(self) -> Path:  # migration-data/mfa-not-carried.json
        return self.root / "mfa-not-carried.json"

    @property
    def pending_creates(self) -> Path:  # migration-data/user-creates-pending.jsonl
        return self.root / "user-creates-pending.jsonl"

    @property
    def pending_updates(self) -> Path:  # migration-data/user-updates-pending.jsonl
        return self.root / "user-updates-pending.jsonl"

    @property
    def user_sync_state(self) -> Path:  # migration-data/user-sync-state.json
        return self.root / "user-sync-state.json"

    @property
    def verification_report(self) -> Path:  # migration-data/verification-report.json
        return self.root / "verification-report.json"

    @property
    def verification_counts_report(self) -> Path:  # migration-data/verification-counts-report.json
        """Where `verify --skip-checksum` writes when verification-report.json holds a full verification."""
        return self.root / "verification-counts-report.json"

    def set_aside_verification(self) -> list[Path]:
        """A load about to change the target makes the last verification's verdict stale: its reports become
        `*.previous.json`, so that a run stopped before its own verify leaves no pass that no longer holds."""
        moved = []
        for path in (self.verification_report, self.verification_counts_report):
            previous = path.with_name(path.name.removesuffix(".json") + ".previous.json")
            try:
                os.replace(path, previous)
            except FileNotFoundError:  # none, or set aside meanwhile by a load beside this one (`migrate`)
                continue
            moved.append(previous)
        return moved

    @property
    def schema_sql(self) -> Path:  # migration-data/schema.sql
        return self.root / "schema.sql"

    @property
    def schema_report(self) -> Path:  # migration-data/schema-report.json
        return self.root / "schema-report.json"

    @property
    def lock(self) -> Path:  # migration-data/supamove.lock (the command and process using the directory)
        return self.root / "supamove.lock"

    def table_file(self, schema: str, table: str, fmt: str = "copy") -> Path:
        """An application table's file, COPY text or JSON Lines (`fmt`); an auth table's is always JSON Lines,
        which migrate-users reads."""
        if schema == "auth":
            return self.auth / table_file_name(schema, table, "jsonl")
        return self.tables / table_file_name(schema, table, fmt)

    def export_file(self, relative: str) -> Path:
        """An exported file named in metadata.json (`tables/public.readings.copy`), inside the directory."""
        path = self.root / relative
        if ".." in Path(relative).parts or Path(relative).is_absolute():
            raise DataFileError(f"{self.metadata} names the file {relative!r}, outside {self.root}",
                                fix="restore metadata.json, or run `supamove export --force` to export again")
        return path

    def ensure(self) -> DataDir:
        """Create the directory (0700) and its folders; a file in the way is a ConfigError."""
        for folder in (self.root, self.tables, self.auth):
            if folder.exists() and not folder.is_dir():
                raise ConfigError(f"data directory {folder} is a file, not a directory",
                                  fix=f"set {DATA_DIR_SETTING} to a directory path")
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        return self

    def check_exists(self) -> DataDir:
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"data directory {self.root} is a file, not a directory",
                              fix=f"set {DATA_DIR_SETTING} to a directory path")
        return self
