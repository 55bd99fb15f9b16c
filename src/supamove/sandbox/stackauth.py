"""A local Stack Auth: the server API for users as supamove uses it, with fault injection for tests.

Follows stack-auth/stack-auth (apps/backend/src/app/api/latest/users/crud.tsx, smart-request.tsx,
packages/stack-shared/src/known-errors.tsx, interface/crud/users.ts, utils/hashes.tsx and
auth/password/send-reset-code/route.tsx): the same headers, status codes, error codes and bodies.
Known errors are JSON `{code, details?, error}` with `X-Stack-Known-Error`; other errors are
text/plain. E-mail uniqueness is the real one (crud.tsx checkAuthData, the ContactChannel unique
key (tenancyId, type, value, usedForAuth) in schema.prisma, and the doc "Primary Email and Contact
Channel Logic"): only an e-mail used for auth is unique; any number of users may have the same
primary e-mail with `primary_email_auth_enabled: false`. OAuth accounts follow the OAuthAuthMethod
unique keys of schema.prisma: (user, provider) and (provider, account id) are unique in a project,
and a create breaking one fails inside the backend's transaction, a plain 500 (nothing is created).
A reset link goes only to a trusted domain (lib/redirect-urls.tsx validateRedirectUrl), checked as
the real server checks it: only when the e-mail belongs to a user. `totp_secret_base64` is stored
as crud.tsx stores it: a create keeps the secret but leaves `requires_totp_mfa` false, an update
sets it, and a null secret turns TOTP off. An update follows crud.tsx onUpdate: no `oauth_providers`
(an unknown property), `password: null` removes the password, a new primary e-mail is unverified
unless the body says otherwise, `restricted_by_admin: false` clears the reason and details, and
`last_active_at_millis` moves only on a sign-in (never on an update). `POST /oauth-providers` follows
oauth-providers/crud.tsx onCreate: the provider must be configured (a plain 404), the user must exist,
checkInputValidity's 400s (the same provider with sign-in on this user; an account id another
sign-in already uses, OAUTH_PROVIDER_ACCOUNT_ID_ALREADY_USED_FOR_SIGN_IN), and the (provider,
account id) unique key a plain 500. E-mail addresses are contact channels, as the real server keeps them
(schema.prisma ContactChannel; contact-channels/crud.tsx; lib/contact-channel.tsx): a user's
`primary_email*` fields are read from its primary channel, and an update's new `primary_email` only
demotes the old primary channel (null demotes it too), which keeps its `used_for_auth`: that address
still signs the user in, and no other user may take it for sign-in, until the channel is deleted or
its sign-in turned off through `/contact-channels/{user_id}/{id}` (list, read, update, delete; the
server access type). Deliberate shortcuts, for speed: a bcrypt `password_hash` is checked by shape and cost (not
by a trial compare), and an unknown e-mail on send-reset-code answers at once.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import fnmatch
import os
import re
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import bcrypt
import orjson

from supamove.log import get_logger

log = get_logger("sandbox.stackauth")
USERS_PATH = "/api/v1/users"
RESET_PATH = "/api/v1/auth/password/send-reset-code"
OAUTH_PATH = "/api/v1/oauth-providers"
CHANNELS_PATH = "/api/v1/contact-channels"
OAUTH_PROVIDERS = ("google", "github", "microsoft", "spotify", "facebook", "discord", "gitlab",
                   "bitbucket", "linkedin", "apple", "x", "twitch")
RESET_ANSWER = {"success": "maybe, only if user with e-mail exists"}
# yup's string().email() (the WHATWG rule).
EMAIL_RE = re.compile(r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
                      r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
# hashes.tsx `/^\$2[ayb]\$.{56}$/` as JavaScript reads it: `.` is no line terminator, `$` the very end.
BCRYPT_RE = re.compile("^\\$2[ayb]\\$[^\n\r\u2028\u2029]{56}\\Z")
BCRYPT_SHAPE = re.compile(r"^\$2[ayb]\$(\d\d)\$[./A-Za-z0-9]{53}\Z")
# utils/bytes.tsx isBase64.
BASE64_RE = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")
DISPLAY_NAME_MAX = 256  # schema-fields.ts userDisplayNameSchema: yup max(256), counted in UTF-16 code units
LOCALHOST_RE = re.compile(r"^(localhost|.+\.localhost|127\.\d+\.\d+\.\d+|\[::1\]|::1)$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")

# Create body fields and their kinds (users.ts: usersCrudServerCreateSchema).
_STR, _NSTR, _BOOL, _JSON = "string", "nullable string", "boolean", "json"
CREATE_FIELDS: dict[str, str] = {
    "display_name": _NSTR, "profile_image_url": _NSTR, "client_metadata": _JSON,
    "client_read_only_metadata": _JSON, "server_metadata": _JSON, "primary_email": _NSTR,
    "primary_email_verified": _BOOL, "primary_email_auth_enabled": _BOOL, "passkey_auth_enabled": _BOOL,
    "password": _NSTR, "password_hash": _STR, "otp_auth_enabled": _BOOL, "totp_secret_base64": _NSTR,
    "is_anonymous": _BOOL, "restricted_by_admin": _BOOL, "restricted_by_admin_reason": _NSTR,
    "restricted_by_admin_private_details": _NSTR, "country_code": _NSTR, "risk_scores": _JSON,
    "oauth_providers": "oauth",
}
UPDATE_FIELDS = {k: v for k, v in CREATE_FIELDS.items() if k != "oauth_providers"} | {"selected_team_id": _NSTR}
# interface/crud/oauth-providers.ts oauthProviderCrudServerCreateSchema.
OAUTH_CREATE_FIELDS: dict[str, str] = {"user_id": _STR, "provider_config_id": _STR, "email": _STR,
                                       "allow_sign_in": _BOOL, "allow_connected_accounts": _BOOL,
                                       "account_id": _STR}
OAUTH_REQUIRED = ("user_id", "provider_config_id", "allow_sign_in", "allow_connected_accounts", "account_id")
# interface/crud/contact-channels.ts contactChannelsCrudServerUpdateSchema.
CHANNEL_UPDATE_FIELDS: dict[str, str] = {"value": _STR, "type": _STR, "used_for_auth": _BOOL, "is_primary": _BOOL,
                                         "is_verified": _BOOL}
RESET_FIELDS: dict[str, str] = {"email": _STR, "callback_url": _STR}  # send-reset-code body
CHANNEL_LIST_QUERY = ("user_id", "contact_channel_id")  # contact-channels/crud.tsx querySchema
LIST_QUERY = {"team_id", "limit", "cursor", "order_by", "desc", "query", "include_anonymous",
              "only_anonymous", "include_restricted"}


class HttpError(Exception):
    """An answer other than success: a known error (JSON) or a status error (text/plain)."""

    def __init__(self, status: int, message: str, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.details = status, message, code, details

    def body(self) -> tuple[bytes, dict[str, str]]:
        if self.code is None:
            return self.message.encode(), {"Content-Type": "text/plain; charset=utf-8"}
        payload: dict[str, Any] = {"code": self.code}
        if self.details:
            payload["details"] = self.details
        payload["error"] = self.message
        return (orjson.dumps(payload, option=orjson.OPT_INDENT_2),
                {"Content-Type": "application/json; charset=utf-8", "X-Stack-Known-Error": self.code})


def known(status: int, code: str, message: str, details: Any = None) -> HttpError:
    return HttpError(status, message, code, details)


def schema_error(method: str, path: str, problems: list[str]) -> HttpError:
    lines = "\n".join(f"  - {p}" for p in problems)
    message = f"Request validation failed on {method} {path}:\n{lines}"
    return known(400, "SCHEMA_ERROR", message, {"message": message})


def internal_error() -> HttpError:
    """What the real server answers for an unexpected error (a unique-index violation) in production."""
    return HttpError(500, "Something went wrong. Please make sure the data you entered is correct.\n\n"
                          f"Request ID: {secrets.token_hex(40)}")


def redirect_url_not_whitelisted() -> HttpError:
    return known(400, "REDIRECT_URL_NOT_WHITELISTED", "Redirect URL not whitelisted. Did you forget to add this "
                 "domain to the trusted domains list on the Stack Auth dashboard?")


def user_with_email_exists(email: str) -> HttpError:
    return known(409, "USER_EMAIL_ALREADY_EXISTS", f"A user with email {orjson.dumps(email).decode()} already exists.",
                 {"email": email, "would_work_if_email_was_verified": False})


def normalize_email(email: str) -> str:
    """apps/backend/src/lib/emails.tsx normalizeEmail: trimmed, lower-cased, exactly one @."""
    lowered = email.strip().lower()
    if lowered.count("@") != 1:
        raise HttpError(500, "Invalid email address")
    return lowered


def password_hash_valid(value: str) -> bool:
    """hashes.tsx getPasswordHashAlgorithm: `^\\$2[ayb]\\$.{56}$` and a cost of at most 16."""
    if not BCRYPT_RE.match(value):
        return False
    shape = BCRYPT_SHAPE.match(value)
    return bool(shape) and 4 <= int(shape.group(1)) <= 16  # type: ignore[union-attr]


@dataclass
class Fault:
    """One injected misbehaviour for the next matching request(s)."""

    kind: str  # "status", "delay", "drop_after_create" or "drop_after_update"
    times: int
    status: int = 500
    retry_after: str | None = None
    seconds: float = 0.0
    match: str | None = None  # "POST /api/v1/users", "PATCH /api/v1/users/*"; None matches every request

    def matches(self, method: str, path: str) -> bool:
        return self.match is None or fnmatch.fnmatchcase(f"{method} {path}", self.match)


@dataclass
class SandboxConfig:
    """The project settings the real backend reads from its config."""

    oauth_providers: tuple[str, ...] = OAUTH_PROVIDERS
    password_sign_in: bool = True
    otp_sign_in: bool = True
    require_email_verification: bool = False
    allow_localhost: bool = True
    # Base URLs of the trusted domains ("https://app.example.com", "https://*.example.com").
    trusted_domains: tuple[str, ...] = ()

    def trusts(self, url: str) -> bool:
        """redirect-urls.tsx validateRedirectUrl: localhost when allowed, else a trusted domain's origin."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            return False
        if self.allow_localhost and LOCALHOST_RE.match(host):
            return True
        return any(_same_origin(parts, urlsplit(domain)) for domain in self.trusted_domains)


