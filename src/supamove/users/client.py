"""Stack Auth's server API for users: retries with backoff, a lost answer recovered, secret-safe errors."""

from __future__ import annotations

import email.utils
import os
import random
import ssl
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson

from supamove import __version__, interrupt
from supamove.errors import StackAuthError
from supamove.log import add_secret, get_logger, scrub
from supamove.users.transport import Answer, StdlibTransport

log = get_logger("users.client")
USERS = "/api/v1/users"
SEND_RESET = "/api/v1/auth/password/send-reset-code"
OAUTH_PROVIDERS = "/api/v1/oauth-providers"
CONTACT_CHANNELS = "/api/v1/contact-channels"
PAGE_SIZE = 200
JSON = "application/json"
SERVER_ERROR_ATTEMPTS = 3  # 5xx answers to one create, each followed by a lookup finding nothing
CREDENTIALS_FIX = ("check STACK_AUTH_SECRET_KEY (a secret server key of this project, dashboard > API Keys) "
                   "and STACK_AUTH_PROJECT_ID (dashboard > Project Settings)")
# The request was never sent: retrying cannot duplicate anything. A refused connection or an unknown
# host (ConnectError) is not retried: it does not mend in a minute, and the fix is a setting.
NOT_SENT = (httpx.ConnectTimeout, httpx.PoolTimeout)
UNREACHABLE_FIX = "check STACK_AUTH_API_URL and that Stack Auth is up and reachable from this machine"
# Sent, answer unknown: the server may have acted on it.
LOST = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts per request, exponential backoff with jitter, Retry-After honoured."""

    attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    timeout: float = 30.0

    def backoff(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2.0 ** attempt) * (0.5 + random.random() / 2)  # noqa: S311


class EmailTaken(Exception):
    """409 USER_EMAIL_ALREADY_EXISTS: another Stack Auth user signs in with this e-mail."""

    def __init__(self, email: str) -> None:
        super().__init__(email)
        self.email = email


class Rejected(Exception):
    """Stack Auth refused this one request (a 4xx other than auth); the message is scrubbed."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class AnswerLost(Exception):
    """The request was sent but no answer came back (timeout, dropped connection, 5xx)."""

    def __init__(self, why: str, status: int | None = None, message: str = "") -> None:
        super().__init__(why)
        self.status, self.message = status, message


@dataclass
class CreateOutcome:
    user: dict[str, Any]
    recovered: bool  # found after a lost answer, not from the create's own answer


