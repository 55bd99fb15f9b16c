"""Connections to the source and the target, with the session settings every command relies on."""

from __future__ import annotations

import getpass
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from supamove import interrupt
from supamove.errors import ConfigError, SourceError, SupamoveError, TargetError
from supamove.log import add_secret, scrub

Side = Literal["source", "target"]
TRANSACTION_POOLER_PORT = 6543
SETTING = {"source": "SUPABASE_DB_URL", "target": "DATABASE_URL"}
TRANSACTION_POOLER_WARNING = ("port 6543 is Supabase's transaction pooler: it drops session settings and breaks "
                              "long reads; use the direct connection on port 5432 (or the session pooler)")
DIRECT_FIX = ("set SUPABASE_DB_URL to the direct connection string (host db.<project-ref>.supabase.co, port 5432) "
              "or, from an IPv4-only machine, the session pooler's (port 5432 on the pooler host): "
              "Supabase dashboard > Connect")

# A canonical text form, identical on both sides: exports and checksums depend on it.
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "bytea_output": "hex",
    "extra_float_digits": "1",
    "client_encoding": "UTF8",
    # money's text follows lc_monetary ('1.234,56 €' in de_DE): in C on both sides, its value moves exactly
    # and compares, whatever locale either server runs in.
    "lc_monetary": "C",
    # As pg_dump: an xml value that is content, not a document, loads where the database sets DOCUMENT.
    "xmloption": "content",
    # As pg_dump: a read row-level security would filter fails instead of giving fewer rows (the plans
    # check for such tables first, with a clearer message: catalog.refuse_rls_filtering).
    "row_security": "off",
}
# The settings among them that change what a query computes from values (a timestamptz's day, a number's
# text): a query the database keeps the result of runs with the database's own, as the application's does.
OUTPUT_SETTINGS = ("TimeZone", "DateStyle", "IntervalStyle", "bytea_output", "extra_float_digits", "lc_monetary")
# Hosted Supabase sets a global statement_timeout (about 2 minutes) and per-role ones. JIT compiling
# buys nothing for one pass over a table (checksums, the user-id counts) and costs 0.3 to 0.5 s a query.
NO_TIMEOUTS = {"statement_timeout": "0", "idle_in_transaction_session_timeout": "0", "lock_timeout": "0",
               "jit": "off"}


@dataclass(frozen=True)
class Endpoint:
    """A database URL and which side of the migration it is."""

    url: str
    side: Side

    @property
    def setting(self) -> str:
        return SETTING[self.side]

    @property
    def port(self) -> int:
        """The port libpq tries first (a ?port= in the query wins over the host part's, as in libpq)."""
        return self.ports[0]

    @property
    def ports(self) -> list[int]:
        """Every port libpq may connect to: ?port= and ?host= take lists, one for each host."""
        given = conninfo_to_dict(self.url).get("port") or ""
        return [int(p) for p in str(given).split(",") if p.strip().isdigit()] or [5432]

    @property
    def host(self) -> str:
        """The host libpq tries first (a ?host= in the query wins over the host part's)."""
        given = str(conninfo_to_dict(self.url).get("host") or "")
        return given.split(",")[0] or "localhost"

    def place(self) -> dict[str, str | int]:
        """Where the URL leads, password left out: the host and port libpq tries first, the database and user
        (libpq's defaults where the URL names none: the user the process runs as, a database of its name)."""
        given = conninfo_to_dict(self.url)
        user = str(given.get("user") or _os_user())
        return {"host": self.host, "port": self.port, "database": str(given.get("dbname") or user), "user": user}

    @property
    def transaction_pooler(self) -> bool:
        return TRANSACTION_POOLER_PORT in self.ports

    def pooler_refusal(self) -> ConfigError | None:
        """The source through the transaction pooler, refused: each transaction may run on another server
        session, so the export's snapshot, its session settings and the lifted statement_timeout are not kept
        (an export could mix moments, and reads over about 2 minutes fail)."""
        if self.side != "source" or not self.transaction_pooler:
            return None
        return ConfigError("SUPABASE_DB_URL uses port 6543, Supabase's transaction pooler, which keeps neither the "
                           "export's snapshot nor its session settings", fix=DIRECT_FIX)

    @property
    def redacted(self) -> str:
        return redact_url(self.url)

    def conninfo(self) -> str:
        """The URL with sslmode=require added when it names none (Supabase does not enforce TLS)."""
        parts = urlsplit(self.url)
        query = dict(libpq_query(parts.query))
        query.setdefault("sslmode", "require")
        query.setdefault("application_name", "supamove")
        query.setdefault("connect_timeout", "15")
        return unsplit(parts._replace(query=_encoded(query.items())))

    def error(self, message: str, fix: str | None = None) -> SupamoveError:
        kind = SourceError if self.side == "source" else TargetError
        return kind(scrub(message), fix)