def _same_origin(url: Any, base: Any) -> bool:
    """Scheme, host (a `*` in the domain matches any label) and port equal; the path starts with the base's."""
    default = {"http": 80, "https": 443}
    return (url.scheme == base.scheme and fnmatch.fnmatchcase(url.hostname or "", base.hostname or "")
            and (url.port or default[url.scheme]) == (base.port or default.get(base.scheme))
            and url.path.startswith(base.path or "/"))


@dataclass
class ResetEmail:
    email: str
    user_id: str
    callback_url: str


class Store:
    """The users, ordered as the list endpoint orders them (signed_up_at, then id)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users: dict[str, dict[str, Any]] = {}
        self.order: list[tuple[int, str]] = []
        self.auth_emails: dict[str, str] = {}
        self.oauth_accounts: dict[tuple[str, str], str] = {}  # (provider, account id) -> user id
        self._last_millis = 0

    def signed_up_now(self) -> int:
        millis = max(int(time.time() * 1000), self._last_millis)
        self._last_millis = millis
        return millis

    def add(self, user: dict[str, Any]) -> None:
        self.users[user["id"]] = user
        bisect.insort(self.order, (user["signed_up_at_millis"], user["id"]))
        for channel in user["channels"]:  # the (type, value, usedForAuth) unique key: one user per sign-in address
            if channel["used_for_auth"]:
                self.auth_emails[channel["value"]] = user["id"]
        for provider in user["oauth_providers"]:
            self.oauth_accounts[(provider["id"], provider["account_id"])] = user["id"]

    def remove(self, user_id: str) -> None:
        user = self.users.pop(user_id)
        self.order.remove((user["signed_up_at_millis"], user_id))
        for channel in user["channels"]:
            if self.auth_emails.get(channel["value"]) == user_id:
                del self.auth_emails[channel["value"]]
        for provider in user["oauth_providers"]:
            self.oauth_accounts.pop((provider["id"], provider["account_id"]), None)

    def check_oauth_accounts(self, providers: list[dict[str, Any]]) -> None:
        """OAuthAuthMethod's unique keys: one entry per provider per user, one user per provider account."""
        ids = [p["id"] for p in providers]
        if len(set(ids)) != len(ids) or any((p["id"], p["account_id"]) in self.oauth_accounts for p in providers):
            raise internal_error()


