"""The Stack Auth sandbox answers as the real server API does, and the client copes with its faults."""

from __future__ import annotations

import base64
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import bcrypt
import httpx
import orjson
import pytest

from supamove.errors import StackAuthError
from supamove.sandbox.pgserver import free_port
from supamove.sandbox.stackauth import SandboxConfig, StackAuthSandbox
from supamove.users.client import RetryPolicy, StackAuthClient

PROJECT = str(uuid.uuid4())
SECRET = "ssk_sandbox_secret_0123456789"
HEADERS = {"x-stack-access-type": "server", "x-stack-project-id": PROJECT, "x-stack-secret-server-key": SECRET}
FAST = RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.05, timeout=5)


@pytest.fixture
def stack() -> Iterator[StackAuthSandbox]:
    with StackAuthSandbox(PROJECT, SECRET) as sandbox:
        yield sandbox


@pytest.fixture
def http(stack: StackAuthSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers=HEADERS) as client:
        yield client


def test_a_client_hanging_up_mid_request_prints_nothing(stack: StackAuthSandbox, http: httpx.Client,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C closes supamove's connections mid-request: the local Stack Auth (in `supamove demo` too)
    must not print a server traceback on the operator's terminal, and goes on serving."""
    host, port = stack.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.2)  # the handler is reading the body
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # closed with a reset
    time.sleep(0.3)
    assert capfd.readouterr().err == ""
    assert http.get("/api/v1/users").status_code == 200


def known(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["x-stack-known-error"] == code
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body)[0] == "code" and body["code"] == code and "error" in body
    return body


def test_auth_headers_give_the_real_known_errors(stack: StackAuthSandbox) -> None:
    url = stack.url + "/api/v1/users"
    known(httpx.get(url), 400, "ACCESS_TYPE_REQUIRED")
    known(httpx.get(url, headers={"x-stack-secret-server-key": SECRET}), 400, "PROJECT_KEY_WITHOUT_ACCESS_TYPE")
    known(httpx.get(url, headers={"x-stack-access-type": "root"}), 400, "INVALID_ACCESS_TYPE")
    body = known(httpx.get(url, headers={"x-stack-access-type": "server"}), 400, "ACCESS_TYPE_WITHOUT_PROJECT_ID")
    assert body["details"] == {"request_type": "server"}
    known(httpx.get(url, headers={**HEADERS, "x-stack-secret-server-key": ""}), 401, "SERVER_AUTHENTICATION_REQUIRED")
    body = known(httpx.get(url, headers={**HEADERS, "x-stack-secret-server-key": "wrong"}), 401,
                 "INVALID_SECRET_SERVER_KEY")
    assert body["details"] == {"project_id": PROJECT}
    known(httpx.get(url, headers={**HEADERS, "x-stack-project-id": str(uuid.uuid4())}), 401, "INVALID_SECRET_SERVER_KEY")
    known(httpx.get(url, headers={**HEADERS, "x-stack-access-type": "client"}), 401, "CLIENT_AUTHENTICATION_REQUIRED")


def test_create_answers_201_with_the_read_shape_and_normalises_the_email(http: httpx.Client) -> None:
    response = http.post("/api/v1/users", json={"primary_email": "Ada.Lovelace@Example.COM",
                                                "primary_email_verified": True, "primary_email_auth_enabled": True,
                                                "display_name": "Ada", "server_metadata": {"k": 1}})
    assert response.status_code == 201
    user = response.json()
    assert user["primary_email"] == "ada.lovelace@example.com"
    assert user["primary_email_verified"] and user["primary_email_auth_enabled"] and not user["has_password"]
    assert user["server_metadata"] == {"k": 1} and user["is_restricted"] is False
    assert {"id", "signed_up_at_millis", "oauth_providers", "restricted_by_admin", "is_anonymous",
            "restricted_reason", "last_active_at_millis", "selected_team"} <= set(user)
    assert http.get(f"/api/v1/users/{user['id']}").json() == user


