"""The one exception family the operator sees: a message and the fix."""

from __future__ import annotations


class SupamoveError(Exception):
    """An error the operator can fix; shown as one line, never a traceback."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


class ConfigError(SupamoveError):
    """A setting is missing or malformed."""

    exit_code = 2


class SourceError(SupamoveError):
    """The source (Supabase) database failed or refused."""

    exit_code = 3


class TargetError(SupamoveError):
    """The target database failed or refused."""

    exit_code = 4


class DataFileError(SupamoveError):
    """A file in the data directory is missing, damaged or of another format."""

    exit_code = 5


class StackAuthError(SupamoveError):
    """Stack Auth refused or failed."""

    exit_code = 6


class VerificationFailed(SupamoveError):
    """verify found a table that does not match."""

    exit_code = 7
