"""pg_dump --schema-only of the application schemas, its table of contents, and the kept part as SQL."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from supamove.db import Endpoint, libpq_query, without_key_password, without_password
from supamove.errors import ConfigError, SupamoveError
from supamove.log import add_secret, get_logger, scrub
from supamove.pgtools import find_client, program_major
from supamove.schema.model import TocEntry

log = get_logger("schema")
_ENTRY = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_DEPENDS = re.compile(r"^;\s+depends on:((?: \d+)*)\s*$")
# pg_dump's object descriptions (pg_backup_archiver.c); the longest one a line starts with wins.
TOC_TYPES = sorted([
    "ACCESS METHOD", "ACL", "AGGREGATE", "BLOB", "BLOB METADATA", "BLOBS", "CAST", "CHECK CONSTRAINT",
    "COLLATION", "COMMENT", "CONSTRAINT", "CONVERSION", "DATABASE", "DATABASE PROPERTIES", "DEFAULT",
    "DEFAULT ACL", "DOMAIN", "ENCODING", "EVENT TRIGGER", "EXTENSION", "FK CONSTRAINT",
    "FOREIGN DATA WRAPPER", "FOREIGN TABLE", "FUNCTION", "INDEX", "INDEX ATTACH", "LARGE OBJECT",
    "MATERIALIZED VIEW", "MATERIALIZED VIEW DATA", "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY",
    "POLICY", "PROCEDURAL LANGUAGE", "PROCEDURE", "PUBLICATION", "PUBLICATION TABLE",
    "PUBLICATION TABLES IN SCHEMA", "ROW SECURITY", "RULE", "SCHEMA", "SEARCHPATH", "SECURITY LABEL",
    "SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET", "SERVER", "SHELL TYPE", "STATISTICS", "STATISTICS DATA",
    "STDSTRINGS", "SUBSCRIPTION", "SUBSCRIPTION TABLE", "TABLE", "TABLE ATTACH", "TABLE DATA",
    "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE",
    "TRANSFORM", "TRIGGER", "TYPE", "USER MAPPING", "VIEW",
], key=len, reverse=True)


@dataclass(frozen=True)
class Programs:
    """pg_dump and pg_restore, new enough for the source server."""

    pg_dump: Path
    pg_restore: Path

    @classmethod
    def find(cls, source_major: int) -> Programs:
        """pg_dump new enough for the source, and the pg_restore beside it (it reads what it writes)."""
        pg_dump = find_client("pg_dump", source_major)
        beside = pg_dump.parent / "pg_restore"
        return cls(pg_dump, beside if beside.exists() else find_client("pg_restore", program_major(pg_dump)))

    def version(self) -> str:
        return subprocess.run([str(self.pg_dump), "--version"], capture_output=True, text=True).stdout.strip()


def libpq_environment(endpoint: Endpoint, folder: Path) -> tuple[str, dict[str, str]]:
    """The connection URL without its password, and an environment giving it as PGPASSWORD.

    A password on the command line would be visible to every user of the machine (ps). So would the client
    key's `sslpassword`, which no environment variable gives: it goes in a service file in `folder` (private).
    """
    url, password = without_password(endpoint.conninfo())
    url, key_password = without_key_password(url)
    env = dict(os.environ)
    if password is not None:
        add_secret(password)
        env["PGPASSWORD"] = password
    if key_password is not None:
        add_secret(key_password)
        if any(k == "service" for k, _ in libpq_query(urlsplit(url).query)):  # one service a connection
            raise ConfigError("the database URL names a service and an sslpassword: pg_dump can be given the "
                              "sslpassword only by a service of supamove's", fix="put sslpassword in your service's "
                              "entry of pg_service.conf instead of the URL")
        env["PGSERVICEFILE"] = str(_service_file(folder, key_password))
        url += ("&" if "?" in url else "?") + f"service={SERVICE}"
    return url, env


SERVICE = "supamove"


def _service_file(folder: Path, key_password: str) -> Path:
    """A pg_service.conf giving the client key's password to the `supamove` service, readable by its owner only."""
    if key_password != key_password.strip() or "\n" in key_password:  # a line of the file, trimmed by libpq
        raise ConfigError("the sslpassword in the database URL starts or ends with a space, or holds a line break: "
                          "pg_dump cannot be given it", fix="give the client key a password without them")
    path = folder / "pg_service.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"[{SERVICE}]\nsslpassword={key_password}\n")
    return path


def schema_pattern(name: str) -> str:
    """A schema name as a pg_dump pattern matching only itself (quoted: no wildcards, case kept)."""
    return '"' + name.replace('"', '""') + '"'