def test_unknown_property_is_a_schema_error(http: httpx.Client) -> None:
    body = known(http.post("/api/v1/users", json={"primary_email": "a@b.co", "supabase_id": "x", "created_at": 1}),
                 400, "SCHEMA_ERROR")
    assert body["error"] == ("Request validation failed on POST /api/v1/users:\n"
                             "  - body contains unknown properties: supabase_id, created_at")
    assert body["details"] == {"message": body["error"]}
    known(http.post("/api/v1/users", json={"primary_email": "not an email"}), 400, "SCHEMA_ERROR")
    known(http.post("/api/v1/users", json={"primary_email_verified": "yes"}), 400, "SCHEMA_ERROR")
    known(http.post("/api/v1/users", json={"oauth_providers": [{"id": "google"}]}), 400, "SCHEMA_ERROR")


def test_plain_errors_are_text(http: httpx.Client) -> None:
    for body, message in [
        ({"password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"},
         "Invalid password hash. Make sure it's a supported algorithm in Modular Crypt Format."),
        ({"password_hash": "$2a$17$" + "a" * 53},
         "Invalid password hash. Make sure it's a supported algorithm in Modular Crypt Format."),
        ({"password": "x", "password_hash": "$2a$10$" + "a" * 53},
         "Cannot set both password and password_hash at the same time."),
        ({"primary_email_auth_enabled": True}, "primary_email_auth_enabled cannot be true without primary_email"),
        ({"oauth_providers": [{"id": "slack", "account_id": "1", "email": None}]}, "OAuth provider slack not found"),
    ]:
        response = http.post("/api/v1/users", json=body)
        assert response.status_code == 400
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert "x-stack-known-error" not in response.headers
        assert response.text == message


def test_duplicate_auth_email_is_a_409_known_error(http: httpx.Client) -> None:
    first = {"primary_email": "sam@example.com", "primary_email_auth_enabled": True}
    assert http.post("/api/v1/users", json=first).status_code == 201
    body = known(http.post("/api/v1/users", json={**first, "primary_email": "SAM@example.com"}), 409,
                 "USER_EMAIL_ALREADY_EXISTS")
    assert body["details"] == {"email": "sam@example.com", "would_work_if_email_was_verified": False}
    assert body["error"] == 'A user with email "sam@example.com" already exists.'
    # Not used for sign-in: no uniqueness, as in the real backend.
    assert http.post("/api/v1/users", json={"primary_email": "sam@example.com"}).status_code == 201


def test_a_primary_email_repeats_unless_both_users_sign_in_with_it(stack: StackAuthSandbox, http: httpx.Client) -> None:
    """crud.tsx checkAuthData: 409 only when the e-mail is used for auth AND the new user would use it too."""
    off = {"primary_email": "Pat@example.com", "primary_email_auth_enabled": False}
    first = http.post("/api/v1/users", json=off)
    second = http.post("/api/v1/users", json={**off, "restricted_by_admin": True, "restricted_by_admin_reason": "x"})
    assert first.status_code == second.status_code == 201
    owner = http.post("/api/v1/users", json={**off, "primary_email_auth_enabled": True})
    assert owner.status_code == 201  # nobody signed in with it yet
    known(http.post("/api/v1/users", json={**off, "primary_email_auth_enabled": True}), 409, "USER_EMAIL_ALREADY_EXISTS")
    assert http.post("/api/v1/users", json=off).status_code == 201  # still fine without auth
    listed = http.get("/api/v1/users", params={"query": "pat@example.com", "include_restricted": "true"}).json()["items"]
    assert sorted(u["primary_email_auth_enabled"] for u in listed) == [False, False, False, True]
    assert stack.store.auth_emails["pat@example.com"] == owner.json()["id"]
    # Turning auth on for another: a changed e-mail meets checkAuthData's 409; an unchanged one the
    # ContactChannel (tenancyId, type, value, usedForAuth) unique key.
    user, bare = first.json()["id"], http.post("/api/v1/users", json={}).json()["id"]
    known(http.patch(f"/api/v1/users/{bare}", json={"primary_email": "PAT@example.com", "primary_email_auth_enabled": True}),
          409, "USER_EMAIL_ALREADY_EXISTS")
    assert http.patch(f"/api/v1/users/{user}", json={"primary_email_auth_enabled": True}).status_code == 500
    assert stack.store.auth_emails["pat@example.com"] == owner.json()["id"]
    assert http.patch(f"/api/v1/users/{user}", json={"display_name": "P"}).status_code == 200