class _Server(ThreadingHTTPServer):
    """The HTTP server: a request that fails outside the handler's own answers (a client hanging up
    mid-request, as Ctrl-C makes supamove do) goes to the log, not to the terminal as a traceback."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("local Stack Auth: the request from %s ended early", client_address, exc_info=True)


class StackAuthSandbox:
    """Stack Auth's server API for users on 127.0.0.1, in a background thread."""

    def __init__(self, project_id: str, secret_key: str, port: int = 0, host: str = "127.0.0.1",
                 config: SandboxConfig | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.project_id = project_id
        self.tls = tls  # a server context with its certificate: https, as a self-hosted Stack Auth behind TLS
        self.secret_key = secret_key
        self.host = host
        self.port = port
        self.config = config or SandboxConfig()
        self.store = Store()
        self.reset_emails: list[ResetEmail] = []
        self.requests: Counter[str] = Counter()
        self.updates: Counter[str] = Counter()  # user id -> updates applied (a PATCH answered or not)
        self._faults: list[Fault] = []
        self._fault_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self) -> StackAuthSandbox:
        handler = type("Handler", (_Handler,), {"sandbox": self})
        server = _Server((self.host, self.port), handler)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="stackauth-sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> StackAuthSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- assertions ------------------------------------------------------------------------

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        """Every user as the API reads it, by id (password hashes are not part of it)."""
        with self.store.lock:
            return {uid: render_user(u, self.config) for uid, u in self.store.users.items()}

    def stored(self, user_id: str) -> dict[str, Any]:
        """The raw stored record, password hash included, with the primary e-mail fields read (tests only)."""
        with self.store.lock:
            user = self.store.users[user_id]
            return {**user, "channels": [dict(c) for c in user["channels"]], **primary_fields(user)}

    def channels(self, user_id: str) -> list[dict[str, Any]]:
        """A user's contact channels, as GET /contact-channels lists them."""
        with self.store.lock:
            return [render_channel(user_id, c) for c in self.store.users[user_id]["channels"]]

    def check_password(self, email: str, password: str) -> bool:
        """Whether `password` signs in the user whose auth e-mail is `email`, as Stack Auth compares it."""
        with self.store.lock:
            user_id = self.store.auth_emails.get(email.strip().lower())
            stored = self.store.users[user_id]["password_hash"] if user_id else None
        if not stored:
            return False
        try:
            return bcrypt.checkpw(password.encode(), stored.encode())
        except ValueError:
            return False

    def create_count(self) -> int:
        return self.requests[f"POST {USERS_PATH} 201"]

    # --- fault injection -------------------------------------------------------------------

    def fail_next(self, times: int = 1, status: int = 429, retry_after: str | float | None = None,
                  match: str | None = None) -> None:
        """The next `times` matching requests answer `status` (429 with Retry-After when given)."""
        after = None if retry_after is None else str(retry_after)
        self._add_fault(Fault("status", times, status=status, retry_after=after, match=match))

    def delay_next(self, times: int, seconds: float, match: str | None = None) -> None:
        """The next `times` matching requests are answered `seconds` late (and then normally)."""
        self._add_fault(Fault("delay", times, seconds=seconds, match=match))

    def drop_next_creates(self, times: int = 1) -> None:
        """The next `times` creates create the user, then close the connection without answering."""
        self._add_fault(Fault("drop_after_create", times, match=f"POST {USERS_PATH}"))

    def drop_next_updates(self, times: int = 1) -> None:
        """The next `times` updates are applied, then the connection is closed without an answer."""
        self._add_fault(Fault("drop_after_update", times, match=f"PATCH {USERS_PATH}/*"))

    def drop_next_channel_deletes(self, times: int = 1) -> None:
        """The next `times` contact channel deletes are applied, then the connection is closed unanswered."""
        self._add_fault(Fault("drop_after_update", times, match="DELETE /api/v1/contact-channels/*"))

    def drop_next_oauth_adds(self, times: int = 1) -> None:
        """The next `times` OAuth provider creates are applied, then the connection is closed unanswered."""
        self._add_fault(Fault("drop_after_create", times, match=f"POST {OAUTH_PATH}"))

    def clear_faults(self) -> None:
        with self._fault_lock:
            self._faults.clear()

    def _add_fault(self, fault: Fault) -> None:
        with self._fault_lock:
            self._faults.append(fault)

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._fault_lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # --- the API ---------------------------------------------------------------------------

    def authenticate(self, headers: Any, allowed: tuple[str, ...]) -> str:
        """smart-request.tsx parseAuth, for one project with one secret server key."""
        access_type = headers.get("x-stack-access-type")
        project_id = headers.get("x-stack-project-id")
        client_key = headers.get("x-stack-publishable-client-key")
        server_key = headers.get("x-stack-secret-server-key")
        admin_key = headers.get("x-stack-super-secret-admin-key")
        if not access_type and (client_key or server_key or admin_key or headers.get("x-stack-admin-access-token")):
            raise known(400, "PROJECT_KEY_WITHOUT_ACCESS_TYPE",
                        "Either an API key or an admin access token was provided, but the x-stack-access-type "
                        "header is missing. Set it to 'client', 'server', or 'admin' as appropriate.")
        if not access_type:
            raise known(400, "ACCESS_TYPE_REQUIRED",
                        "You must specify an access level for this Stack project. Make sure project API keys are "
                        "provided (eg. x-stack-publishable-client-key) and you set the x-stack-access-type header "
                        "to 'client', 'server', or 'admin'.\n\nFor more information, see the docs on REST API "
                        "authentication: https://docs.stack-auth.com/rest-api/overview#authentication")
        if access_type not in ("client", "server", "admin"):
            raise known(400, "INVALID_ACCESS_TYPE",
                        f"The x-stack-access-type header must be 'client', 'server', or 'admin', but was '{access_type}'.")
        if not project_id:
            raise known(400, "ACCESS_TYPE_WITHOUT_PROJECT_ID",
                        f"The x-stack-access-type header was '{access_type}', but the x-stack-project-id header was "
                        "not provided.\n\nFor more information, see the docs on REST API authentication: "
                        "https://docs.stack-auth.com/rest-api/overview#authentication", {"request_type": access_type})
        pid = orjson.dumps(project_id).decode()
        if access_type == "client":
            if not client_key:
                raise known(401, "CLIENT_AUTHENTICATION_REQUIRED", "The publishable client key must be provided.")
            raise known(401, "INVALID_PUBLISHABLE_CLIENT_KEY",
                        f"The publishable key is not valid for the project {pid}. Does the project and/or the key exist?",
                        {"project_id": project_id})
        if access_type == "admin":
            if not admin_key:
                raise known(401, "ADMIN_AUTHENTICATION_REQUIRED", "The super secret admin key must be provided.")
            raise known(401, "INVALID_SUPER_SECRET_ADMIN_KEY",
                        f"The super secret admin key is not valid for the project {pid}. Does the project and/or "
                        "the key exist?", {"project_id": project_id})
        if not server_key:
            raise known(401, "SERVER_AUTHENTICATION_REQUIRED", "The secret server key must be provided.")
        if project_id != self.project_id or not secrets.compare_digest(server_key, self.secret_key):
            raise known(401, "INVALID_SECRET_SERVER_KEY",
                        f"The secret server key is not valid for the project {pid}. Does the project and/or the key exist?",
                        {"project_id": project_id})
        if access_type not in allowed:
            raise known(401, "INSUFFICIENT_ACCESS_TYPE",
                        f"The x-stack-access-type header must be {' or '.join(repr(a) for a in allowed)}, "
                        f"but was '{access_type}'.",
                        {"actual_access_type": access_type, "allowed_access_types": list(allowed)})
        return str(access_type)

    def create_user(self, body: Any) -> dict[str, Any]:
        problems = validate_body(body, CREATE_FIELDS)
        if problems:
            raise schema_error("POST", USERS_PATH, problems)
        email = normalize_email(body["primary_email"]) if body.get("primary_email") else None
        password_hash = self._password_hash(body)
        auth_enabled = bool(body.get("primary_email_auth_enabled"))
        verified = bool(body.get("primary_email_verified"))
        restricted = bool(body.get("restricted_by_admin"))
        with self.store.lock:
            self._check_auth_data(email, verified, auth_enabled)
            for provider in body.get("oauth_providers") or []:
                if provider["id"] not in self.config.oauth_providers:
                    raise HttpError(400, f"OAuth provider {provider['id']} not found")
            self.store.check_oauth_accounts(body.get("oauth_providers") or [])
            if password_hash and not self.config.password_sign_in:
                raise HttpError(400, "Password auth not enabled in the project")
            if body.get("otp_auth_enabled") and not self.config.otp_sign_in:
                raise HttpError(400, "OTP auth not enabled in the project")
            millis = self.store.signed_up_now()
            user = {
                "id": str(uuid.uuid4()),
                "display_name": body.get("display_name") or None,
                "channels": [new_channel(email, verified, auth_enabled, primary=True)] if email else [],
                "profile_image_url": body.get("profile_image_url"),
                "signed_up_at_millis": millis,
                "last_active_at_millis": millis,
                "client_metadata": body.get("client_metadata"),
                "client_read_only_metadata": body.get("client_read_only_metadata"),
                "server_metadata": body.get("server_metadata"),
                "password_hash": password_hash,
                "otp_auth_enabled": bool(body.get("otp_auth_enabled")),
                "is_anonymous": bool(body.get("is_anonymous")),
                "restricted_by_admin": restricted,
                "restricted_by_admin_reason": body.get("restricted_by_admin_reason") or None,
                "restricted_by_admin_private_details": body.get("restricted_by_admin_private_details") or None,
                "country_code": body.get("country_code"),
                "risk_scores": body.get("risk_scores") or {"sign_up": {"bot": 0, "free_trial_abuse": 0}},
                "oauth_providers": [{"id": p["id"], "account_id": p["account_id"], "email": p.get("email")}
                                    for p in body.get("oauth_providers") or []],
                "requires_totp_mfa": False,  # crud.tsx onCreate stores the secret but never sets requiresTotpMfa
                "totp_secret": _totp_secret(body.get("totp_secret_base64")),
            }
            self.store.add(user)
            return render_user(user, self.config)

    def _password_hash(self, body: dict[str, Any]) -> str | None:
        """crud.tsx getPasswordHashFromData."""
        if "password" in body:
            if "password_hash" in body:
                raise HttpError(400, "Cannot set both password and password_hash at the same time.")
            if body["password"] is None:
                return None
            return bcrypt.hashpw(body["password"].encode(), bcrypt.gensalt(10)).decode()
        if "password_hash" in body:
            if not password_hash_valid(body["password_hash"]):
                raise HttpError(400, "Invalid password hash. Make sure it's a supported algorithm in Modular Crypt Format.")
            return str(body["password_hash"])
        return None

    def _check_auth_data(self, email: str | None, verified: bool, auth_enabled: bool,
                         old_email: str | None = None) -> None:
        """crud.tsx checkAuthData (the caller holds the store lock).

        409 USER_EMAIL_ALREADY_EXISTS only when the e-mail is already used for auth by a user AND this
        one would use it for auth too (and, on an update, the e-mail changes); without auth, e-mails repeat.
        """
        if not email and auth_enabled:
            raise HttpError(400, "primary_email_auth_enabled cannot be true without primary_email")
        if not email and verified:
            raise HttpError(400, "primary_email_verified cannot be true without primary_email")
        if not auth_enabled:
            return
        if email != old_email and email in self.store.auth_emails:
            raise user_with_email_exists(email)

    def get_user(self, user_id: str) -> dict[str, Any]:
        with self.store.lock:
            user = self.store.users.get(user_id)
            if user is None:
                raise known(404, "USER_NOT_FOUND", "User not found.")
            return render_user(user, self.config)

    def update_user(self, user_id: str, body: Any) -> dict[str, Any]:
        """crud.tsx onUpdate."""
        problems = validate_body(body, UPDATE_FIELDS)
        if problems:
            raise schema_error("PATCH", f"{USERS_PATH}/{user_id}", problems)
        password_hash = self._password_hash(body)
        with self.store.lock:
            user = self.store.users.get(user_id)
            if user is None:
                raise known(404, "USER_NOT_FOUND", "User not found.")
            email, auth_enabled = self._checked_email(user, body)
            restricted = body.get("restricted_by_admin", user["restricted_by_admin"])
            if not restricted and (body.get("restricted_by_admin_reason") or body.get("restricted_by_admin_private_details")):
                raise HttpError(400, "restricted_by_admin_reason requires restricted_by_admin=true")
            if password_hash and not user["password_hash"] and not email:
                raise internal_error()  # crud.tsx: "password is set but primary_email is not set" (an assertion)
            self.store.remove(user_id)
            for key in ("display_name", "profile_image_url", "client_metadata", "client_read_only_metadata",
                        "server_metadata", "is_anonymous", "country_code", "risk_scores",
                        "restricted_by_admin_reason", "restricted_by_admin_private_details", "otp_auth_enabled"):
                if key in body:
                    user[key] = body[key]
            _set_primary_email(user, body, email, auth_enabled)
            user["restricted_by_admin"] = bool(restricted)
            if not restricted:
                user.update(restricted_by_admin_reason=None, restricted_by_admin_private_details=None)
            if "password" in body or "password_hash" in body:
                user["password_hash"] = password_hash
            if "totp_secret_base64" in body:
                user["totp_secret"] = _totp_secret(body["totp_secret_base64"])
                user["requires_totp_mfa"] = body["totp_secret_base64"] is not None
            self.store.add(user)
            self.updates[user_id] += 1
            return render_user(user, self.config)

    def _checked_email(self, user: dict[str, Any], body: dict[str, Any]) -> tuple[str | None, bool]:
        """The primary e-mail after this update and whether it signs in, checked as crud.tsx onUpdate checks them
        (the caller holds the store lock)."""
        primary = primary_channel(user)
        old = primary["value"] if primary else None
        email = old
        if "primary_email" in body:
            email = normalize_email(body["primary_email"]) if body["primary_email"] else None
        removing = "primary_email" in body and email is None  # verified and auth forced off
        auth_enabled = not removing and body.get("primary_email_auth_enabled", bool(primary and primary["used_for_auth"]))
        verified = not removing and body.get("primary_email_verified", bool(primary and primary["is_verified"]))
        self._check_auth_data(email, verified, auth_enabled, old_email=old)
        if auth_enabled and self.store.auth_emails.get(email or "", user["id"]) != user["id"]:
            # checkAuthData lets an unchanged e-mail through; the (value, usedForAuth) unique key does not
            raise internal_error()
        return email, bool(auth_enabled)

    def create_oauth_provider(self, body: Any) -> dict[str, Any]:
        """oauth-providers/crud.tsx onCreate; the answer is the server read shape."""
        problems = validate_oauth_body(body)
        if problems:
            raise schema_error("POST", OAUTH_PATH, problems)
        provider, account, user_id = body["provider_config_id"], body["account_id"], body["user_id"]
        if provider not in self.config.oauth_providers:
            raise HttpError(404, f"OAuth provider {provider} not found or not configured")
        with self.store.lock:
            user = self.store.users.get(user_id)
            if user is None:
                raise known(404, "USER_NOT_FOUND", "User not found.")
            mine = [p for p in user["oauth_providers"] if p["id"] == provider]
            if body["allow_sign_in"] and mine:
                raise HttpError(400, "The same provider type with sign-in enabled already exists for this user.")
            if any(p["account_id"] == account for p in mine):
                raise HttpError(400, "The same provider type with the same account ID already exists for this user.")
            if body["allow_sign_in"] and any(acc == account for _, acc in self.store.oauth_accounts):
                raise known(400, "OAUTH_PROVIDER_ACCOUNT_ID_ALREADY_USED_FOR_SIGN_IN",
                            "A provider with the same account ID is already used for signing in.")
            if (provider, account) in self.store.oauth_accounts:
                raise internal_error()
            entry = {"id": provider, "account_id": account, "email": body.get("email")}
            self.store.remove(user_id)
            user["oauth_providers"] = [*user["oauth_providers"], entry]
            self.store.add(user)
        return {"user_id": user_id, "email": body.get("email"), "id": str(uuid.uuid4()),
                "provider_config_id": provider, "type": provider, "allow_sign_in": body["allow_sign_in"],
                "allow_connected_accounts": body["allow_connected_accounts"], "account_id": account}

    # --- contact channels (contact-channels/crud.tsx, server access) ------------------------

    def list_channels(self, query: dict[str, str]) -> dict[str, Any]:
        """onList: the channels of `user_id` (every user's without one), oldest first, unpaginated."""
        problems = validate_channel_query(query)
        if problems:
            raise schema_error("GET", CHANNELS_PATH, problems)
        user_id, channel_id = query.get("user_id"), query.get("contact_channel_id")
        with self.store.lock:
            items = [render_channel(uid, c) for uid, user in self.store.users.items() if user_id in (None, uid)
                     for c in user["channels"] if channel_id in (None, c["id"])]
        return {"items": items, "is_paginated": False}

    def _channel(self, user_id: str, channel_id: str, missing: HttpError) -> tuple[dict[str, Any], dict[str, Any]]:
        """The user and its channel (the caller holds the store lock); `missing` when there is none."""
        user = self.store.users.get(user_id)
        channel = next((c for c in user["channels"] if c["id"] == channel_id), None) if user else None
        if user is None or channel is None:
            raise missing
        return user, channel

    def get_channel(self, user_id: str, channel_id: str) -> dict[str, Any]:
        with self.store.lock:
            _, channel = self._channel(user_id, channel_id, HttpError(404, "Contact channel not found."))
            return render_channel(user_id, channel)

    def update_channel(self, user_id: str, channel_id: str, body: Any) -> dict[str, Any]:
        """onUpdate: ensureContactChannelExists (a plain 400), then the sign-in check and the unique keys."""
        problems = validate_channel_body(body)
        if problems:
            raise schema_error("PATCH", f"{CHANNELS_PATH}/{user_id}/{channel_id}", problems)
        with self.store.lock:
            user, channel = self._channel(user_id, channel_id, HttpError(400, "Contact channel not found"))
            value = normalize_email(body["value"]) if "value" in body and body.get("type") == "email" else \
                body.get("value", channel["value"])
            auth = body.get("used_for_auth", channel["used_for_auth"])
            holder = self.store.auth_emails.get(value)
            if body.get("used_for_auth") and holder is not None and (holder, value) != (user_id, channel["value"]):
                raise known(409, "CONTACT_CHANNEL_ALREADY_USED_FOR_AUTH_BY_SOMEONE_ELSE",
                            "This email  is already used for authentication by another account.",
                            {"type": "email", "contact_channel_value": None, "would_work_if_email_was_verified": False})
            if any(c["value"] == value and c is not channel for c in user["channels"]) or \
                    (auth and holder is not None and (holder, value) != (user_id, channel["value"])):
                raise internal_error()  # the (user, type, value) and (type, value, usedForAuth) unique keys
            self.store.remove(user_id)
            if body.get("is_primary"):
                for other in user["channels"]:
                    other["is_primary"] = False
            verified = body.get("is_verified", False if "value" in body else channel["is_verified"])
            channel.update(value=value, is_verified=verified, used_for_auth=auth,
                           is_primary=body.get("is_primary", channel["is_primary"]))
            self.store.add(user)
            return render_channel(user_id, channel)

    def delete_channel(self, user_id: str, channel_id: str) -> dict[str, Any]:
        """onDelete: ensureContactChannelExists (a plain 400), then the channel goes (a primary one too)."""
        with self.store.lock:
            user, channel = self._channel(user_id, channel_id, HttpError(400, "Contact channel not found"))
            self.store.remove(user_id)
            user["channels"] = [c for c in user["channels"] if c is not channel]
            self.store.add(user)
        return {"success": True}

    def delete_user(self, user_id: str) -> dict[str, Any]:
        with self.store.lock:
            if user_id not in self.store.users:
                raise known(404, "USER_NOT_FOUND", "User not found.")
            self.store.remove(user_id)
        return {"success": True}

    def list_users(self, query: dict[str, str]) -> dict[str, Any]:
        problems = validate_list_query(query)
        if problems:
            raise schema_error("GET", USERS_PATH, problems)
        only_anonymous = query.get("only_anonymous") == "true"
        include_anonymous = query.get("include_anonymous") == "true"
        if only_anonymous and not include_anonymous:
            raise HttpError(400, "only_anonymous=true requires include_anonymous=true")
        include_restricted = query.get("include_restricted") == "true" or include_anonymous
        limit = int(query["limit"]) if "limit" in query else None
        descending = query.get("desc") == "true"
        with self.store.lock:
            order = self.store.order
            positions = range(len(order) - 1, -1, -1) if descending else range(len(order))
            if "cursor" in query:
                positions = self._from_cursor(query["cursor"], descending)
            items: list[dict[str, Any]] = []
            next_cursor = None
            for position in positions:
                user = self.store.users[order[position][1]]
                if not self._listed(user, only_anonymous, include_anonymous, include_restricted, query.get("query")):
                    continue
                if limit is not None and len(items) == limit:
                    next_cursor = user["id"]
                    break
                items.append(render_user(user, self.config))
        return {"items": items, "is_paginated": True, "pagination": {"next_cursor": next_cursor}}

    def _from_cursor(self, cursor: str, descending: bool) -> range:
        """Positions from the cursor's user on (inclusive, as Prisma's cursor is); none if it is gone."""
        order = self.store.order
        user = self.store.users.get(cursor)
        if user is None:
            return range(0)
        start = bisect.bisect_left(order, (user["signed_up_at_millis"], cursor))
        return range(start, -1, -1) if descending else range(start, len(order))

    def _listed(self, user: dict[str, Any], only_anonymous: bool, include_anonymous: bool,
                include_restricted: bool, text: str | None) -> bool:
        if only_anonymous and not user["is_anonymous"]:
            return False
        if not include_anonymous and user["is_anonymous"]:
            return False
        if not include_restricted:
            if user["restricted_by_admin"]:
                return False
            if self.config.require_email_verification and not primary_fields(user)["primary_email_verified"]:
                return False
        if text:
            bare = re.sub(r"[^a-zA-Z0-9\-_.]", "", text)
            lowered = text.lower()
            return (bool(UUID_RE.match(bare)) and user["id"] == bare) \
                or lowered in (user["display_name"] or "").lower() \
                or lowered in (primary_fields(user)["primary_email"] or "").lower()
        return True

    def send_reset_code(self, body: Any) -> dict[str, Any]:
        problems = validate_reset_body(body)
        if problems:
            raise schema_error("POST", RESET_PATH, problems)
        if not self.config.password_sign_in:
            raise known(400, "PASSWORD_AUTHENTICATION_NOT_ENABLED", "Password authentication is not enabled for this project.")
        email = body["email"]
        with self.store.lock:
            user_id = self.store.auth_emails.get(email) or self.store.auth_emails.get(email.strip().lower())
        if user_id:  # the real server checks the link only for an existing user (verification-code-handler.tsx)
            if not self.config.trusts(body["callback_url"]):
                raise redirect_url_not_whitelisted()
            self.reset_emails.append(ResetEmail(email, user_id, body["callback_url"]))
        return dict(RESET_ANSWER)


