"""Step 1: can every endpoint be reached and used the way the later steps will use it?"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg

from supamove import catalog
from supamove.config import Settings
from supamove.db import TRANSACTION_POOLER_WARNING, Endpoint, connect
from supamove.errors import SupamoveError
from supamove.guard import (
    ServerIdentity,
    server_identity,
    supabase_traits,
    target_on_source_server,
    target_problem,
)
from supamove.log import add_secret, get_logger, scrub
from supamove.paths import DataDir
from supamove.pgtools import LARGE_OBJECTS_COMMAND
from supamove.usermap import UserMapping
from supamove.words import counted

log = get_logger("connections")
STACK_AUTH_CREDENTIALS = ("STACK_AUTH_PROJECT_ID", "STACK_AUTH_SECRET_KEY")


@dataclass
class EndpointCheck:
    name: str
    configured: bool = True
    reachable: bool = False
    version: str = ""
    encrypted: bool | None = None
    latency_ms: float | None = None
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    identity: ServerIdentity | None = None  # databases: told apart to refuse a target that is the source
    traits: list[str] = field(default_factory=list)  # the target: what makes it look like a Supabase project
    # What was checked (never a password): a database's host, port, database and user, Stack Auth's API URL
    # and project id. Shown so that a .env naming the staging project or database is seen before the cutover.
    place: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """`user@host:port/database`, or `project <id>`; empty when unset."""
        if not self.place or "projectId" in self.place:
            return f"project {self.place['projectId']}" if self.place.get("projectId") else ""
        return f"{self.place['user']}@{self.place['host']}:{self.place['port']}/{self.place['database']}"

    @property
    def usable(self) -> bool:
        """Configured, reached and without an error: an unset endpoint is not usable."""
        return self.configured and self.reachable and not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "configured": self.configured, "reachable": self.reachable,
                "usable": self.usable, "version": self.version or None, "tls": self.encrypted,
                "latencyMs": None if self.latency_ms is None else round(self.latency_ms, 1),
                **self.place, "warnings": self.warnings, "errors": self.errors}


@dataclass
class ConnectionReport:
    """The checks of the source, the target and Stack Auth."""

    source: EndpointCheck
    target: EndpointCheck
    stack_auth: EndpointCheck

    @property
    def checks(self) -> list[EndpointCheck]:
        return [self.source, self.target, self.stack_auth]

    @property
    def ok(self) -> bool:
        """The source, the target and Stack Auth are all configured and usable."""
        return all(c.usable for c in self.checks)

    def failure(self) -> SupamoveError | None:
        """Why a later step would fail (the checks name the settings at fault), or None."""
        if self.ok:
            return None
        return SupamoveError("not every endpoint is usable", fix="correct the settings named above")

    def to_dict(self) -> dict[str, Any]:
        """`test-connections --json`: whether every endpoint is usable, then each endpoint's checks."""
        return {"ok": self.ok, "endpoints": [c.to_dict() for c in self.checks]}


def check_connections(settings: Settings, datadir: DataDir | None = None) -> ConnectionReport:
    """Check the source, the target and Stack Auth (with the users of the data directory's user-mapping.json);
    an unset endpoint fails, its setting named."""
    report = ConnectionReport(
        _check_database(settings, "source", "source (SUPABASE_DB_URL)", _check_source),
        _check_database(settings, "target", "target (DATABASE_URL)", _check_target),
        check_stack_auth(settings, datadir),
    )
    if report.target.identity is not None:
        problem = target_problem(report.target.identity, report.target.traits, report.source.identity)
        if problem is not None:
            report.target.errors.append(f"refused: {problem}")
        elif (warning := target_on_source_server(report.target.identity, report.source.identity)) is not None:
            report.target.warnings.append(warning)
    for check in report.checks:
        for message in check.errors:
            log.debug("%s: %s", check.name, message)
    return report


def _check_database(settings: Settings, side: str, name: str, extra) -> EndpointCheck:  # type: ignore[no-untyped-def]
    check = EndpointCheck(name)
    setting = "SUPABASE_DB_URL" if side == "source" else "DATABASE_URL"
    url = getattr(settings, setting)
    if not url:
        check.configured = False
        check.errors.append(str(settings.unset_error(setting)))
        return check
    endpoint = Endpoint(url, side)  # type: ignore[arg-type]
    check.place = endpoint.place()
    if (refusal := endpoint.pooler_refusal()) is not None:
        check.errors.append(str(refusal))
        return check
    if endpoint.transaction_pooler:  # a self-hosted target on that port need not be a transaction pooler
        check.warnings.append(TRANSACTION_POOLER_WARNING)
    try:
        with connect(endpoint, autocommit=True) as conn:
            check.reachable = True
            check.place = _connected_place(conn)
            check.version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            check.encrypted = bool(conn.pgconn.ssl_in_use)
            check.latency_ms = _latency(conn)
            check.identity = server_identity(conn)
            extra(conn, check)
    except SupamoveError as exc:
        check.errors.append(str(exc))
    except psycopg.Error as exc:
        check.errors.append(scrub(str(exc).strip().splitlines()[0]))
    return check