def _os_user() -> str:
    """The user libpq defaults to; "" where the system cannot name it (no USER, no passwd entry)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


def redact_url(url: str) -> str:
    """The URL with its password, in the user part or as a `password=` parameter, and the client key's
    `sslpassword=`, shown as ***."""
    return without_key_password(_password_replaced(url, "***")[0], "***")[0]


def without_key_password(url: str, shown: str | None = None) -> tuple[str, str | None]:
    """The URL with the password of its client key (`sslpassword=`) replaced by `shown` (None: left out), and
    that password, decoded."""
    parts = urlsplit(url)
    query = libpq_query(parts.query)
    given = [v for k, v in query if k == "sslpassword"]
    if not given:
        return url, None
    kept = [(k, v if k != "sslpassword" else shown) for k, v in query if k != "sslpassword" or shown is not None]
    return unsplit(parts._replace(query=_encoded(kept, safe="*"))), given[-1]


def without_password(url: str) -> tuple[str, str | None]:
    """The URL without its password (libpq takes it in the user part or as a `password=` parameter), and the
    password, decoded."""
    return _password_replaced(url, None)


def _password_replaced(url: str, shown: str | None) -> tuple[str, str | None]:
    """The URL with its password replaced by `shown` (None: left out), and the password, decoded."""
    parts = urlsplit(url)
    query = libpq_query(parts.query)
    given = [v for k, v in query if k == "password"]
    password = given[-1] if given else (unquote(parts.password) if parts.password is not None else None)
    if password is None:
        return url, None
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", "@" if shown is None else f":{shown}@", 1)
    kept = [(k, v) if k != "password" else (k, shown) for k, v in query if k != "password" or shown is not None]
    return unsplit(parts._replace(netloc=netloc, query=_encoded(kept, safe="*"))), password


def libpq_query(text: str) -> list[tuple[str, str]]:
    """A URL's query parameters as libpq reads them: percent-decoded, and a `+` kept as a `+` (not a space, as
    in a web form): `password=a+b` is the password a+b."""
    return parse_qsl(text.replace("+", "%2B"), keep_blank_values=True)


def _encoded(pairs: Iterable[tuple[str, str | None]], safe: str = "") -> str:
    """Query parameters written back so that libpq reads the same values: a space as %20, never as a `+`."""
    return urlencode(list(pairs), quote_via=quote, safe=safe)


def unsplit(parts: SplitResult) -> str:
    """urlunsplit, keeping the `//` of an empty host part: `postgresql:///db?host=...` (or a Unix socket's
    `postgresql:///db`) is a URL to libpq, `postgresql:/db` is no URL, and it read it as key=value settings."""
    url = urlunsplit(parts)
    if parts.netloc:
        return url
    return f"{parts.scheme}://{url.removeprefix(parts.scheme + ':')}"


def connect(endpoint: Endpoint, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection with canonical output settings and no server-side timeouts."""
    interrupt.check()  # after Ctrl-C, queued work opens nothing new
    password = urlsplit(endpoint.url).password
    add_secret(password)
    add_secret(without_password(endpoint.url)[1])  # libpq decodes it: its messages could hold either form
    add_secret(without_key_password(endpoint.url)[1])
    try:
        conn = psycopg.connect(
            endpoint.conninfo(),
            autocommit=True,
            # The transaction pooler cannot keep prepared statements.
            prepare_threshold=None if endpoint.transaction_pooler else 5,
        )
    except psycopg.OperationalError as exc:
        raise connect_error(endpoint, exc) from None
    interrupt.register_connection(conn)
    settings = dict(SESSION_SETTINGS)
    if not endpoint.transaction_pooler:
        settings.update(NO_TIMEOUTS)
    with conn.cursor() as cur:  # one round trip for them all
        cur.execute("SELECT set_config(n, v, false) FROM unnest(%s::text[], %s::text[]) s(n, v)",
                    (list(settings), list(settings.values())))
    conn.autocommit = autocommit
    return conn