def _totp_secret(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value)


def new_channel(email: str, verified: bool, auth_enabled: bool, primary: bool = False) -> dict[str, Any]:
    """One e-mail contact channel as stored (schema.prisma ContactChannel)."""
    return {"id": str(uuid.uuid4()), "type": "email", "value": email, "is_verified": bool(verified),
            "is_primary": primary, "used_for_auth": bool(auth_enabled)}


def primary_channel(user: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in user["channels"] if c["is_primary"]), None)


def primary_fields(user: dict[str, Any]) -> dict[str, Any]:
    """crud.tsx userPrismaToCrud: the primary_email fields, read from the primary contact channel."""
    channel = primary_channel(user)
    return {"primary_email": channel["value"] if channel else None,
            "primary_email_verified": bool(channel and channel["is_verified"]),
            "primary_email_auth_enabled": bool(channel and channel["used_for_auth"])}


def _set_primary_email(user: dict[str, Any], body: dict[str, Any], email: str | None, auth_enabled: bool) -> None:
    """crud.tsx onUpdate's contact channel changes: a new or null primary_email only demotes the old primary
    channel (lib/contact-channel.tsx demoteAllContactChannelsToNonPrimary), its usedForAuth left as it was."""
    primary = primary_channel(user)
    if "primary_email" not in body:
        if primary is not None and "primary_email_verified" in body:
            primary["is_verified"] = body["primary_email_verified"]
        if primary is not None and "primary_email_auth_enabled" in body:
            primary["used_for_auth"] = auth_enabled
        return
    for channel in user["channels"]:
        channel["is_primary"] = False
    if email is None:
        return
    existing = next((c for c in user["channels"] if c["value"] == email), None)
    if existing is None:  # a new address: unverified unless the body says otherwise
        user["channels"].append(new_channel(email, body.get("primary_email_verified", False), auth_enabled, True))
        return
    existing.update(is_primary=True, used_for_auth=auth_enabled)  # setContactChannelAsPrimaryByValue
    if "primary_email_verified" in body:
        existing["is_verified"] = body["primary_email_verified"]