def test_a_changed_primary_email_leaves_the_old_channel_signing_in_until_it_is_deleted(
        stack: StackAuthSandbox, http: httpx.Client) -> None:
    """crud.tsx onUpdate only demotes the old primary contact channel, keeping its usedForAuth (the doc "Primary
    Email and Contact Channel Logic", scenarios 2 and 4): the old address still signs in and stays taken, until
    its channel is deleted or its sign-in turned off (contact-channels/crud.tsx)."""
    pat = http.post("/api/v1/users", json={"primary_email": "pat@example.com", "primary_email_verified": True,
                                           "primary_email_auth_enabled": True, "password": "pat-secret"}).json()["id"]
    moved = http.patch(f"/api/v1/users/{pat}", json={"primary_email": "Pat@New.example.com"}).json()
    assert (moved["primary_email"], moved["primary_email_verified"], moved["primary_email_auth_enabled"]) == (
        "pat@new.example.com", False, True)  # a new address: unverified; sign-in as the old one's
    listed = http.get("/api/v1/contact-channels", params={"user_id": pat}).json()
    assert listed["is_paginated"] is False
    old, new = listed["items"]
    assert old == {"user_id": pat, "id": old["id"], "type": "email", "value": "pat@example.com", "is_primary": False,
                   "is_verified": True, "used_for_auth": True}
    assert (new["value"], new["is_primary"], new["used_for_auth"]) == ("pat@new.example.com", True, True)
    assert stack.check_password("pat@example.com", "pat-secret")  # the old address still signs in
    taken = {"primary_email": "pat@example.com", "primary_email_auth_enabled": True}
    known(http.post("/api/v1/users", json=taken), 409, "USER_EMAIL_ALREADY_EXISTS")
    assert http.get("/api/v1/users", params={"query": "pat@example.com"}).json()["items"] == []  # nobody's primary
    cleared = http.patch(f"/api/v1/users/{pat}", json={"primary_email": None}).json()
    assert (cleared["primary_email"], cleared["primary_email_auth_enabled"]) == (None, False)
    assert [c["used_for_auth"] for c in stack.channels(pat)] == [True, True]  # null demotes too, deletes nothing
    channel = f"/api/v1/contact-channels/{pat}/{old['id']}"
    assert http.get(channel).json() == {**old, "is_primary": False}
    assert http.delete(channel).json() == {"success": True}
    again = http.delete(channel)
    assert (again.status_code, again.text) == (400, "Contact channel not found")  # ensureContactChannelExists
    assert http.post("/api/v1/users", json=taken).status_code == 201
    assert not stack.check_password("pat@example.com", "pat-secret")
    other = http.post("/api/v1/users", json={"primary_email": "kim@example.com", "primary_email_auth_enabled": True})
    new_channel = f"/api/v1/contact-channels/{pat}/{new['id']}"
    off = http.patch(new_channel, json={"used_for_auth": False})
    assert off.status_code == 200 and off.json()["used_for_auth"] is False and "pat@new.example.com" not in stack.store.auth_emails
    body = known(http.patch(new_channel, json={"value": "kim@example.com", "type": "email", "used_for_auth": True}), 409,
                 "CONTACT_CHANNEL_ALREADY_USED_FOR_AUTH_BY_SOMEONE_ELSE")
    assert body["details"]["contact_channel_value"] is None and other.status_code == 201
    missing = http.get(f"/api/v1/contact-channels/{pat}/{uuid.uuid4()}")
    assert (missing.status_code, missing.text) == (404, "Contact channel not found.")
    known(http.get("/api/v1/contact-channels", params={"user_id": pat, "limit": "5"}), 400, "SCHEMA_ERROR")
    known(http.delete(f"/api/v1/contact-channels/me/{old['id']}"), 400, "CANNOT_GET_OWN_USER_WITHOUT_USER")
    known(http.patch(f"/api/v1/contact-channels/{pat}/x", json={}), 400, "SCHEMA_ERROR")
    known(http.patch(new_channel, json={"is_primary": True, "primary": True}), 400, "SCHEMA_ERROR")