@contextmanager
def connection(endpoint: Endpoint, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    conn = connect(endpoint, autocommit)
    try:
        yield conn
    except psycopg.OperationalError as exc:
        raise endpoint.error(f"lost the {endpoint.side} database connection: {first_line(exc)}",
                             "check the server is up, then run the same command again") from None
    finally:
        conn.close()


@contextmanager
def own_settings(conn: psycopg.Connection) -> Iterator[None]:
    """The session with the database's own OUTPUT_SETTINGS (those its role, database or server set), as a
    session of the application has them; the canonical ones again afterwards."""
    names = [name.lower() for name in OUTPUT_SETTINGS]
    conn.execute("SELECT set_config(name, reset_val, false) FROM pg_settings WHERE lower(name) = ANY(%s)", [names])
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:  # a lost connection's error is the one to show
            conn.execute("SELECT set_config(n, v, false) FROM unnest(%s::text[], %s::text[]) s(n, v)",
                         (list(OUTPUT_SETTINGS), [SESSION_SETTINGS[name] for name in OUTPUT_SETTINGS]))


def first_line(exc: BaseException) -> str:
    return scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def connect_error(endpoint: Endpoint, exc: psycopg.OperationalError) -> SupamoveError:
    text = str(exc)
    where = f"{endpoint.side} database ({endpoint.redacted})"
    if (unreached := _unreached(endpoint, text)) is not None:
        return unreached
    if "password authentication failed" in text or "no password supplied" in text:
        return endpoint.error(f"the {where} refused the password",
                              f"check the user and password in {endpoint.setting}")
    if "too many clients" in text or "connection slots are reserved" in text:  # max_connections reached
        return endpoint.error(f"the {where} has no connection left for supamove: {first_line(exc)}",
                              "end other sessions on it (the application's, once it is frozen) or run with fewer "
                              "--jobs (each job holds a connection), then run the command again")
    if "no pg_hba.conf entry" in text:  # the server's own rules: a self-hosted target's, most often
        return endpoint.error(f"the {where} admits no connection from this machine as this user: {first_line(exc)}",
                              "add a line for this machine's address, the user and the database to the server's "
                              "pg_hba.conf (and reload it), or connect as it allows (a hostssl line needs TLS: "
                              f"sslmode=require in {endpoint.setting})")
    if "certificate" in text:  # verify-ca / verify-full: the CA file, or the server's name in its certificate
        return endpoint.error(f"the {where}: {first_line(exc)}",
                              f"check sslrootcert (the server's CA certificate file) and the host name in "
                              f"{endpoint.setting}")
    if "SSL" in text or "ssl" in text:
        return endpoint.error(f"the {where}: {first_line(exc)}",
                              f"check sslmode in {endpoint.setting} (add ?sslmode=disable for a server without TLS)")
    if "does not exist" in text:
        return endpoint.error(f"the {where}: {first_line(exc)}", f"check the database name and user in {endpoint.setting}")
    return endpoint.error(f"cannot connect to the {where}: {first_line(exc)}", f"check {endpoint.setting}")


def _unreached(endpoint: Endpoint, text: str) -> SupamoveError | None:
    """The server not reached (no such host, nothing listening, no route, no answer), each with its likely cause."""
    if "could not translate host name" in text or "Name or service not known" in text:
        return endpoint.error(f"unknown host '{endpoint.host}' in {endpoint.setting}",
                              f"check the host name in {endpoint.setting}")
    address = f"{endpoint.host}:{endpoint.port}"
    if "Connection refused" in text:
        usual = "Supabase's direct connection is 5432" if endpoint.side == "source" else "PostgreSQL's default is 5432"
        return endpoint.error(f"connection refused by {address} ({endpoint.setting})",
                              f"check the server is running and the port ({usual})")
    if "Network is unreachable" in text or "No route to host" in text:
        fix = f"check this machine's network route to {endpoint.host}"
        if endpoint.side == "source":  # the usual cause: the direct host has an IPv6 address only
            fix += ("; Supabase's direct host (db.<project-ref>.supabase.co) may have an IPv6 address only: from a "
                    "machine without IPv6, use the session pooler's connection string (port 5432 on the pooler "
                    "host): Supabase dashboard > Connect")
        return endpoint.error(f"no network route from this machine to {address} ({endpoint.setting})", fix)
    if "timeout expired" in text:  # nothing answered: a firewall dropping the packets, most often
        fix = f"check that a firewall lets this machine reach {address}"
        if endpoint.side == "source":
            fix += " and that the project's network restrictions admit its address (Supabase dashboard > Database)"
        return endpoint.error(f"no answer from {address} ({endpoint.setting}) within its connect_timeout", fix)
    return None
