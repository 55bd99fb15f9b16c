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
    """A setting is missing or malformed, or pg_dump or pg_restore is missing or too old."""

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


INTERRUPTED = 130  # Ctrl-C: the shell's code for SIGINT; rerunning the command resumes


def exit_codes() -> str:
    """What each exit code means, for every command's --help (the README lists the same)."""
    codes = {0: "Done", 1: "Unexpected error, or a failure of no other kind"}
    family = list(SupamoveError.__subclasses__())
    for kind in family:  # the direct subclasses first: each names its code
        family += kind.__subclasses__()
        text = (kind.__doc__ or "").strip().rstrip(".")
        codes.setdefault(kind.exit_code, text[:1].upper() + text[1:])
    codes[2] += " (or a command-line option is wrong)"
    codes[INTERRUPTED] = "Interrupted (Ctrl-C): run the same command again to resume"
    return "Exit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in sorted(codes.items()))