def render_channel(user_id: str, channel: dict[str, Any]) -> dict[str, Any]:
    """contact-channels/crud.tsx contactChannelToCrud."""
    return {"user_id": user_id, "id": channel["id"], "type": channel["type"], "value": channel["value"],
            "is_primary": channel["is_primary"], "is_verified": channel["is_verified"],
            "used_for_auth": channel["used_for_auth"]}


def utf16_length(text: str) -> int:
    """A JavaScript string's length: astral characters (emoji) count twice."""
    return len(text.encode("utf-16-le")) // 2


def render_user(user: dict[str, Any], config: SandboxConfig) -> dict[str, Any]:
    """The server read shape (users.ts usersCrudServerReadSchema, crud.tsx userPrismaToCrud)."""
    restricted_reason = None
    primary = primary_fields(user)
    if user["is_anonymous"]:
        restricted_reason = {"type": "anonymous"}
    elif config.require_email_verification and not primary["primary_email_verified"]:
        restricted_reason = {"type": "email_not_verified"}
    elif user["restricted_by_admin"]:
        restricted_reason = {"type": "restricted_by_administrator"}
    has_password = bool(user["password_hash"])
    return {
        "id": user["id"],
        "display_name": user["display_name"],
        **primary,
        "profile_image_url": user["profile_image_url"],
        "signed_up_at_millis": user["signed_up_at_millis"],
        "client_metadata": user["client_metadata"],
        "client_read_only_metadata": user["client_read_only_metadata"],
        "server_metadata": user["server_metadata"],
        "has_password": has_password,
        "otp_auth_enabled": user["otp_auth_enabled"],
        "auth_with_email": has_password or user["otp_auth_enabled"],
        "requires_totp_mfa": user["requires_totp_mfa"],
        "passkey_auth_enabled": False,
        "oauth_providers": [dict(p) for p in user["oauth_providers"]],
        "selected_team_id": None,
        "selected_team": None,
        "last_active_at_millis": user["last_active_at_millis"],
        "is_anonymous": user["is_anonymous"],
        "is_restricted": restricted_reason is not None,
        "restricted_reason": restricted_reason,
        "restricted_by_admin": user["restricted_by_admin"],
        "restricted_by_admin_reason": user["restricted_by_admin_reason"],
        "restricted_by_admin_private_details": user["restricted_by_admin_private_details"],
        "country_code": user["country_code"],
        "risk_scores": user["risk_scores"],
    }