def test_anonymous_user_on_create(http: httpx.Client) -> None:
    user = http.post("/api/v1/users", json={"is_anonymous": True, "server_metadata": {"supabase_user_id": "a"}}).json()
    assert user["is_anonymous"] is True and user["restricted_reason"] == {"type": "anonymous"}
    assert http.get("/api/v1/users").json()["items"] == []
    assert [u["id"] for u in http.get("/api/v1/users", params={"include_anonymous": "true"}).json()["items"]] == [user["id"]]


def test_bcrypt_hash_and_plain_password_both_sign_in(stack: StackAuthSandbox, http: httpx.Client) -> None:
    hashed = bcrypt.hashpw(b"pgcrypto-seed", bcrypt.gensalt(6)).decode()
    assert hashed.startswith("$2b$06$")
    http.post("/api/v1/users", json={"primary_email": "h@x.io", "primary_email_auth_enabled": True,
                                     "password_hash": hashed.replace("$2b$", "$2a$", 1)})
    http.post("/api/v1/users", json={"primary_email": "p@x.io", "primary_email_auth_enabled": True,
                                     "password": "plain-pw"})
    assert stack.check_password("H@x.io", "pgcrypto-seed") and not stack.check_password("h@x.io", "wrong")
    assert stack.check_password("p@x.io", "plain-pw")
    assert not stack.check_password("nobody@x.io", "plain-pw")


def test_list_pages_filters_and_searches(stack: StackAuthSandbox, http: httpx.Client) -> None:
    ids = [http.post("/api/v1/users", json={"primary_email": f"u{i}@list.io", "display_name": f"User {i}"}).json()["id"]
           for i in range(7)]
    http.post("/api/v1/users", json={"is_anonymous": True})
    http.post("/api/v1/users", json={"primary_email": "banned@list.io", "restricted_by_admin": True,
                                     "restricted_by_admin_reason": "no"})
    seen, params = [], {"limit": "3"}
    while True:
        page = http.get("/api/v1/users", params=params).json()
        assert page["is_paginated"] is True
        seen += [u["id"] for u in page["items"]]
        if not page["pagination"]["next_cursor"]:
            break
        params["cursor"] = page["pagination"]["next_cursor"]
    users = stack.users
    created = list(ids)
    ids.sort(key=lambda uid: (users[uid]["signed_up_at_millis"], uid))  # the real order: signed up, then id
    assert seen == ids  # anonymous and restricted users left out by default
    assert len(http.get("/api/v1/users", params={"include_restricted": "true"}).json()["items"]) == 8
    assert len(http.get("/api/v1/users", params={"include_anonymous": "true"}).json()["items"]) == 9
    desc = http.get("/api/v1/users", params={"desc": "true", "limit": "2"}).json()["items"]
    assert [u["id"] for u in desc] == ids[::-1][:2]
    found = http.get("/api/v1/users", params={"query": "U3@LIST"}).json()["items"]
    assert [u["id"] for u in found] == [created[3]]
    assert http.get("/api/v1/users", params={"query": created[5]}).json()["items"][0]["id"] == created[5]
    known(http.get("/api/v1/users", params={"cursor": "nope"}), 400, "SCHEMA_ERROR")
    known(http.get("/api/v1/users", params={"page": "2"}), 400, "SCHEMA_ERROR")


def test_read_update_delete_by_id(http: httpx.Client) -> None:
    user = http.post("/api/v1/users", json={"primary_email": "x@y.io"}).json()
    patched = http.patch(f"/api/v1/users/{user['id']}", json={"display_name": "X", "restricted_by_admin": True})
    assert patched.status_code == 200 and patched.json()["display_name"] == "X"
    assert patched.json()["restricted_reason"] == {"type": "restricted_by_administrator"}
    assert http.delete(f"/api/v1/users/{user['id']}").json() == {"success": True}
    known(http.get(f"/api/v1/users/{user['id']}"), 404, "USER_NOT_FOUND")
    known(http.get("/api/v1/users/not-a-uuid"), 400, "SCHEMA_ERROR")


