"""Every request supamove sends to Stack Auth, judged by Stack Auth's own published schema.

The requests are recorded on their way to the local Stack Auth during real runs of migrate-users,
map-users and send-password-resets on the users of the exported Supabase-shaped fixture (every kind
of auth user it holds). One node process then validates each with the yup schemas of
@stackframe/stack-shared, the version pinned in tests/contract/package.json, with the options the
Stack Auth backend validates a request with (tests/contract/validate.mjs says which, and where from).
Controls that must be refused prove the judge can say no. Never skipped: without node or the
package the test fails and names `.ci/run`, which installs both.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from conftest import RecordingTransport, Sent, validate

from supamove.paths import DataDir
from supamove.sandbox import fixtures
from supamove.sandbox.stackauth import SandboxConfig, StackAuthSandbox
from supamove.users.client import RetryPolicy, StackAuthClient
from supamove.users.mapusers import map_users
from supamove.users.migrate import migrate_users
from supamove.users.plan import plan_users
from supamove.users.resets import send_password_resets
from supamove.users.source import load_auth_export

PROJECT = "0c5f0e2a-7d1b-4c3e-9f4a-5b6c7d8e9f01"
SECRET = "ssk_contract_test_secret_31415"
CALLBACK = "https://app.freshtrack.test/handler/password-reset"
USERS, RESET = "/api/v1/users", "/api/v1/auth/password/send-reset-code"
OAUTH = "/api/v1/oauth-providers"  # a rerun's new identities (test_users_sync.py records them)
CHANNELS = "/api/v1/contact-channels"  # a rerun's replaced e-mails (recorded below)
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, timeout=10)


def schema_of(request: Sent) -> str | None:
    """Which published schema judges this request (None: no body or query to judge)."""
    if request.path == USERS:
        return "users.create" if request.method == "POST" else "users.list.query"
    if request.path.startswith(USERS + "/") and request.method == "PATCH":
        return "users.update"
    if request.path == RESET:
        return "send-reset-code"
    if request.path == OAUTH:
        return "oauth-providers.create"
    if request.path == CHANNELS:
        return "contact-channels.list.query"
    if request.path.startswith(CHANNELS + "/"):
        return "contact-channels.update" if request.method == "PATCH" else "contact-channels.params"
    return None


def judged_item(request: Sent, name: str) -> dict[str, Any]:
    """The part of a request its schema judges: the query, the path's parameters or the body."""
    if name.endswith(".query"):
        return {"schema": name, "body": request.query}
    if name == "contact-channels.params":
        user_id, channel_id = request.path[len(CHANNELS) + 1:].split("/")
        return {"schema": name, "body": {"user_id": user_id, "contact_channel_id": channel_id}}
    return {"schema": name, "body": request.body}


def record_a_migration(exported: Path) -> tuple[list[Sent], int]:
    """Every request of migrate-users, map-users and send-password-resets; and how many creates were planned."""
    datadir = DataDir(exported)
    planned = sum(p.action == "create" for p in plan_users(load_auth_export(datadir), set()))
    recorder = RecordingTransport()
    config = SandboxConfig(trusted_domains=("https://app.freshtrack.test",))
    with StackAuthSandbox(PROJECT, SECRET, config=config) as stack, \
            StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST, transport=recorder) as client:
        migrated = migrate_users(client, datadir)
        assert not migrated.failed, migrated.failed
        map_users(client, datadir, dry_run=True)
        client.find_by_email("alice@freshtrack.test")  # the list endpoint's search, as recovery uses it
        resets = send_password_resets(client, datadir, CALLBACK)
        assert resets.sent and not resets.failed, resets.failed
    return recorder.sent, planned