# --- request validation (yup's messages, as the backend's SCHEMA_ERROR lists them) -----------


def _shown(value: Any) -> str:
    return orjson.dumps(value).decode()


def _type_problem(path: str, kind: str, value: Any) -> str | None:
    if kind == _JSON:
        return None
    if value is None:
        return None if kind in (_NSTR, _JSON) else f"{path} cannot be null"
    expected = {"string": str, "nullable string": str, "boolean": bool}[kind]
    if not isinstance(value, expected):
        name = "string" if expected is str else "boolean"
        return f"{path} must be a `{name}` type, but the final value was: `{_shown(value)}`."
    return None


_LONG_DIGITS = re.compile(rb"\d{16}")  # an integer beyond 2**53 has 16 digits at least


def as_javascript(value: Any) -> Any:
    """A parsed body as the server's JSON.parse gives it: every number a double, so an integer beyond
    2**53 rounded."""
    if isinstance(value, dict):
        return {k: as_javascript(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_javascript(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return float(value)
    return value


def validate_body(body: Any, fields: dict[str, str]) -> list[str]:
    """Every problem with a create or update body; [] when it is valid."""
    problems = _object_problems(body, fields)
    if isinstance(body, dict):
        problems += _value_problems(body)
    return problems


def _object_problems(body: Any, fields: dict[str, str], required: tuple[str, ...] = ()) -> list[str]:
    """A body's problems of shape, in the words of the server's yup schema: not an object, unknown
    keys, required keys missing, values of the wrong type."""
    if body is None:
        return ["body must be defined"]
    if not isinstance(body, dict):
        return [f"body must be a `object` type, but the final value was: `{_shown(body)}`."]
    problems: list[str] = []
    unknown = [k for k in body if k not in fields]
    if unknown:
        problems.append(f"body contains unknown properties: {', '.join(unknown)}")
    for key, kind in fields.items():
        if key in required and body.get(key) is None:
            problems.append(f"body.{key} must be defined")
        elif key in body and kind == "oauth":
            problems += _oauth_problems(body[key])
        elif key in body and (problem := _type_problem(f"body.{key}", kind, body[key])) is not None:
            problems.append(problem)
    return problems


def _value_problems(body: dict[str, Any]) -> list[str]:
    problems = []
    name = body.get("display_name")
    if isinstance(name, str) and utf16_length(name) > DISPLAY_NAME_MAX:
        problems.append(f"body.display_name must be at most {DISPLAY_NAME_MAX} characters")
    secret = body.get("totp_secret_base64")
    if isinstance(secret, str) and not BASE64_RE.match(secret):
        problems.append("body.totp_secret_base64 is not valid base64")
    email = body.get("primary_email")
    if isinstance(email, str):
        if email == "":
            problems.append("body.primary_email must not be empty")
        elif not EMAIL_RE.match(email):
            problems.append("body.primary_email must be a valid email")
    if isinstance(body.get("password"), str) and len(body["password"]) > 70:
        problems.append("body.password must be at most 70 characters")
    if body.get("password_hash") == "":
        problems.append("body.password_hash must not be empty")
    if isinstance(body.get("country_code"), str) and not COUNTRY_RE.match(body["country_code"]):
        problems.append("body.country_code must be a valid ISO country code")
    if body.get("restricted_by_admin") is not True:
        if body.get("restricted_by_admin_reason") is not None:
            problems.append("restricted_by_admin_reason must be null when restricted_by_admin is not true")
        elif body.get("restricted_by_admin_private_details") is not None:
            problems.append("restricted_by_admin_private_details must be null when restricted_by_admin is not true")
    return problems


def _oauth_problems(value: Any) -> list[str]:
    if value is None:
        return ["body.oauth_providers cannot be null"]
    if not isinstance(value, list):
        return [f"body.oauth_providers must be a `array` type, but the final value was: `{_shown(value)}`."]
    problems: list[str] = []
    for i, item in enumerate(value):
        path = f"body.oauth_providers[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{path} must be a `object` type, but the final value was: `{_shown(item)}`.")
            continue
        unknown = [k for k in item if k not in ("id", "account_id", "email")]
        if unknown:
            problems.append(f"{path} contains unknown properties: {', '.join(unknown)}")
        for key in ("id", "account_id"):
            if key not in item:
                problems.append(f"{path}.{key} must be defined")
            elif (p := _type_problem(f"{path}.{key}", _STR, item[key])) is not None:
                problems.append(p)
        if (p := _type_problem(f"{path}.email", _NSTR, item.get("email"))) is not None:
            problems.append(p)
    return problems


def validate_oauth_body(body: Any) -> list[str]:
    """Every problem with a POST /oauth-providers body (unknown keys refused); [] when it is valid."""
    problems = _object_problems(body, OAUTH_CREATE_FIELDS, OAUTH_REQUIRED)
    if not isinstance(body, dict):
        return problems
    user_id = body.get("user_id")
    if isinstance(user_id, str) and not UUID_RE.match(user_id):
        problems.append("body.user_id must be a valid UUID")
    if isinstance(body.get("email"), str) and not EMAIL_RE.match(body["email"]):
        problems.append("body.email must be a valid email")
    return problems


def validate_channel_body(body: Any) -> list[str]:
    """Every problem with a PATCH /contact-channels/{user_id}/{id} body; [] when it is valid."""
    problems = _object_problems(body, CHANNEL_UPDATE_FIELDS)
    if not isinstance(body, dict):
        return problems
    if "type" in body and body["type"] != "email":
        problems.append("body.type must be one of the following values: email")
    if body.get("type") == "email" and isinstance(body.get("value"), str) and not EMAIL_RE.match(body["value"]):
        problems.append("body.value must be a valid email")
    return problems


def _unknown_query(query: dict[str, str], allowed: Collection[str]) -> list[str]:
    unknown = [k for k in query if k not in allowed]
    return [f"query contains unknown properties: {', '.join(unknown)}"] if unknown else []


def validate_channel_query(query: dict[str, str]) -> list[str]:
    problems = _unknown_query(query, CHANNEL_LIST_QUERY)
    for key in CHANNEL_LIST_QUERY:
        if key in query and not UUID_RE.match(query[key]):
            problems.append(f"query.{key} must be a valid UUID")
    return problems


def validate_list_query(query: dict[str, str]) -> list[str]:
    problems = _unknown_query(query, LIST_QUERY)
    if "limit" in query:
        if not re.fullmatch(r"-?\d+", query["limit"]):
            problems.append(f"query.limit must be a `number` type, but the final value was: `NaN` (cast from the value `{_shown(query['limit'])}`).")
        elif int(query["limit"]) < 1:
            problems.append("query.limit must be greater than or equal to 1")
    for key in ("cursor", "team_id"):
        if key in query and not UUID_RE.match(query[key]):
            problems.append(f"query.{key} must be a valid UUID")
    if "order_by" in query and query["order_by"] != "signed_up_at":
        problems.append("query.order_by must be one of the following values: signed_up_at")
    for key in ("desc", "include_anonymous", "only_anonymous", "include_restricted"):
        if key in query and query[key] not in ("true", "false"):
            problems.append(f"query.{key} must be one of the following values: true, false")
    return problems


def validate_reset_body(body: Any) -> list[str]:
    problems = _object_problems(body, RESET_FIELDS, tuple(RESET_FIELDS))
    if not isinstance(body, dict):
        return problems
    if isinstance(body.get("email"), str) and not EMAIL_RE.match(body["email"]):
        problems.append("body.email must be a valid email")
    url = body.get("callback_url")
    if isinstance(url, str) and (" " in url or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc):
        problems.append("body.callback_url is not a valid URL")
    return problems


# --- HTTP ----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    sandbox: StackAuthSandbox
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small JSON answers must not wait for delayed ACKs

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = self.sandbox.take_fault(method, path)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "status":
            self._answer_status(method, path, fault)
            return
        try:
            status, payload = self._route(method, path, dict(parse_qsl(parts.query, keep_blank_values=True)), raw)
        except HttpError as exc:
            body, headers = exc.body()
            self._send(method, path, exc.status, body, headers)
            return
        if fault is not None and (fault.kind, status) in (("drop_after_create", 201), ("drop_after_update", 200)):
            self.sandbox.requests[f"{method} {path} {status}"] += 1
            self._drop()
            return
        self._send(method, path, status, orjson.dumps(payload), {"Content-Type": "application/json; charset=utf-8"})

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> tuple[int, Any]:
        sandbox = self.sandbox
        if path == USERS_PATH:
            if method not in ("GET", "POST"):
                raise HttpError(405, "Method not allowed")
            sandbox.authenticate(self.headers, ("server", "admin"))
            if method == "GET":
                return 200, sandbox.list_users(query)
            return 201, sandbox.create_user(self._body(method, raw))
        if path.startswith(USERS_PATH + "/"):
            user_id = path[len(USERS_PATH) + 1:]
            if method not in ("GET", "PATCH", "DELETE"):
                raise HttpError(405, "Method not allowed")
            sandbox.authenticate(self.headers, ("server", "admin"))
            if not UUID_RE.match(user_id):
                raise schema_error(method, path, ["params.user_id must be a valid UUID"])
            if method == "GET":
                return 200, sandbox.get_user(user_id)
            if method == "PATCH":
                return 200, sandbox.update_user(user_id, self._body(method, raw))
            return 200, sandbox.delete_user(user_id)
        if path == CHANNELS_PATH or path.startswith(CHANNELS_PATH + "/"):
            return self._route_channels(method, path, query, raw)
        if path == OAUTH_PATH:
            if method != "POST":
                raise HttpError(405, "Method not allowed")
            sandbox.authenticate(self.headers, ("server", "admin"))
            return 201, sandbox.create_oauth_provider(self._body(method, raw))
        if path == RESET_PATH:
            if method != "POST":
                raise HttpError(405, "Method not allowed")
            sandbox.authenticate(self.headers, ("client", "server", "admin"))
            return 200, sandbox.send_reset_code(self._body(method, raw))
        raise HttpError(404, f"404 — this page does not exist in Stack Auth's API.\n\nPlease see the API documentation at https://docs.stack-auth.com, or visit the Stack Auth dashboard at https://app.stack-auth.com.\n\nURL: {path}")

    def _route_channels(self, method: str, path: str, query: dict[str, str], raw: bytes) -> tuple[int, Any]:
        """contact-channels/route.tsx (GET lists, POST is not served here) and [user_id]/[contact_channel_id]/route.tsx."""
        sandbox = self.sandbox
        params = path[len(CHANNELS_PATH) + 1:].split("/") if path != CHANNELS_PATH else []
        if (not params and method != "GET") or (params and (len(params) != 2 or method not in ("GET", "PATCH", "DELETE"))):
            raise HttpError(405, "Method not allowed")
        sandbox.authenticate(self.headers, ("server", "admin"))
        if not params:
            return 200, sandbox.list_channels(query)
        user_id, channel_id = params
        if user_id == "me":  # userIdOrMeSchema: a server key has no user of its own
            raise known(400, "CANNOT_GET_OWN_USER_WITHOUT_USER",
                        "You have specified 'me' as a userId, but did not provide authentication for a user.")
        problems = [f"params.{name} must be a valid UUID" for name, value in
                    (("user_id", user_id), ("contact_channel_id", channel_id)) if not UUID_RE.match(value)]
        if problems:
            raise schema_error(method, path, problems)
        if method == "GET":
            return 200, sandbox.get_channel(user_id, channel_id)
        if method == "PATCH":
            return 200, sandbox.update_channel(user_id, channel_id, self._body(method, raw))
        return 200, sandbox.delete_channel(user_id, channel_id)

    def _body(self, method: str, raw: bytes) -> Any:
        """smart-request.tsx parseBody."""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if not content_type:
            return None
        if content_type != "application/json":
            raise known(400, "BODY_PARSING_ERROR", f"Unknown content type in request body: {content_type}")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise known(400, "BODY_PARSING_ERROR", "Invalid JSON in request body") from None
        return as_javascript(body) if _LONG_DIGITS.search(raw) else body

    def _answer_status(self, method: str, path: str, fault: Fault) -> None:
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        message = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
                   503: "Service Unavailable"}.get(fault.status, "Error")
        self._send(method, path, fault.status, message.encode(), headers)

    def _send(self, method: str, path: str, status: int, body: bytes, headers: dict[str, str]) -> None:
        route = f"{USERS_PATH}/{{id}}" if path.startswith(USERS_PATH + "/") else path
        if path.startswith(CHANNELS_PATH + "/"):
            route = f"{CHANNELS_PATH}/{{user_id}}/{{id}}"
        self.sandbox.requests[f"{method} {route} {status}"] += 1
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> None:
    """Run the sandbox in the foreground: `python -m supamove.sandbox.stackauth --port 8102`."""
    parser = argparse.ArgumentParser(description="A local Stack Auth server API for users.")
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--project-id", default=os.environ.get("STACK_AUTH_PROJECT_ID") or str(uuid.uuid4()))
    parser.add_argument("--secret-key", default=os.environ.get("STACK_AUTH_SECRET_KEY") or "ssk_" + secrets.token_hex(24))
    args = parser.parse_args(argv)
    sandbox = StackAuthSandbox(args.project_id, args.secret_key, port=args.port, host=args.host).start()
    # A standalone tool: its whole output is how to reach it.
    print(f"STACK_AUTH_API_URL={sandbox.url}")
    print(f"STACK_AUTH_PROJECT_ID={sandbox.project_id}")
    print(f"STACK_AUTH_SECRET_KEY={sandbox.secret_key}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sandbox.stop()


if __name__ == "__main__":
    main()