def test_send_reset_code(stack: StackAuthSandbox, http: httpx.Client) -> None:
    user = http.post("/api/v1/users", json={"primary_email": "r@x.io", "primary_email_auth_enabled": True}).json()
    body = {"email": "r@x.io", "callback_url": "http://localhost:3000/handler/password-reset"}
    answer = http.post("/api/v1/auth/password/send-reset-code", json=body)
    assert answer.status_code == 200 and answer.json() == {"success": "maybe, only if user with e-mail exists"}
    assert http.post("/api/v1/auth/password/send-reset-code", json={**body, "email": "who@x.io"}).json() == answer.json()
    assert [(e.email, e.user_id) for e in stack.reset_emails] == [("r@x.io", user["id"])]
    known(http.post("/api/v1/auth/password/send-reset-code", json={"email": "r@x.io"}), 400, "SCHEMA_ERROR")


NOT_WHITELISTED = ("Redirect URL not whitelisted. Did you forget to add this domain to the trusted domains list "
                   "on the Stack Auth dashboard?")


def test_reset_links_go_only_to_trusted_domains(http: httpx.Client) -> None:
    """redirect-urls.tsx: localhost when allowed, else a trusted domain; checked only for an existing user."""
    http.post("/api/v1/users", json={"primary_email": "t@x.io", "primary_email_auth_enabled": True})
    send = "/api/v1/auth/password/send-reset-code"
    for url in ("http://localhost:3000/reset", "http://127.0.0.1/r", "http://app.localhost/r"):
        assert http.post(send, json={"email": "t@x.io", "callback_url": url}).status_code == 200, url
    body = known(http.post(send, json={"email": "t@x.io", "callback_url": "https://app.example.com/reset"}),
                 400, "REDIRECT_URL_NOT_WHITELISTED")
    assert body == {"code": "REDIRECT_URL_NOT_WHITELISTED", "error": NOT_WHITELISTED}
    # No such user: the answer does not tell whether the link would have been refused.
    assert http.post(send, json={"email": "no@x.io", "callback_url": "https://evil.example/r"}).status_code == 200
    config = SandboxConfig(allow_localhost=False, trusted_domains=("https://app.example.com", "https://*.freshtrack.test"))
    with StackAuthSandbox(PROJECT, SECRET, config=config) as trusted, \
            httpx.Client(base_url=trusted.url, headers=HEADERS) as other:
        other.post("/api/v1/users", json={"primary_email": "t@x.io", "primary_email_auth_enabled": True})
        for url, status in [("https://app.example.com/handler/password-reset", 200), ("https://eu.freshtrack.test/r", 200),
                            ("https://app.example.com:8443/r", 400), ("http://app.example.com/r", 400),
                            ("https://example.com/r", 400), ("http://localhost:3000/r", 400)]:
            assert other.post(send, json={"email": "t@x.io", "callback_url": url}).status_code == status, url
        assert [e.callback_url for e in trusted.reset_emails] == ["https://app.example.com/handler/password-reset",
                                                                   "https://eu.freshtrack.test/r"]


def test_display_name_is_at_most_256_utf16_units(http: httpx.Client) -> None:
    problem = "Request validation failed on POST /api/v1/users:\n  - body.display_name must be at most 256 characters"
    assert http.post("/api/v1/users", json={"display_name": "x" * 256}).status_code == 201
    assert http.post("/api/v1/users", json={"display_name": "\U0001F600" * 128}).status_code == 201
    for name in ("x" * 257, "\U0001F600" * 129, "x" + "\U0001F600" * 128):  # an emoji is two UTF-16 units
        assert known(http.post("/api/v1/users", json={"display_name": name}), 400, "SCHEMA_ERROR")["error"] == problem
    user = http.post("/api/v1/users", json={}).json()
    body = known(http.patch(f"/api/v1/users/{user['id']}", json={"display_name": "é" * 300}), 400, "SCHEMA_ERROR")
    assert body["error"].endswith("body.display_name must be at most 256 characters")


def plain_500(response: httpx.Response) -> None:
    assert response.status_code == 500 and "x-stack-known-error" not in response.headers
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text.startswith("Something went wrong. Please make sure the data you entered is correct.")