def controls(create: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Requests Stack Auth refuses, each with the message it refuses it with."""
    return [
        ({"schema": "users.create", "body": {**create, "supabase_user_id": "x"}},
         "body contains unknown properties: supabase_user_id"),
        ({"schema": "users.create", "body": {**create, "display_name": "x" * 300}},
         "body.display_name must be at most 256 characters"),
        ({"schema": "users.create", "body": {**create, "display_name": "\U0001F600" * 129}},
         "body.display_name must be at most 256 characters"),
        ({"schema": "users.update", "body": {"oauth_providers": []}}, "body contains unknown properties: oauth_providers"),
        ({"schema": "oauth-providers.create", "body": {"user_id": str(uuid.uuid4()), "provider_config_id": "github",
                                                       "account_id": "1", "allow_sign_in": True,
                                                       "allow_connected_accounts": True, "email": None}},
         "body.email cannot be null"),
        ({"schema": "users.list.query", "body": {"limit": "200", "page": "2"}}, "query contains unknown properties: page"),
        ({"schema": "send-reset-code", "body": {"email": "a@b.co", "callback_url": CALLBACK, "user_id": "x"}},
         "body contains unknown properties: user_id"),
    ]


def test_every_request_supamove_sends_passes_stack_auths_schema(exported: Path) -> None:
    sent, planned = record_a_migration(exported)
    judged = [(r, name) for r in sent if (name := schema_of(r))]
    creates = [r.body for r, name in judged if name == "users.create"]
    assert len(creates) == planned  # one create per Supabase user, every kind of user the fixture holds
    for field in ("password_hash", "oauth_providers", "is_anonymous", "restricted_by_admin", "display_name"):
        assert any(field in body for body in creates), field
    names = {body.get("display_name") for body in creates}
    assert fixtures.LONG_NAME[:256] in names and "A" + "\U0001F9CA" * 127 in names  # cut to the limit
    updates = [r.body for r, name in judged if name == "users.update"]
    assert sorted(updates, key=lambda b: b["totp_secret_base64"]) == [  # alice's and tina's verified TOTP
        {"totp_secret_base64": "SGVsbG8h3q2+7w=="}, {"totp_secret_base64": "VGluYSBUb3RwIFNlY3JldA=="}]
    kinds = {name for _, name in judged}
    assert {"users.create", "users.update", "users.list.query", "send-reset-code"} <= kinds, kinds
    assert any("query" in r.query for r, name in judged if name == "users.list.query")

    refused = controls(creates[0])
    items = [judged_item(r, name) for r, name in judged]
    verdicts = validate(items + [item for item, _ in refused])
    rejected = [(item, v["errors"]) for item, v in zip(items, verdicts, strict=False) if not v["ok"]]
    assert rejected == []
    for (item, message), verdict in zip(refused, verdicts[len(items):], strict=True):
        assert not verdict["ok"] and message in verdict["errors"], (item["schema"], verdict)


def test_a_replaced_e_mails_requests_and_the_local_answers_pass_stack_auths_schema(tmp_path: Path) -> None:
    """A rerun carrying a changed and a removed e-mail lists the users' contact channels and deletes the replaced
    ones: each request is judged, and so is each channel the local Stack Auth answered (the read shape)."""
    from conftest import auth_user, write_export

    users = [auth_user("ann", 0), auth_user("ben", 1)]
    datadir = write_export(tmp_path / "d", users, [])
    recorder = RecordingTransport()
    with StackAuthSandbox(PROJECT, SECRET) as stack, \
            StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST, transport=recorder) as client:
        assert not migrate_users(client, datadir).failed
        write_export(datadir.root, [{**users[0], "email": "ann@new.example.com"}, {**users[1], "email": None}], [])
        assert migrate_users(client, datadir).updated == 2
        sent = [(r, name) for r in recorder.sent if r.path.startswith(CHANNELS) and (name := schema_of(r))]
        answers = [c for user_id in stack.users for c in client.list_contact_channels(user_id)]
    assert sorted(name for _, name in sent) == ["contact-channels.list.query"] * 2 + ["contact-channels.params"] * 2
    assert [c["value"] for c in answers] == ["ann@new.example.com"]
    items = [judged_item(r, name) for r, name in sent] + [{"schema": "contact-channels.read", "body": c} for c in answers]
    refused = [
        ({"schema": "contact-channels.params", "body": {"user_id": "me", "contact_channel_id": answers[0]["id"]}},
         "CANNOT_GET_OWN_USER_WITHOUT_USER: You have specified 'me' as a userId, but did not provide authentication "
         "for a user."),
        ({"schema": "contact-channels.list.query", "body": {"user_id": answers[0]["user_id"], "limit": "200"}},
         "query contains unknown properties: limit"),
        ({"schema": "contact-channels.update", "body": {"used_for_auth": False, "primary_email": "a@b.co"}},
         "body contains unknown properties: primary_email"),
        ({"schema": "contact-channels.read", "body": {**answers[0], "primary": True}},
         "body contains unknown properties: primary"),
    ]
    verdicts = validate(items + [item for item, _ in refused])
    assert [(item, v["errors"]) for item, v in zip(items, verdicts, strict=False) if not v["ok"]] == []
    for (item, message), verdict in zip(refused, verdicts[len(items):], strict=True):
        assert not verdict["ok"] and message in verdict["errors"], (item["schema"], verdict)