def dump_schema(programs: Programs, source: Endpoint, schemas: list[str], folder: Path,
                skip: Sequence[tuple[str, str]] = ()) -> Path:
    """pg_dump --schema-only of `schemas` in the custom format, less the tables `skip` names; its path."""
    url, env = libpq_environment(source, folder)
    path = folder / "schema.dump"
    args = [str(programs.pg_dump), "--schema-only", "--format=custom", f"--file={path}", "--dbname", url]
    args += [f"--schema={schema_pattern(s)}" for s in schemas]
    args += [f"--exclude-table={schema_pattern(s)}.{schema_pattern(t)}" for s, t in skip]
    _run(args, env, source.error, "pg_dump could not read the source schema",
         "check SUPABASE_DB_URL and that its user can read the application schemas")
    return path


def read_toc(programs: Programs, dump: Path, schemas: Sequence[str] = ()) -> list[TocEntry]:
    """The dump's table of contents with each entry's dependencies (`pg_restore -l -v`); `schemas`, those
    dumped, tell a schema name holding a space from the object's name after it."""
    out = _run([str(programs.pg_restore), "--list", "--verbose", str(dump)], dict(os.environ),
               SupamoveError, "pg_restore could not list the dump", "check the pg_restore installation")
    entries: list[TocEntry] = []
    for line in out.splitlines():
        match = _ENTRY.match(line)
        if match:
            entries.append(parse_entry(line, match, schemas))
            continue
        deps = _DEPENDS.match(line)
        if deps and entries:
            entries[-1].depends_on = tuple(int(d) for d in deps.group(1).split())
    return entries


def parse_entry(line: str, match: re.Match[str], schemas: Sequence[str] = ()) -> TocEntry:
    """`215; 1259 16386 TABLE public notes owner`: the type may hold spaces, so may the schema and the name
    (pg_restore lists them unquoted: a dumped schema's whole name is looked for first, the longest)."""
    rest = match.group(4)
    kind = next((t for t in TOC_TYPES if rest == t or rest.startswith(t + " ")), rest.split(" ", 1)[0])
    after = rest[len(kind) + 1:]
    spaced = next((s for s in sorted(schemas, key=len, reverse=True) if " " in s and after.startswith(s + " ")), None)
    schema, _, tail = (spaced, " ", after[len(spaced) + 1:]) if spaced else after.partition(" ")
    name, _, owner = tail.rpartition(" ")
    return TocEntry(int(match.group(1)), int(match.group(2)), int(match.group(3)), kind, schema, name, owner,
                    line=line)


def render(programs: Programs, dump: Path, kept: list[TocEntry], folder: Path) -> str:
    """The kept entries as SQL, without owners (the target's objects belong to whoever applies them)."""
    listing = folder / "kept.list"
    listing.write_text("".join(e.line + "\n" for e in kept))
    key = secrets.token_hex(16)
    args = [str(programs.pg_restore), "--no-owner", f"--use-list={listing}", "--file=-", str(dump)]
    restricted = "--restrict-key" in _run([str(programs.pg_restore), "--help"], dict(os.environ),
                                          SupamoveError, "pg_restore --help failed", "check pg_restore")
    if restricted:
        args.insert(1, f"--restrict-key={key}")
    text = _run(args, dict(os.environ), SupamoveError, "pg_restore could not render the schema",
                "check the pg_restore installation")
    # psql meta-commands (pg_dump 15.14 and later) that no server understands: dropped, key known.
    meta = {f"\\restrict {key}", f"\\unrestrict {key}"}
    return "".join(line for line in text.splitlines(keepends=True) if line.rstrip("\n") not in meta)


def public_revokes(programs: Programs, dump: Path, entries: list[TocEntry], folder: Path) -> str:
    """The REVOKE ... FROM PUBLIC statements of these ACL entries, without their grants (see TocEntry.only_revokes)."""
    if not entries:
        return ""
    text = render(programs, dump, entries, folder)
    lines = [line for line in text.splitlines() if line.startswith("REVOKE ") and line.endswith(" FROM PUBLIC;")]
    return "\n-- Revoked from every role on the source (their grants are left out: see schema-report.json)\n" + \
        "".join(line + "\n" for line in lines)


def _run(args: list[str], env: dict[str, str], error: Callable[[str, str], SupamoveError], what: str,
         fix: str) -> str:
    """The program's output; its first error line, secrets scrubbed, as `error` when it fails."""
    log.debug("running %s", args[0])
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise error(f"{what}: {scrub(lines[0] if lines else f'exit code {result.returncode}')}", fix)
    return result.stdout