def test_oauth_accounts_follow_the_unique_indexes(stack: StackAuthSandbox, http: httpx.Client) -> None:
    """OAuthAuthMethod: one entry per provider per user, one user per provider account; a violation is a 500."""
    def oauth(*pairs: tuple[str, str]) -> dict:
        return {"oauth_providers": [{"id": p, "account_id": a, "email": None} for p, a in pairs]}

    owner = http.post("/api/v1/users", json=oauth(("linkedin", "li-1"), ("google", "g-1")))
    assert owner.status_code == 201
    plain_500(http.post("/api/v1/users", json=oauth(("linkedin", "li-2"), ("linkedin", "li-3"))))
    plain_500(http.post("/api/v1/users", json=oauth(("x", "x-9"), ("x", "x-9"))))
    plain_500(http.post("/api/v1/users", json=oauth(("github", "gh-5"), ("google", "g-1"))))
    assert len(stack.users) == 1  # each failed create rolled back whole
    assert http.post("/api/v1/users", json=oauth(("github", "g-1"))).status_code == 201  # another provider's id
    http.delete(f"/api/v1/users/{owner.json()['id']}")
    assert http.post("/api/v1/users", json=oauth(("google", "g-1"))).status_code == 201  # freed with its user


def test_oauth_provider_create_follows_the_real_route(stack: StackAuthSandbox, http: httpx.Client) -> None:
    """oauth-providers/crud.tsx onCreate: server access, a strict body, a configured provider, its 400s and 500."""
    user = http.post("/api/v1/users", json={"oauth_providers": [{"id": "google", "account_id": "g-1"}]}).json()
    other = http.post("/api/v1/users", json={}).json()

    def add(provider: str, account: str, user_id: str = user["id"], **extra: object) -> httpx.Response:
        return http.post("/api/v1/oauth-providers", json={"user_id": user_id, "provider_config_id": provider,
                                                          "account_id": account, "allow_sign_in": True,
                                                          "allow_connected_accounts": True, **extra})

    known(httpx.post(stack.url + "/api/v1/oauth-providers", json={}, headers={**HEADERS, "x-stack-secret-server-key": "x"}),
          401, "INVALID_SECRET_SERVER_KEY")
    body = known(add("github", "gh-1", type="github", email=None), 400, "SCHEMA_ERROR")
    assert body["error"] == ("Request validation failed on POST /api/v1/oauth-providers:\n"
                             "  - body contains unknown properties: type\n  - body.email cannot be null")
    missing = add("slack", "s-1")  # not configured in this project
    assert (missing.status_code, missing.text) == (404, "OAuth provider slack not found or not configured")
    created = add("github", "gh-1", email="u@example.com")
    assert created.status_code == 201
    assert created.json() | {"id": "-"} == {"user_id": user["id"], "email": "u@example.com", "id": "-",
                                            "provider_config_id": "github", "type": "github", "allow_sign_in": True,
                                            "allow_connected_accounts": True, "account_id": "gh-1"}
    assert [(p["id"], p["account_id"]) for p in stack.users[user["id"]]["oauth_providers"]] == [
        ("google", "g-1"), ("github", "gh-1")]
    same = add("github", "gh-2")
    assert (same.status_code, same.text) == (400, "The same provider type with sign-in enabled already exists for "
                                                  "this user.")
    known(add("github", "gh-1", other["id"]), 400, "OAUTH_PROVIDER_ACCOUNT_ID_ALREADY_USED_FOR_SIGN_IN")
    plain_500(add("github", "gh-1", other["id"], allow_sign_in=False))  # the (provider, account id) unique key
    known(add("github", "gh-3", str(uuid.uuid4())), 404, "USER_NOT_FOUND")
    assert add("github", "gh-3", other["id"]).status_code == 201


def test_a_bcrypt_hash_with_a_trailing_newline_is_refused(http: httpx.Client) -> None:
    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    assert http.post("/api/v1/users", json={"password_hash": good}).status_code == 201
    for bad in (good + "\n", good[:-1] + "\n", good[:-1] + "\u2028"):
        response = http.post("/api/v1/users", json={"password_hash": bad})
        assert response.status_code == 400, repr(bad)
        assert response.text == "Invalid password hash. Make sure it's a supported algorithm in Modular Crypt Format."