def _connected_place(conn: psycopg.Connection) -> dict[str, Any]:
    """Where libpq connected: of several hosts, the one that answered; the defaults it filled in."""
    info = conn.info
    return {"host": info.host, "port": info.port, "database": info.dbname, "user": info.user}


def _latency(conn: psycopg.Connection) -> float:
    samples = []
    for _ in range(3):
        started = time.perf_counter()
        conn.execute("SELECT 1")
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _check_source(conn: psycopg.Connection, check: EndpointCheck) -> None:
    if not check.encrypted:
        check.warnings.append("the source connection is not encrypted: add ?sslmode=require "
                              "(or verify-full with sslrootcert=the project's CA file) to SUPABASE_DB_URL")
    _large_objects(conn, check)
    has_auth = conn.execute("SELECT to_regclass('auth.users') IS NOT NULL").fetchone()[0]  # type: ignore[index]
    if not has_auth:
        check.warnings.append("no auth.users table: this source has no Supabase Auth users to migrate")
        return
    row = conn.execute("SELECT has_table_privilege('auth.users', 'SELECT') "
                       "AND has_table_privilege('auth.identities', 'SELECT')").fetchone()
    if not (row and row[0]):
        check.errors.append("this user may not read auth.users and auth.identities: "
                            "use the postgres user in SUPABASE_DB_URL")
    elif catalog.filtered_by_rls(conn, [("auth", "users")]):  # the rule export and verify refuse by
        check.errors.append("row-level security hides auth.users from this user (no BYPASSRLS): "
                            "use the postgres user in SUPABASE_DB_URL")


def _large_objects(conn: psycopg.Connection, check: EndpointCheck) -> None:
    """Large objects are the source's data too, and supamove moves none: said before the freeze, with the command
    that does (verify fails until the target holds them)."""
    count = int(conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0])  # type: ignore[index]
    if count:
        check.warnings.append(f"the source holds {counted(count, 'large object')} (pg_largeobject), which "
                              f"supamove does not move: after the import, run {LARGE_OBJECTS_COMMAND} (`supamove "
                              "verify` fails until the target holds them)")


# The tables of these schemas that the user does not own.
NOT_OWNED_SQL = """
SELECT n.nspname, c.relname, current_user FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = ANY(%s)
  AND NOT pg_has_role(c.relowner, 'USAGE')
ORDER BY 1, 2
"""


def _tables_not_owned(conn: psycopg.Connection, check: EndpointCheck) -> None:
    """The load sets each table's indexes, keys and triggers aside and makes them again: only its owner may.
    (INSERT, SELECT and TRUNCATE on them passed here, and the import then refused the same user.) An error for
    `public`, which every export reads; a warning for another schema, which only `--schema` exports."""
    schemas = [schema.name for schema in catalog.application_schemas(conn)]
    rows = conn.execute(NOT_OWNED_SQL, (schemas,)).fetchall() if schemas else []
    if not rows:
        return
    public, other = ([catalog.qualify(r[0], r[1]) for r in rows if (r[0] == "public") is wanted]
                     for wanted in (True, False))
    why = ("the import makes their indexes and keys again, which only a table's owner may do: "
           f"{catalog.owner_fix(str(rows[0][2]))}")
    if public:
        check.errors.append(f"this user does not own {catalog.listed(public)}: {why}")
    if other:
        check.warnings.append(f"this user does not own {catalog.listed(other)}: an export of their schema "
                              f"(--schema) would not load; {why}")


def _check_target(conn: psycopg.Connection, check: EndpointCheck) -> None:
    check.traits = supabase_traits(conn)
    _tables_not_owned(conn, check)
    can_create = conn.execute(
        # by the schema's oid: NULL, not an error, when it does not exist yet
        "SELECT has_database_privilege(current_database(), 'CREATE') "
        "OR has_schema_privilege(s.oid, 'USAGE') IS TRUE "
        "FROM (SELECT to_regnamespace('_supamove') AS oid) s").fetchone()
    if can_create and not can_create[0]:
        check.errors.append("this user may not create the _supamove schema that records import progress: "
                            "GRANT CREATE ON DATABASE to the user in DATABASE_URL")
    elif fix := catalog.progress_schema_fix(conn):
        check.errors.append(f"this user {catalog.PROGRESS_SCHEMA_CLOSED}: {fix}")