class StackAuthClient:
    """One client shared by every worker thread. Where no proxy of the environment (HTTPS_PROXY,
    ALL_PROXY, ...) applies, its requests go straight to a transport that keeps a connection per thread alive
    (transport.py: the standard library's), for the processor time of one request per user; through a proxy,
    httpx's own transport carries them."""

    def __init__(self, api_url: str, project_id: str, secret_key: str, retry: RetryPolicy | None = None,
                 transport: StdlibTransport | None = None) -> None:
        add_secret(secret_key)
        self.retry = retry or RetryPolicy()
        self.project_id = project_id
        tls = _tls_context()
        self._base = api_url.rstrip("/")
        headers = {"x-stack-access-type": "server", "x-stack-project-id": project_id,
                   "x-stack-secret-server-key": secret_key, "user-agent": f"supamove/{__version__}"}
        # Each request's headers, built once: without a body, and with a JSON one.
        self._request_headers = {None: headers, JSON: {**headers, "content-type": JSON}}
        url = httpx.URL(self._base)
        self._origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        self._prefix = url.raw_path.decode("ascii").rstrip("/")  # a Stack Auth served under a path
        connect = min(10.0, self.retry.timeout)
        self._timeouts = (connect, self.retry.timeout)
        self._direct = transport or (None if _proxied(self._base) else StdlibTransport(tls))
        self._proxy: httpx.Client | None = None  # httpx reads the proxy settings, and carries the requests
        self._closable: StdlibTransport | httpx.Client
        if self._direct is None:
            self._proxy = self._closable = httpx.Client(
                base_url=self._base, verify=tls, headers=headers, timeout=httpx.Timeout(self.retry.timeout, connect=connect),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))
        else:
            self._closable = self._direct
        interrupt.register_client(self._closable)
        self._stats_lock = threading.Lock()
        self.retries = 0

    @property
    def api_url(self) -> str:
        return self._base

    @classmethod
    def from_settings(cls, settings: Any, retry: RetryPolicy | None = None) -> StackAuthClient:
        project, secret = settings.require_all("STACK_AUTH_PROJECT_ID", "STACK_AUTH_SECRET_KEY")
        return cls(settings.STACK_AUTH_API_URL, project, secret, retry)

    def close(self) -> None:
        self._closable.close()

    def __enter__(self) -> StackAuthClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- users -----------------------------------------------------------------------------

    def create_user(self, body: dict[str, Any],
                    recover: Callable[[], dict[str, Any] | None] | None = None) -> CreateOutcome:
        """POST /users; after a lost answer, `recover` looks the user up before creating again.

        A 5xx that comes back SERVER_ERROR_ATTEMPTS times, each time with the lookup finding no such user,
        is about this user's data (a unique index the backend breaks answers a plain 500): Rejected.
        """
        server_errors = 0
        for attempt in range(self.retry.attempts):
            try:
                return CreateOutcome(self._json(self._request("POST", USERS, json=body, resend_lost=False,
                                                              user_data=True)), False)
            except AnswerLost as exc:
                log.debug("create answer lost (%s); looking the user up before trying again", exc)
                self._pause(self.retry.backoff(attempt), attempt, _unanswered(exc))
                found = recover() if recover else None
                if found is not None:
                    return CreateOutcome(found, True)
                if exc.status is not None:
                    server_errors += 1
                    if server_errors >= SERVER_ERROR_ATTEMPTS:
                        raise Rejected(exc.status, None, exc.message or f"HTTP {exc.status}") from None
        raise StackAuthError(f"Stack Auth did not answer a create after {self.retry.attempts} attempts",
                             fix="check STACK_AUTH_API_URL and Stack Auth's status, then run the same command again")

    def update_user(self, user_id: str, body: dict[str, Any],
                    recover: Callable[[], dict[str, Any] | None] | None = None) -> dict[str, Any]:
        """PATCH /users/{id}: setting the same values again changes nothing, so a lost answer is resent.

        With `recover`, a lost answer is first checked: the user it returns (the update found in Stack
        Auth) is the answer, and nothing is sent again. A 5xx that persists is this user's: Rejected, as
        for a create.
        """
        return self._checked("PATCH", f"{USERS}/{user_id}", body, recover or (lambda: None), "an update")

    def create_oauth_provider(self, user_id: str, provider_id: str, account_id: str, email: str | None,
                              recover: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
        """POST /oauth-providers: one more sign-in account for a user, as a create's oauth_providers
        entry makes it (sign-in and connected account both allowed).

        A lost answer is checked with `recover` (the user's oauth providers read) before sending it again.
        """
        body: dict[str, Any] = {"user_id": user_id, "provider_config_id": provider_id, "account_id": account_id,
                                "allow_sign_in": True, "allow_connected_accounts": True}
        if email:
            body["email"] = email
        return self._checked("POST", OAUTH_PROVIDERS, body, recover, "an OAuth provider create")

    def _checked(self, method: str, path: str, body: dict[str, Any], recover: Callable[[], dict[str, Any] | None],
                 what: str) -> dict[str, Any]:
        """One write whose lost answer is checked with `recover` before it is sent again.

        The object `recover` returns (the write found in Stack Auth) is the answer. A 5xx that persists,
        each time with nothing found, is about this data (a unique index answers a plain 500): Rejected.
        """
        server_errors = 0
        for attempt in range(self.retry.attempts):
            try:
                answer: dict[str, Any] = self._json(self._request(method, path, json=body, resend_lost=False,
                                                                  user_data=True))
                return answer
            except AnswerLost as exc:
                log.debug("%s answer lost (%s); reading the user before sending it again", what, exc)
                self._pause(self.retry.backoff(attempt), attempt, _unanswered(exc))
                if (found := recover()) is not None:
                    return found
                server_errors += exc.status is not None
                if server_errors >= SERVER_ERROR_ATTEMPTS:
                    raise Rejected(exc.status or 500, None, exc.message or f"HTTP {exc.status}") from None
        raise StackAuthError(f"Stack Auth did not answer {what} after {self.retry.attempts} attempts",
                             fix="check STACK_AUTH_API_URL and Stack Auth's status, then run the same command again")

    def list_contact_channels(self, user_id: str) -> list[dict[str, Any]]:
        """A user's contact channels (its e-mail addresses, primary or not), oldest first (one page: unpaginated)."""
        page = self._json(self._request("GET", CONTACT_CHANNELS, params={"user_id": user_id}))
        items: list[dict[str, Any]] = page["items"]
        return items

    def delete_contact_channel(self, user_id: str, channel_id: str) -> None:
        """DELETE /contact-channels/{user}/{id}: the address no longer signs the user in, nor stays taken.

        Gone already (a lost answer's delete, resent) is done: Stack Auth answers a plain 400 "Contact channel
        not found" (contact-channels/crud.tsx ensureContactChannelExists).
        """
        try:
            self._request("DELETE", f"{CONTACT_CHANNELS}/{user_id}/{channel_id}")
        except Rejected as exc:
            if exc.status != 400 or exc.code is not None or not exc.message.startswith("Contact channel not found"):
                raise

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        try:
            user: dict[str, Any] = self._json(self._request("GET", f"{USERS}/{user_id}"))
            return user
        except Rejected as exc:
            if exc.status == 404:
                return None
            raise

    def iter_users(self, query: str | None = None, page_size: int = PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """Every user, anonymous and restricted ones included, page by page."""
        params: dict[str, Any] = {"limit": page_size, "include_anonymous": "true"}
        if query:
            params["query"] = query
        while True:
            page = self._json(self._request("GET", USERS, params=params))
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):  # another JSON API there
                raise StackAuthError(f"Stack Auth answered GET {USERS} with no user list",
                                     fix="check STACK_AUTH_API_URL points at Stack Auth's API")
            yield from page["items"]
            cursor = (page.get("pagination") or {}).get("next_cursor")
            if not cursor:
                return
            params["cursor"] = cursor

    def find_by_email(self, normalized_email: str) -> list[dict[str, Any]]:
        """Users whose primary e-mail is this one (the list endpoint's `query` matches substrings)."""
        return [u for u in self.iter_users(query=normalized_email)
                if (u.get("primary_email") or "").strip().lower() == normalized_email]

    def send_reset_code(self, email_address: str, callback_url: str) -> None:
        """One e-mail; AnswerLost when it may or may not have gone (never resent: no one gets two)."""
        self._request("POST", SEND_RESET, json={"email": email_address, "callback_url": callback_url},
                      resend_lost=False)

    # --- transport -------------------------------------------------------------------------

    def _request(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None,
                 resend_lost: bool = True, user_data: bool = False) -> Answer:
        """One request with retries; `resend_lost=False` raises AnswerLost instead of resending.

        `user_data`: the body is one user's data, so a schema error is about that user (Rejected).
        """
        content = orjson.dumps(json) if json is not None else None
        last = ""
        for attempt in range(self.retry.attempts):
            interrupt.check()  # after Ctrl-C, no new request
            response = self._send(method, path, content, params, resend_lost)
            if isinstance(response, str):  # not sent, or its answer lost: try again
                last = response
                self._pause(self.retry.backoff(attempt), attempt, last)
                continue
            retry = self._retry_reason(response, resend_lost, user_data)
            if retry is None:
                return response
            last = retry
            self._pause(self._retry_after(response) or self.retry.backoff(attempt), attempt, last)
        raise StackAuthError(f"Stack Auth did not answer {method} {path} after {self.retry.attempts} attempts ({last})",
                             fix="check STACK_AUTH_API_URL and Stack Auth's status, then run the same command again")

    def _send(self, method: str, path: str, content: bytes | None, params: dict[str, Any] | None,
              resend_lost: bool) -> Answer | str:
        """The answer, or why to try again: a request that was not sent, or one whose answer was lost."""
        try:
            return self._exchange(method, path, content, params)
        except httpx.ConnectError as exc:
            interrupt.check()  # a client closed by Ctrl-C: not a connection problem
            raise StackAuthError(f"cannot connect to Stack Auth at {self._base}: {_reason(exc)}",
                                 fix=UNREACHABLE_FIX) from None
        except NOT_SENT as exc:
            return f"timed out connecting ({type(exc).__name__})"
        except LOST as exc:
            if not resend_lost:
                raise AnswerLost(type(exc).__name__) from None
            return f"gave no answer ({type(exc).__name__})"

    def _exchange(self, method: str, path: str, content: bytes | None, params: dict[str, Any] | None) -> Answer:
        """One request (a JSON body, if any) and its answer: straight to the transport where no proxy applies."""
        kind = JSON if content is not None else None
        if self._direct is None:
            assert self._proxy is not None
            return Answer.of(self._proxy.request(method, path, content=content, params=params,
                                                 headers={"content-type": kind} if kind else None))
        if self._direct.closed:  # by Ctrl-C: no new request
            raise httpx.ConnectError("the client was closed")
        target = self._prefix + path + ("?" + urlencode(params, quote_via=quote) if params else "")
        return self._direct.exchange(method, self._origin, target, self._request_headers[kind], content,
                                     self._timeouts)

    def _retry_reason(self, response: Answer, resend_lost: bool, user_data: bool) -> str | None:
        """None for an answer to return; why to try again after a 429 or a 5xx; raises for any other error."""
        status = response.status_code
        if status == 429:
            return "answered 429"
        if status >= 500:
            if not resend_lost:
                raise AnswerLost(f"HTTP {status}", status, error_of(response)[1])
            return f"answered {status}"
        if status >= 400:
            raise self._error(response, user_data)
        return None

    def _pause(self, seconds: float, attempt: int, why: str = "") -> None:
        """Wait before the next attempt, saying so at the default verbosity: a slow run is never silent."""
        if attempt + 1 >= self.retry.attempts:
            return  # that was the last attempt: the caller gives up now
        interrupt.check()  # Ctrl-C closed the connections: an answer lost to it is no Stack Auth trouble to report
        with self._stats_lock:
            self.retries += 1
        log.warning("Stack Auth %s, retrying in %.1fs (attempt %d of %d)", why or "lost an answer", seconds,
                    attempt + 2, self.retry.attempts)
        interrupt.sleep(seconds)

    def _retry_after(self, response: Answer) -> float | None:
        value = response.headers.get("retry-after")
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            seconds = (when - datetime.now(UTC)).total_seconds()
        return max(0.0, min(seconds, self.retry.max_retry_after))

    def _json(self, response: Answer) -> Any:
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise StackAuthError(f"Stack Auth answered {response.method} {response.path} "
                                 "with something other than JSON",
                                 fix="check STACK_AUTH_API_URL points at Stack Auth's API") from exc

    def _error(self, response: Answer, user_data: bool = False) -> Exception:
        code, message = error_of(response)
        status = response.status_code
        if status in (401, 403):
            return StackAuthError(f"Stack Auth refused the credentials ({status} {code or ''}: {message})".replace(" :", ":"),
                                  fix=CREDENTIALS_FIX)
        if code == "USER_EMAIL_ALREADY_EXISTS":
            details = orjson.loads(response.content).get("details") or {}
            return EmailTaken(str(details.get("email", "")))
        if code is None and status == 404 and user_data and message.startswith("OAuth provider "):
            return Rejected(status, code, message)  # oauth-providers/crud.tsx: a provider not configured
        if code is None and status in (404, 405):  # the route itself is not there: every request would fail
            return StackAuthError(f"Stack Auth has no {response.method} {response.path} ({status}): {message}"[:300],
                                  fix="check STACK_AUTH_API_URL points at Stack Auth's API (without /api/v1)")
        if code == "SCHEMA_ERROR" and user_data:
            return Rejected(status, code, message)
        if code == "SCHEMA_ERROR":
            return StackAuthError(f"Stack Auth rejected the request's shape: {message}",
                                  fix="this Stack Auth may be older than supamove expects; upgrade it or report this")
        if code in ("CURRENT_PROJECT_NOT_FOUND", "PROJECT_NOT_FOUND", "ACCESS_TYPE_WITHOUT_PROJECT_ID"):
            return StackAuthError(f"Stack Auth: {message}", fix=CREDENTIALS_FIX)
        return Rejected(status, code, message)


def _proxied(url: str) -> bool:
    """Whether the environment names a proxy for `url`'s scheme (HTTPS_PROXY, ALL_PROXY, ...): then httpx reads
    them (NO_PROXY too) and carries the requests."""
    proxies = urllib.request.getproxies_environment()
    return bool(proxies.get(httpx.URL(url).scheme) or proxies.get("all"))


def _tls_context() -> ssl.SSLContext:
    """The CA certificates Stack Auth's certificate is checked against: certifi's, or SSL_CERT_FILE's or
    SSL_CERT_DIR's when set (as httpx reads them)."""
    try:
        return httpx.create_ssl_context()
    except (OSError, ssl.SSLError) as exc:
        named = next((f"{n}={os.environ[n]}" for n in ("SSL_CERT_FILE", "SSL_CERT_DIR") if os.environ.get(n)), "")
        raise StackAuthError(f"cannot read the CA certificates for Stack Auth{' in ' + named if named else ''}: "
                             f"{exc.strerror or exc}",
                             fix="correct or unset SSL_CERT_FILE / SSL_CERT_DIR (a PEM file, a folder of them)"
                             ) from None


def _unanswered(exc: AnswerLost) -> str:
    """Why a write is tried again: its answer lost, or a 5xx (a fault, or this user's data: Rejected in the end)."""
    what = f"answered {exc.status}" if exc.status is not None else f"lost an answer ({exc})"
    return f"{what}, checking whether the write was applied"


def _reason(exc: httpx.ConnectError) -> str:
    """Why a connection failed, in words: an unknown host or a refused connection."""
    text = str(exc)
    if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text \
            or "Temporary failure in name resolution" in text:
        return "unknown host"
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return scrub(text.splitlines()[0]) if text else type(exc).__name__


def supabase_id_of(user: dict[str, Any]) -> str | None:
    """The Supabase id supamove keeps in a Stack Auth user's server_metadata, if any."""
    meta = user.get("server_metadata")
    value = meta.get("supabase_user_id") if isinstance(meta, dict) else None
    return str(value).lower() if value else None  # as Supabase writes it, whatever case an edit by hand left


def error_of(response: Answer) -> tuple[str | None, str]:
    """The known-error code (None for a plain error) and a scrubbed one-line message."""
    code = response.headers.get("x-stack-known-error")
    text = response.text
    if code:
        try:
            text = str(orjson.loads(response.content).get("error", text))
        except (orjson.JSONDecodeError, AttributeError):
            pass
    message = " ".join(text.split())[:500]
    return code, scrub(message)