def test_totp_secret_is_stored_and_only_an_update_requires_it(stack: StackAuthSandbox, http: httpx.Client) -> None:
    """crud.tsx: create stores totpSecret without setting requiresTotpMfa; update sets both."""
    secret = base64.b64encode(b"12345678901234567890").decode()
    created = http.post("/api/v1/users", json={"totp_secret_base64": secret})
    assert created.status_code == 201 and created.json()["requires_totp_mfa"] is False
    user_id = created.json()["id"]
    assert stack.stored(user_id)["totp_secret"] == b"12345678901234567890"
    patched = http.patch(f"/api/v1/users/{user_id}", json={"totp_secret_base64": secret})
    assert patched.json()["requires_totp_mfa"] is True and "totp_secret_base64" not in patched.json()
    cleared = http.patch(f"/api/v1/users/{user_id}", json={"totp_secret_base64": None})
    assert cleared.json()["requires_totp_mfa"] is False and stack.stored(user_id)["totp_secret"] is None
    body = known(http.post("/api/v1/users", json={"totp_secret_base64": "JBSWY3DPEHPK3PXP="}), 400, "SCHEMA_ERROR")
    assert body["error"].endswith("body.totp_secret_base64 is not valid base64")


def test_injected_faults(stack: StackAuthSandbox, http: httpx.Client) -> None:
    stack.fail_next(1, 429, retry_after=7)
    response = http.get("/api/v1/users")
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    stack.fail_next(1, 500)
    assert http.get("/api/v1/users").status_code == 500
    stack.delay_next(1, 0.3)
    started = time.monotonic()
    assert http.get("/api/v1/users").status_code == 200 and time.monotonic() - started >= 0.3
    stack.drop_next_creates(1)
    with pytest.raises(httpx.RemoteProtocolError):
        http.post("/api/v1/users", json={"primary_email": "dropped@x.io"})
    assert [u["primary_email"] for u in stack.users.values()] == ["dropped@x.io"]


def test_client_retries_429_with_and_without_retry_after_and_500(stack: StackAuthSandbox) -> None:
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as client:
        stack.fail_next(1, 429, retry_after="0.4")
        started = time.monotonic()
        assert list(client.iter_users()) == []
        assert time.monotonic() - started >= 0.4  # Retry-After honoured
        stack.fail_next(2, 429)
        stack.fail_next(2, 503)
        assert list(client.iter_users()) == []
        assert client.retries == 5


def test_client_create_after_dropped_answer_creates_once(stack: StackAuthSandbox) -> None:
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as client:
        stack.drop_next_creates(2)
        outcome = client.create_user({"primary_email": "once@x.io", "primary_email_auth_enabled": True},
                                     recover=lambda: next(iter(client.find_by_email("once@x.io")), None))
        assert outcome.recovered and len(stack.users) == 1


def test_401_is_a_clear_error_without_the_secret(stack: StackAuthSandbox) -> None:
    wrong = "ssk_wrong_key_value_42"
    with StackAuthClient(stack.url, PROJECT, wrong, retry=FAST) as client, pytest.raises(StackAuthError) as caught:
        list(client.iter_users())
    text = str(caught.value)
    assert "INVALID_SECRET_SERVER_KEY" in text and "STACK_AUTH_SECRET_KEY" in text and "STACK_AUTH_PROJECT_ID" in text
    assert wrong not in text and SECRET not in text


class _OtherApi(BaseHTTPRequestHandler):
    """A JSON API that is not Stack Auth's: every path answers an object of its own."""

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_url_answering_other_json_than_the_user_list_is_a_clear_error() -> None:
    # STACK_AUTH_API_URL naming another JSON API (the application's own): "unexpected KeyError: 'items'".
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with StackAuthClient(f"http://127.0.0.1:{server.server_address[1]}", PROJECT, SECRET, retry=FAST) as client, \
                pytest.raises(StackAuthError) as caught:
            list(client.iter_users())
    finally:
        server.shutdown()
        server.server_close()
    assert str(caught.value) == ("Stack Auth answered GET /api/v1/users with no user list (fix: check "
                                 "STACK_AUTH_API_URL points at Stack Auth's API)")


def test_standalone_server() -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "supamove.sandbox.stackauth", "--port", str(port),
                                "--project-id", PROJECT, "--secret-key", SECRET],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"STACK_AUTH_API_URL=http://127.0.0.1:{port}"
        response = httpx.get(f"http://127.0.0.1:{port}/api/v1/users", headers=HEADERS)
        assert orjson.loads(response.content)["items"] == []
    finally:
        process.terminate()
        process.wait(10)
