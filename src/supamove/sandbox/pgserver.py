"""Throwaway PostgreSQL servers on loopback, for the tests, the demo and the benchmark."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from supamove.errors import SupamoveError
from supamove.pgtools import find_bindir

SUPERUSER = "postgres"


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as an unprivileged account."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise SupamoveError("running as root and no unprivileged account to run PostgreSQL as",
                        fix="run as a normal user, or create the account 'postgres'")


def _primary_group(user: str) -> int:
    return pwd.getpwnam(user).pw_gid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """One initdb'd cluster in a temporary directory, started with pg_ctl on 127.0.0.1."""

    name: str = "pg"
    port: int = 0
    root: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    bindir: Path = field(default_factory=find_bindir)

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self._own_root = self.root is None
        self.root = self.root or Path(tempfile.mkdtemp(prefix=f"supamove-{self.name}-"))
        self.datadir = self.root / "data"
        self._user = _server_user()
        if self._user:
            shutil.chown(self.root, self._user, _primary_group(self._user))
        self.logfile = self.root / "server.log"

    def url(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}?sslmode=disable"

    def start(self) -> PostgresServer:
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
                  "-o", self._options(), "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop("immediate")
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        if self._own_root and self.root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _initdb(self) -> None:
        self._run("initdb", "-D", str(self.datadir), "-U", SUPERUSER, "-A", "trust",
                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        with open(self.datadir / "pg_hba.conf", "w") as hba:
            # Password roles in the tests must really need their password.
            hba.write("local all all trust\n")
            hba.write("host all postgres 127.0.0.1/32 trust\n")
            hba.write("host all all 127.0.0.1/32 scram-sha-256\n")

    def _options(self) -> str:
        base = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "60",
            "shared_buffers": "128MB",
            "max_wal_size": "2GB",
        }
        base.update(self.settings)
        return " ".join(f"-c {key}={value}" for key, value in base.items())

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        result = subprocess.run(
            [str(self.bindir / tool), *args], capture_output=True, text=True,
            user=self._user, group=_primary_group(self._user) if self._user else None,
        )
        if check and result.returncode != 0:
            log = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
            raise SupamoveError(f"{tool} failed: {result.stderr.strip()} {log}".strip())

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