def check_stack_auth(settings: Settings, datadir: DataDir | None = None) -> EndpointCheck:
    check = EndpointCheck(f"Stack Auth ({settings.STACK_AUTH_API_URL})")
    check.place = {"apiUrl": settings.STACK_AUTH_API_URL, "projectId": settings.STACK_AUTH_PROJECT_ID or None}
    if missing := settings.unset(*STACK_AUTH_CREDENTIALS):
        check.configured = len(missing) < len(STACK_AUTH_CREDENTIALS)
        check.errors.append(str(settings.unset_error(*missing)))
        return check
    project, secret = settings.require_all(*STACK_AUTH_CREDENTIALS)
    add_secret(secret)
    headers = {"x-stack-access-type": "server", "x-stack-project-id": project,
               "x-stack-secret-server-key": secret}
    try:  # one connection for the list and the mapping's users (a CA file that cannot be read: an OSError here)
        with httpx.Client(base_url=settings.STACK_AUTH_API_URL, headers=headers, timeout=15) as http:
            _answers(check, http, settings.STACK_AUTH_API_URL, datadir, project)
    except (httpx.HTTPError, OSError) as exc:  # OSError: a CA file (SSL_CERT_FILE) that cannot be read
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        check.errors.append(f"cannot reach Stack Auth: {scrub(text)}: check STACK_AUTH_API_URL "
                            "(for https, the server's certificate and SSL_CERT_FILE)")
    return check


def _answers(check: EndpointCheck, http: httpx.Client, api_url: str, datadir: DataDir | None, project: str) -> None:
    """The user list's first page answered with the credentials; then the mapping's users looked up."""
    started = time.perf_counter()
    answer = http.get("/api/v1/users", params={"limit": 1})
    check.latency_ms = (time.perf_counter() - started) * 1000
    check.reachable = True
    check.encrypted = api_url.startswith("https://")
    if answer.status_code in (401, 403):
        check.errors.append(f"Stack Auth refused the credentials ({answer.status_code}): "
                            "check STACK_AUTH_PROJECT_ID and STACK_AUTH_SECRET_KEY")
    elif answer.status_code in (404, 405) and not answer.headers.get("x-stack-known-error"):
        # the route itself is not there (not a known error of Stack Auth's): a URL ending in /api/v1, or no Stack Auth
        check.errors.append(f"Stack Auth has no GET {answer.request.url.path} ({answer.status_code}): check "
                            "STACK_AUTH_API_URL points at Stack Auth's API (without /api/v1)")
    elif answer.status_code != 200:
        check.errors.append(f"Stack Auth answered {answer.status_code}: {scrub(answer.text[:200])}")
    elif not _user_list(answer):  # a web page: the dashboard's, or a proxy's sign-in page
        kind = answer.headers.get("content-type", "no content type").partition(";")[0]
        check.errors.append(f"GET {answer.request.url.path} answered 200 with no user list ({kind}): check "
                            "STACK_AUTH_API_URL points at Stack Auth's API (https://api.stack-auth.com for the hosted "
                            "one), not its dashboard")
    elif datadir is not None:
        _mapped_users_here(check, http, datadir.user_mapping, project)


def _user_list(answer: httpx.Response) -> bool:
    """Whether the answer is Stack Auth's list of users (a JSON object with its items)."""
    try:
        body = answer.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("items"), list)


MAPPING_SAMPLE = 10  # users of user-mapping.json looked up in Stack Auth


def _mapped_users_here(check: EndpointCheck, http: httpx.Client, path: Path, project: str) -> None:
    """The users an earlier migrate-users mapped are in this Stack Auth: another Stack Auth holding the same
    project (a staging copy) would get the cutover's new users, and migrate-users would stop once it found
    none of the mapped ones there. Up to MAPPING_SAMPLE of them, spread over the mapping (users deleted on
    purpose tend to be neighbours: a rehearsal's first ones), are looked up; the first found ends it."""
    if not path.exists():
        return
    try:
        mapping = UserMapping.load(path)
        mapping.check_project(project)
    except SupamoveError as exc:
        check.errors.append(str(exc))
        return
    entries = list(mapping.entries.values())
    count = min(MAPPING_SAMPLE, len(entries))  # evenly spaced, the first and the last among them
    sample = [entries[index]["stackAuthUserId"]
              for index in sorted({round(i * (len(entries) - 1) / max(1, count - 1)) for i in range(count)})]
    try:
        if not sample or any(http.get(f"/api/v1/users/{quote(stack_id)}").status_code == 200 for stack_id in sample):
            return
    except httpx.HTTPError as exc:  # reached a moment ago: said, not taken for an answer
        check.warnings.append(f"could not look up the users of {path} in Stack Auth: {scrub(str(exc))}")
        return
    check.errors.append(
        f"none of {len(sample):,} of the {counted(len(entries), 'Stack Auth user')} {path} names is in this "
        "Stack Auth: it is not the Stack Auth they were created in, or they were deleted there: point "
        "STACK_AUTH_API_URL at the Stack Auth the users were created in (if they were deleted there, "
        "`supamove map-users --forget-missing` drops them from the mapping)")
