"""migrate-users, map-users, send-password-resets and purge-mapping against the Stack Auth sandbox.

The auth export is written here in export's exact format (JSON Lines, PostgreSQL text values), with
one user of every kind; tests/test_users_export.py runs the same path after a real export.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import orjson
import pytest
from click.testing import CliRunner
from conftest import (
    FAST,
    HASHES,
    PASSWORDS,
    TRUSTED,
    auth_user,
    factor,
    identity,
    ts,
    uid,
    write_export,
)

from supamove.errors import ConfigError, DataFileError, StackAuthError, SupamoveError
from supamove.paths import DataDir
from supamove.sandbox.stackauth import SandboxConfig, StackAuthSandbox
from supamove.usermap import UserMapping
from supamove.users.client import Rejected, RetryPolicy, StackAuthClient
from supamove.users.journal import PendingJournal
from supamove.users.mapusers import map_users
from supamove.users.migrate import MigrateOptions, MigrationResult, UserOutcome, migrate_users
from supamove.users.plan import cut_utf16, importable_hash, plan_users, totp_base64
from supamove.users.resets import ResetResult, purge_mapping, send_password_resets
from supamove.users.source import load_auth_export

PROJECT = str(uuid.uuid4())
SECRET = "ssk_users_test_secret_key_987654"


def edge_users() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    users = {
        "alice": auth_user("alice", 0, email="Alice@Example.com"),
        "bob": auth_user("bob", 1, email_confirmed_at=None, confirmed_at=None),
        "carol": auth_user("carol", 2),
        "dave": auth_user("dave", 3, raw_user_meta_data={"name": "Dave"}),
        "erin": auth_user("erin", 4, raw_app_meta_data={"provider": "google", "providers": ["google"]}),
        "frank": auth_user("frank", 5, email=None, is_anonymous=True, raw_user_meta_data={}),
        "grace": auth_user("grace", 6, deleted_at=ts(40)),
        "heidi": auth_user("heidi", 7, email=None, phone="15550001111", phone_confirmed_at=ts(7),
                           email_confirmed_at=None),
        "ivan": auth_user("ivan", 8, email="ivan@corp.example", is_sso_user=True),
        "judy": auth_user("judy", 9, email=" ALICE@example.com"),
        "mallory": auth_user("mallory", 10, banned_until="2999-01-01 00:00:00+00"),
        "oscar": auth_user("oscar", 11, banned_until=ts(12)),
        "peggy": auth_user("peggy", 12, email="not-an-email"),
        "trent": auth_user("trent", 13),
        "victor": auth_user("victor", 14),
        # grace (deleted) had this address first: the live user signs in with it, the deleted one never does
        "xavier": auth_user("xavier", 15, email="Grace@Example.com"),
        "kim": auth_user("kim", 16, email="alice@example.COM ", encrypted_password=""),  # a third alice@
    }
    identities = [
        identity(users["erin"], "google", "g-erin-123", "erin@gmail.com"),
        identity(users["grace"], "google", "g-grace-7", "grace@gmail.com"),
        identity(users["judy"], "github", "gh-judy-9", "judy@users.noreply.github.com"),
        identity(users["ivan"], "sso:7e0e9a4b", "ivan-saml", "ivan@corp.example"),
        identity(users["victor"], "slack", "slack-victor", "victor@example.com"),
        identity(users["alice"], "email", users["alice"]["id"], "alice@example.com"),
    ]
    return list(users.values()), identities


@pytest.fixture
def stack() -> Iterator[StackAuthSandbox]:
    with StackAuthSandbox(PROJECT, SECRET, config=TRUSTED) as sandbox:
        yield sandbox


@pytest.fixture
def client(stack: StackAuthSandbox) -> Iterator[StackAuthClient]:
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as c:
        yield c


@pytest.fixture
def datadir(tmp_path: Path) -> DataDir:
    users, identities = edge_users()
    return write_export(tmp_path / "migration-data", users, identities)


def pre_existing_trent(stack: StackAuthSandbox) -> str:
    """A Stack Auth user who signed up on their own before the move, and verified their e-mail."""
    return stack.create_user({"primary_email": "trent@example.com", "primary_email_verified": True,
                              "primary_email_auth_enabled": True})["id"]


def by_supabase_id(stack: StackAuthSandbox) -> Counter[str]:
    return Counter((u["server_metadata"] or {}).get("supabase_user_id") for u in stack.users.values())


def outcomes(result: Any) -> dict[str, Any]:
    return {o.supabase_user_id: o for o in result.outcomes}


# --- treatments --------------------------------------------------------------------------------


def test_plan_gives_every_kind_of_user_its_treatment(datadir: DataDir) -> None:
    plan = {p.user.id: p for p in plan_users(load_auth_export(datadir), set(), now=datetime(2025, 1, 1, tzinfo=UTC))}
    expect = {
        "alice": ("create", None, "kept"), "bob": ("create", None, "reset-required"),
        "carol": ("create", None, "reset-required"), "dave": ("create", None, "reset-required"),
        "erin": ("create", None, "none"), "frank": ("create", "anonymous", "none"),
        "grace": ("create", "deleted", "none"), "heidi": ("create", None, "none"),
        "ivan": ("create", None, "reset-required"), "judy": ("create", "duplicate-email", "none"),
        "mallory": ("create", None, "kept"), "oscar": ("create", None, "kept"),
        "peggy": ("create", "invalid-email", "none"), "trent": ("create", None, "reset-required"),
        "victor": ("create", None, "kept"), "xavier": ("create", None, "kept"),
        "kim": ("create", "duplicate-email", "none"),
    }
    assert {name: (plan[uid(name)].action, plan[uid(name)].reason, plan[uid(name)].password)
            for name in expect} == expect
    assert plan[uid("carol")].reset_reason == "unsupported-hash"
    assert plan[uid("dave")].reset_reason == "no-password" and plan[uid("ivan")].reset_reason == "sso"
    alice = plan[uid("alice")].body
    assert alice["primary_email"] == "alice@example.com" and alice["primary_email_verified"] is True
    assert alice["primary_email_auth_enabled"] is True and "oauth_providers" not in alice
    # The younger users sharing alice's e-mail: their own users, the same address, no sign-in by it.
    for name in ("judy", "kim"):
        body = plan[uid(name)].body
        assert plan[uid(name)].shared_with == uid("alice") and plan[uid(name)].reset_reason is None
        assert body["primary_email"] == "alice@example.com" and body["primary_email_auth_enabled"] is False
        assert "password_hash" not in body and body["server_metadata"]["supabase_email_shared_with"] == uid("alice")
        assert f"email shared with {uid('alice')}: sign-in by email disabled" in plan[uid(name)].notes
    assert plan[uid("judy")].body["oauth_providers"] == [{"id": "github", "account_id": "gh-judy-9",
                                                          "email": "judy@users.noreply.github.com"}]
    grace = plan[uid("grace")].body
    assert grace["restricted_by_admin"] is True and grace["restricted_by_admin_reason"] == "deleted in Supabase on 2024-02-10"
    assert grace["primary_email"] == "grace@example.com" and grace["primary_email_auth_enabled"] is False
    assert "password_hash" not in grace and "oauth_providers" not in grace
    assert grace["server_metadata"]["supabase_deleted_at"] == "2024-02-10T09:30:00.123456Z"
    assert "deleted in Supabase: created restricted" in plan[uid("grace")].notes
    assert plan[uid("xavier")].body["primary_email_auth_enabled"] is True  # the deleted grace held it first
    frank = plan[uid("frank")].body
    assert frank["is_anonymous"] is True and "primary_email" not in frank and "restricted_by_admin" not in frank
    # bob never confirmed his address: Supabase refused his password until he did, so it does not come along
    assert plan[uid("bob")].body["primary_email_verified"] is False and plan[uid("bob")].reset_reason == "unconfirmed-email"
    assert "password_hash" not in plan[uid("bob")].body
    assert "password_hash" not in plan[uid("carol")].body
    assert any("slack" in note for note in plan[uid("victor")].notes)
    assert "primary_email" not in plan[uid("heidi")].body
    assert plan[uid("mallory")].body["restricted_by_admin"] is True
    assert "restricted_by_admin" not in plan[uid("oscar")].body


def test_a_bitbucket_identity_is_not_carried_and_its_user_gets_a_reset_instead(tmp_path: Path) -> None:
    """Supabase keeps Bitbucket's uuid as the account id; Stack Auth signs in with Bitbucket's account_id. Carried,
    the identity never matched a sign-in, and its user, with no other way in, was told nothing."""
    users = [auth_user("bitty", 0, encrypted_password="")]
    bitbucket = identity(users[0], "bitbucket", "{a1b2c3d4-0000-1111-2222-333344445555}", "bitty@example.com")
    plan = plan_users(load_auth_export(write_export(tmp_path, users, [bitbucket])), set())[0]
    assert "oauth_providers" not in (plan.body or {})
    assert plan.notes == ["bitbucket identity not carried over: Supabase recorded the Bitbucket uuid, and Stack Auth "
                          "signs in with the Bitbucket account_id, which Supabase does not keep"]
    assert (plan.password, plan.reset_reason) == ("reset-required", "no-password")


def test_an_e_mail_user_keeps_the_address_an_older_sso_user_shares(tmp_path: Path) -> None:
    """Supabase's unique index on e-mails leaves SSO users out: the password user who signed in with the address
    lost it (and their password) to an older SSO user, who cannot sign in by e-mail in Stack Auth anyway."""
    users = [auth_user("corp", 0, email="shared@corp.example", encrypted_password="", is_sso_user=True),
             auth_user("alice", 1, email="shared@corp.example")]
    plan = {p.user.id: p for p in plan_users(load_auth_export(write_export(tmp_path, users, [])), set())}
    alice, corp = plan[uid("alice")], plan[uid("corp")]
    assert (alice.reason, alice.password) == (None, "kept") and alice.body["primary_email_auth_enabled"] is True
    assert (corp.reason, corp.shared_with, corp.password) == ("duplicate-email", uid("alice"), "none")


def test_a_bcrypt_hash_with_a_trailing_newline_is_not_kept(tmp_path: Path) -> None:
    """Stack Auth's pattern ends as JavaScript's `$` does: no newline after the hash."""
    users, identities = edge_users()
    for row in users:
        if row["id"] == uid("alice"):
            row["encrypted_password"] = HASHES["alice"] + "\n"
    plan = {p.user.id: p for p in plan_users(load_auth_export(write_export(tmp_path, users, identities)), set())}
    alice = plan[uid("alice")]
    assert (alice.password, alice.reset_reason) == ("reset-required", "unsupported-hash")
    assert "password_hash" not in (alice.body or {})
    assert importable_hash(HASHES["alice"]) and not importable_hash(HASHES["alice"] + "\n")


def test_migrate_creates_each_user_as_documented(stack: StackAuthSandbox, client: StackAuthClient,
                                                 datadir: DataDir) -> None:
    trent = pre_existing_trent(stack)
    result = migrate_users(client, datadir, MigrateOptions(concurrency=8))
    got = outcomes(result)
    status = {name: (got[uid(name)].status, got[uid(name)].reason) for name in
              ("alice", "frank", "grace", "judy", "kim", "peggy", "trent", "heidi", "ivan", "xavier")}
    assert status == {"alice": ("migrated", None), "frank": ("migrated", "anonymous"),
                      "grace": ("migrated", "deleted"), "judy": ("migrated", "duplicate-email"),
                      "kim": ("migrated", "duplicate-email"), "peggy": ("migrated", "invalid-email"),
                      "trent": ("linked", "existing-stack-auth-user"), "heidi": ("migrated", None),
                      "ivan": ("migrated", None), "xavier": ("migrated", None)}
    assert len(result.outcomes) == 17 and not result.failed
    assert result.counts == Counter({"migrated": 16, "linked": 1})
    # Every created user exactly once, plus trent who was there before.
    assert by_supabase_id(stack) == Counter({uid(n): 1 for n in (
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "kim", "mallory", "oscar",
        "peggy", "victor", "xavier")} | {None: 1})
    users = stack.users
    mapping = UserMapping.load(datadir.user_mapping)
    assert mapping.get(uid("trent")) == trent
    stack_ids = [e["stackAuthUserId"] for e in mapping.entries.values()]
    assert len(stack_ids) == len(set(stack_ids)) == 17  # one-to-one: no primary-key collision on import
    # bcrypt users sign in with their old password, $2a$10$ and pgcrypto's $2a$06$ alike.
    for name in ("alice", "mallory", "victor", "oscar"):
        assert stack.check_password(f"{name}@example.com", PASSWORDS[name]), name
    assert not stack.check_password("judy@example.com", PASSWORDS["judy"])
    assert not stack.check_password("bob@example.com", PASSWORDS["bob"])  # never confirmed: a reset instead
    alice = users[mapping.get(uid("alice"))]
    assert alice["display_name"] == "Alice Example" and alice["primary_email_auth_enabled"]
    assert alice["server_metadata"]["supabase_user_id"] == uid("alice")
    assert alice["server_metadata"]["supabase_created_at"] == "2024-01-01T09:30:00.123456Z"
    assert alice["server_metadata"]["supabase_raw_user_meta_data"] == {"full_name": "Alice Example", "plan": "pro"}
    assert alice["server_metadata"]["supabase_raw_app_meta_data"]["provider"] == "email"
    assert alice["oauth_providers"] == [] and "supabase_email_shared_with" not in alice["server_metadata"]
    # judy and kim: users of their own with alice's address, which only alice signs in with.
    assert stack.check_password("alice@example.com", PASSWORDS["alice"])
    for name in ("judy", "kim"):
        user = users[mapping.get(uid(name))]
        assert user["primary_email"] == "alice@example.com" and not user["primary_email_auth_enabled"]
        assert not user["has_password"] and user["server_metadata"]["supabase_email_shared_with"] == uid("alice")
        assert got[uid(name)].notes == [f"email shared with {uid('alice')}: sign-in by email disabled"]
    assert users[mapping.get(uid("judy"))]["oauth_providers"] == [
        {"id": "github", "account_id": "gh-judy-9", "email": "judy@users.noreply.github.com"}]
    # grace, deleted: kept for her rows, barred, her address left to xavier.
    grace = users[mapping.get(uid("grace"))]
    assert grace["restricted_by_admin"] and grace["restricted_reason"] == {"type": "restricted_by_administrator"}
    assert grace["restricted_by_admin_reason"] == "deleted in Supabase on 2024-02-10"
    assert not grace["primary_email_auth_enabled"] and not grace["has_password"] and grace["oauth_providers"] == []
    assert grace["server_metadata"]["supabase_deleted_at"] == "2024-02-10T09:30:00.123456Z"
    assert "deleted in Supabase: created restricted" in got[uid("grace")].notes
    assert stack.store.auth_emails["grace@example.com"] == mapping.get(uid("xavier"))
    assert stack.check_password("grace@example.com", PASSWORDS["xavier"])
    assert not stack.check_password("grace@example.com", PASSWORDS["grace"])
    frank = users[mapping.get(uid("frank"))]
    assert frank["is_anonymous"] and frank["primary_email"] is None and not frank["has_password"]
    erin = users[mapping.get(uid("erin"))]
    assert erin["oauth_providers"] == [{"id": "google", "account_id": "g-erin-123", "email": "erin@gmail.com"}]
    heidi = users[mapping.get(uid("heidi"))]
    assert heidi["primary_email"] is None and heidi["server_metadata"]["supabase_phone"] == "15550001111"
    mallory = users[mapping.get(uid("mallory"))]
    assert mallory["restricted_by_admin"] and mallory["restricted_by_admin_reason"]
    assert not users[mapping.get(uid("oscar"))]["restricted_by_admin"]
    assert users[mapping.get(uid("bob"))]["primary_email_verified"] is False
    resets = orjson.loads(datadir.password_resets.read_bytes())["users"]
    assert {(u["supabaseUserId"], u["reason"]) for u in resets} == {
        (uid("carol"), "unsupported-hash"), (uid("dave"), "no-password"), (uid("ivan"), "sso"),
        (uid("bob"), "unconfirmed-email")}
    assert len(result.reset_required) == 4
    report = orjson.loads(datadir.users_report.read_bytes())
    assert report["summary"]["total"] == 17 and {u["supabaseUserId"] for u in report["users"]} == {
        row["id"] for row in edge_users()[0]}
    assert all(u["status"] in ("migrated", "linked") or u["reason"] for u in report["users"])
    assert not datadir.pending_creates.exists()


def test_jsonb_columns_exported_as_text_are_read(stack: StackAuthSandbox, client: StackAuthClient,
                                                 tmp_path: Path) -> None:
    """export writes jsonb as PostgreSQL's text of it: a JSON document inside a JSON string."""
    users, identities = edge_users()
    rows = [{**u, "raw_user_meta_data": orjson.dumps(u["raw_user_meta_data"]).decode(),
             "raw_app_meta_data": orjson.dumps(u["raw_app_meta_data"]).decode()} for u in users]
    texts = [{**i, "identity_data": orjson.dumps(i["identity_data"]).decode()} for i in identities]
    result = migrate_users(client, write_export(tmp_path / "data", rows, texts))
    got, made = outcomes(result), stack.users
    erin, judy = made[got[uid("erin")].stack_auth_user_id], made[got[uid("judy")].stack_auth_user_id]
    assert erin["oauth_providers"] == [{"id": "google", "account_id": "g-erin-123", "email": "erin@gmail.com"}]
    assert judy["oauth_providers"][0]["email"] == "judy@users.noreply.github.com"
    assert erin["display_name"] == "Erin Example"
    assert erin["server_metadata"]["supabase_raw_user_meta_data"] == {"full_name": "Erin Example", "plan": "pro"}


def test_metadata_numbers_stack_auth_would_round_are_kept_exact_as_text_and_noted(
        stack: StackAuthSandbox, client: StackAuthClient, tmp_path: Path) -> None:
    # jsonb keeps any number exactly; Stack Auth's server reads JSON numbers as JavaScript doubles. An order
    # number beyond 2**53 was stored rounded, a number beyond a double's range turned the document into a string,
    # and nothing said so.
    users, identities = edge_users()
    exact = ('{"plan": "pro", "order": 12345678901234567891, "ratio": 0.12345678901234567891, '
             '"huge": 1' + "0" * 400 + ', "safe": 9007199254740991, "price": 19.90}')
    rows = [{**u, "raw_user_meta_data": exact if u["id"] == uid("alice") else orjson.dumps(u["raw_user_meta_data"]).decode(),
             "raw_app_meta_data": orjson.dumps(u["raw_app_meta_data"]).decode()} for u in users]
    result = migrate_users(client, write_export(tmp_path / "data", rows, identities))
    assert result.failure() is None
    got = outcomes(result)
    meta = stack.users[got[uid("alice")].stack_auth_user_id]["server_metadata"]
    assert meta["supabase_raw_user_meta_data_text"] == exact  # every digit, as Supabase held it
    assert meta["supabase_raw_user_meta_data"] == {"plan": "pro", "order": 12345678901234567891 * 1.0,
                                                   "ratio": 0.12345678901234568, "huge": None,
                                                   "safe": 9007199254740991, "price": 19.9}
    assert ("raw_user_meta_data holds 3 numbers Stack Auth stores rounded (its server keeps JavaScript numbers: "
            "integers up to 2**53, about 16 digits): the exact document kept as text in "
            "server_metadata.supabase_raw_user_meta_data_text") in got[uid("alice")].notes
    erin = stack.users[got[uid("erin")].stack_auth_user_id]["server_metadata"]
    assert "supabase_raw_user_meta_data_text" not in erin and not any("rounded" in n for n in got[uid("erin")].notes)
    assert "12345678901234567891" not in " ".join(got[uid("alice")].notes)  # metadata may be private


def test_mapping_file_has_the_exact_shape(stack: StackAuthSandbox, client: StackAuthClient, datadir: DataDir) -> None:
    migrate_users(client, datadir)
    data = orjson.loads(datadir.user_mapping.read_bytes())
    assert list(data) == ["generatedAt", "retainUntil", "stackAuthProjectId", "mappings"]
    assert data["stackAuthProjectId"] == PROJECT
    generated = datetime.fromisoformat(data["generatedAt"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(data["retainUntil"].replace("Z", "+00:00")) - generated == timedelta(days=90)
    assert all(list(m) == ["supabaseUserId", "stackAuthUserId", "email", "migratedAt"] for m in data["mappings"])
    assert len(data["mappings"]) == 17 == len({m["stackAuthUserId"] for m in data["mappings"]})
    for path in (datadir.user_mapping, datadir.users_report, datadir.password_resets):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_rerun_creates_nothing_new(stack: StackAuthSandbox, client: StackAuthClient, datadir: DataDir) -> None:
    pre_existing_trent(stack)
    first = migrate_users(client, datadir)
    creates = stack.create_count()
    mapping = orjson.loads(datadir.user_mapping.read_bytes())["mappings"]
    second = migrate_users(client, datadir)
    assert stack.create_count() == creates and second.created == 0
    assert {o.supabase_user_id: (o.status, o.reason, o.stack_auth_user_id) for o in second.outcomes} == {
        o.supabase_user_id: (o.status, o.reason, o.stack_auth_user_id) for o in first.outcomes}
    assert [(m["supabaseUserId"], m["stackAuthUserId"]) for m in orjson.loads(datadir.user_mapping.read_bytes())["mappings"]] \
        == [(m["supabaseUserId"], m["stackAuthUserId"]) for m in mapping]
    assert len(orjson.loads(datadir.password_resets.read_bytes())["users"]) == 4
    again = {o.supabase_user_id: o for o in second.outcomes}
    assert {n: (again[uid(n)].status, again[uid(n)].reason) for n in ("grace", "judy", "kim", "frank")} == {
        "grace": ("migrated", "deleted"), "judy": ("migrated", "duplicate-email"),
        "kim": ("migrated", "duplicate-email"), "frank": ("migrated", "anonymous")}
    assert len(by_supabase_id(stack)) == 17  # 16 created + trent, none twice


# --- faults ------------------------------------------------------------------------------------


def many_users(count: int, with_phone_only: int = 0) -> list[dict[str, Any]]:
    hashed = bcrypt.hashpw(b"same-password", bcrypt.gensalt(4, prefix=b"2a")).decode()
    rows = [auth_user(f"user{i}", i % 300, email=f"user{i}@load.example", encrypted_password=hashed)
            for i in range(count)]
    for i in range(with_phone_only):
        rows[i].update(email=None, phone=f"1555{i:07d}", encrypted_password="")
    return rows


@pytest.mark.parametrize("fault", ["429-retry-after", "429", "500", "slow", "dropped"])
def test_faults_end_with_every_user_exactly_once(stack: StackAuthSandbox, client: StackAuthClient, tmp_path: Path,
                                                 fault: str) -> None:
    rows = many_users(60, with_phone_only=5)
    datadir = write_export(tmp_path / "data", rows, [])
    if fault == "429-retry-after":
        stack.fail_next(10, 429, retry_after="0.2", match="POST /api/v1/users")
    elif fault == "429":
        stack.fail_next(10, 429, match="POST /api/v1/users")
    elif fault == "500":
        stack.fail_next(6, 500, match="POST /api/v1/users")
    elif fault == "slow":
        stack.delay_next(20, 0.3, match="POST /api/v1/users")
    else:
        stack.drop_next_creates(12)
    if fault == "500":  # three 500s to one user's create make them its own fault: it fails. A backoff that lets
        client.retry = RetryPolicy(base_delay=0.05, max_delay=0.2, timeout=3)  # the other threads take theirs first
    result = migrate_users(client, datadir, MigrateOptions(concurrency=8))
    assert result.counts == Counter({"migrated": 60}), result.counts
    assert by_supabase_id(stack) == Counter({row["id"]: 1 for row in rows})
    assert len(UserMapping.load(datadir.user_mapping).entries) == 60
    if fault != "slow":
        assert client.retries > 0


def test_timed_out_create_that_lands_late_is_not_duplicated(stack: StackAuthSandbox, tmp_path: Path) -> None:
    rows = many_users(10)
    datadir = write_export(tmp_path / "data", rows, [])
    stack.delay_next(3, 1.0, match="POST /api/v1/users")
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=RetryPolicy(base_delay=0.05, max_delay=0.2, timeout=0.4)) as c:
        result = migrate_users(c, datadir, MigrateOptions(concurrency=4))
    assert result.counts == Counter({"migrated": 10})
    assert by_supabase_id(stack) == Counter({row["id"]: 1 for row in rows})


def test_interrupted_run_resumes_without_duplicates(stack: StackAuthSandbox, client: StackAuthClient,
                                                    datadir: DataDir) -> None:
    # The last run sent these two creates, Stack Auth made the users, and the process died.
    journal = PendingJournal(datadir.pending_creates)
    made = {}
    for name, body in (("alice", {"primary_email": "alice@example.com", "primary_email_auth_enabled": True}),
                       ("heidi", {})):
        journal.intent(uid(name), body.get("primary_email"))
        made[name] = stack.create_user({**body, "server_metadata": {"supabase_user_id": uid(name)}})["id"]
    journal.intent(uid("bob"), "bob@example.com")  # sent, but never reached Stack Auth
    journal.close()
    result = migrate_users(client, datadir)
    mapping = UserMapping.load(datadir.user_mapping)
    assert mapping.get(uid("alice")) == made["alice"] and mapping.get(uid("heidi")) == made["heidi"]
    assert by_supabase_id(stack)[uid("alice")] == 1 and by_supabase_id(stack)[uid("bob")] == 1
    assert outcomes(result)[uid("alice")].status == "migrated" and not result.failed
    assert not datadir.pending_creates.exists()


def export_of(tmp_path: Path, *names: str) -> DataDir:
    """The export of only these edge users (and their identities)."""
    users, identities = edge_users()
    keep = {uid(n) for n in names}
    return write_export(tmp_path / "data", [u for u in users if u["id"] in keep],
                        [i for i in identities if i["user_id"] in keep])


def test_deleted_and_shared_email_users_are_found_after_a_dropped_answer(
        stack: StackAuthSandbox, client: StackAuthClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ("alice", "judy", "kim", "grace", "xavier", "frank")
    datadir = export_of(tmp_path, *names)
    queried: list[str] = []
    find_by_email = client.find_by_email
    monkeypatch.setattr(client, "find_by_email", lambda email: queried.append(email) or find_by_email(email))
    stack.drop_next_creates(len(names))  # every create lands, and every answer is lost
    result = migrate_users(client, datadir, MigrateOptions(concurrency=4))
    assert result.counts == Counter({"migrated": 6}) and result.created == 6 and stack.create_count() == 6
    assert by_supabase_id(stack) == Counter({uid(n): 1 for n in names})
    got = outcomes(result)
    for name in names:
        assert "created after a lost answer was found in Stack Auth" in got[uid(name)].notes, name
    # Found by their sign-in e-mail only when they have one; the others by a scan of supabase_user_id.
    assert sorted(queried) == ["alice@example.com", "grace@example.com"]
    mapping = UserMapping.load(datadir.user_mapping)
    assert len({mapping.get(uid(n)) for n in names}) == 6
    users = stack.users
    assert users[mapping.get(uid("judy"))]["primary_email_auth_enabled"] is False
    assert users[mapping.get(uid("grace"))]["restricted_by_admin"] is True


def test_interrupted_run_finds_deleted_and_shared_email_users(stack: StackAuthSandbox, client: StackAuthClient,
                                                              tmp_path: Path) -> None:
    datadir = export_of(tmp_path, "alice", "judy", "grace", "frank")
    journal = PendingJournal(datadir.pending_creates)
    made = {}
    for name, body in (("judy", {"primary_email": "alice@example.com", "primary_email_auth_enabled": False}),
                       ("grace", {"primary_email": "grace@example.com", "restricted_by_admin": True}),
                       ("frank", {"is_anonymous": True})):
        journal.intent(uid(name), body.get("primary_email"))
        made[name] = stack.create_user({**body, "server_metadata": {"supabase_user_id": uid(name)}})["id"]
    journal.close()
    creates = stack.create_count()
    result = migrate_users(client, datadir)
    assert stack.create_count() == creates + 1  # alice only
    mapping = UserMapping.load(datadir.user_mapping)
    assert {n: mapping.get(uid(n)) for n in made} == made
    assert by_supabase_id(stack) == Counter({uid(n): 1 for n in ("alice", "judy", "grace", "frank")})
    assert result.counts == Counter({"migrated": 4}) and not datadir.pending_creates.exists()
    second = migrate_users(client, datadir)
    assert second.created == 0 and stack.create_count() == creates + 1


def test_an_email_holder_standing_for_another_supabase_user_is_not_linked(
        stack: StackAuthSandbox, client: StackAuthClient, tmp_path: Path) -> None:
    datadir = export_of(tmp_path, "alice", "judy")
    other = str(uuid.uuid4())  # e.g. a user of another Supabase project, created earlier by supamove
    stack.create_user({"primary_email": "alice@example.com", "primary_email_auth_enabled": True,
                       "server_metadata": {"supabase_user_id": other}})
    result = migrate_users(client, datadir)
    got = outcomes(result)
    assert got[uid("alice")].status == "failed" and other in (got[uid("alice")].reason or "")
    assert got[uid("judy")].status == "migrated"
    mapping = UserMapping.load(datadir.user_mapping)
    assert mapping.get(uid("alice")) is None and mapping.owner_of(mapping.get(uid("judy")) or "") == uid("judy")


def test_an_e_mail_holder_who_never_verified_it_is_not_linked_by_migrate_users_or_map_users(
        stack: StackAuthSandbox, client: StackAuthClient, tmp_path: Path) -> None:
    """Anyone could sign up in the new project with the address before the move: linking to an unverified holder
    handed that account the user's rows, and the user's password was dropped without a reset."""
    datadir = export_of(tmp_path, "alice", "judy")
    squatter = stack.create_user({"primary_email": "alice@example.com", "primary_email_auth_enabled": True,
                                  "password": "not-alice-at-all"})["id"]
    expected = (f"Stack Auth user {squatter} already signs in with this e-mail and has not verified it: it may be "
                "someone else's account, so this user is not linked to it")
    for dry_run in (True, False):
        got = outcomes(migrate_users(client, datadir, MigrateOptions(dry_run=dry_run)))
        alice = got[uid("alice")]
        assert (alice.status, alice.reason) == ("failed", expected), dry_run
        assert alice.fix == ("if that Stack Auth user is this person, mark its e-mail verified in the Stack Auth "
                             "dashboard; if not, delete it; then run the same command again")
        assert got[uid("judy")].status == ("create" if dry_run else "migrated")
    assert UserMapping.load(datadir.user_mapping).get(uid("alice")) is None
    mapped = map_users(client, datadir, dry_run=True)
    assert uid("alice") not in {m["supabaseUserId"] for m in mapped.matched}
    assert (uid("alice"), "alice@example.com", "a Stack Auth user signs in with its e-mail without having verified "
            "it: not matched (it may be someone else's account); verify that e-mail in Stack Auth, or delete that "
            "user") in mapped.unmatched_supabase
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as fresh:  # verified by the operator: linked
        fresh.update_user(squatter, {"primary_email_verified": True})
        alice = outcomes(migrate_users(fresh, datadir))[uid("alice")]
    assert (alice.status, alice.stack_auth_user_id) == ("linked", squatter)


def test_a_mapping_of_another_project_or_of_users_deleted_in_stack_auth_is_no_silent_success(
        stack: StackAuthSandbox, client: StackAuthClient, tmp_path: Path) -> None:
    """The mapping was trusted blindly: pointed at another (empty) project, or with users deleted in Stack Auth,
    a rerun said "unchanged" for every user and exited 0, and the import gave the rows ids of no user."""
    datadir = export_of(tmp_path, "alice", "erin", "dave")
    assert migrate_users(client, datadir).failure() is None
    with StackAuthSandbox(str(uuid.uuid4()), SECRET, config=TRUSTED) as other:
        with StackAuthClient(other.url, other.project_id, SECRET, retry=FAST) as elsewhere:
            with pytest.raises(StackAuthError) as refused:
                migrate_users(elsewhere, datadir, MigrateOptions(dry_run=True))
            assert str(refused.value) == (
                f"{datadir.user_mapping} maps Supabase users to users of Stack Auth project {PROJECT}, and "
                f"STACK_AUTH_PROJECT_ID is {other.project_id}: the users it names are not in this project (fix: "
                "point STACK_AUTH_PROJECT_ID (and its key) at the project the users were created in; to move them "
                "into this project instead, use another --data-dir (a new export and mapping))")
            with pytest.raises(StackAuthError, match="maps Supabase users to users of Stack Auth project"):
                send_password_resets(elsewhere, datadir, "https://app.example.com/reset")
        assert other.users == {} and other.reset_emails == []
    data = orjson.loads(datadir.user_mapping.read_bytes())  # a mapping from before the project was recorded
    del data["stackAuthProjectId"]
    datadir.user_mapping.write_bytes(orjson.dumps(data))
    with StackAuthSandbox(str(uuid.uuid4()), SECRET, config=TRUSTED) as other:  # pointed elsewhere by mistake
        with StackAuthClient(other.url, other.project_id, SECRET, retry=FAST) as elsewhere:
            with pytest.raises(StackAuthError, match=f"none of the 3 Stack Auth users {datadir.user_mapping} names "
                                                     f"is in project {other.project_id}: the mapping was written for "
                                                     "another project"):
                migrate_users(elsewhere, datadir)
    assert "stackAuthProjectId" not in orjson.loads(datadir.user_mapping.read_bytes())  # not taken for that one's
    erin = UserMapping.load(datadir.user_mapping).get(uid("erin"))
    stack.delete_user(erin)  # type: ignore[arg-type]
    for dry_run in (True, False):
        result = migrate_users(client, datadir, MigrateOptions(dry_run=dry_run))
        gone = outcomes(result)[uid("erin")]
        assert (gone.status, gone.reason) == ("failed", f"Stack Auth user {erin} no longer exists (deleted in "
                                                        "Stack Auth)"), dry_run
        assert gone.fix == ("run `supamove map-users` (it drops that entry), then the same command again, which "
                            "creates the user anew with a new id (then `supamove import --truncate-first`, if the "
                            "import ran already)")
        assert isinstance(result.failure(), StackAuthError)
        assert {o.status for o in result.outcomes if o is not gone} == {"done" if dry_run else "migrated"}
    assert orjson.loads(datadir.user_mapping.read_bytes())["stackAuthProjectId"] == PROJECT  # named again


def test_a_mapping_none_of_whose_users_is_in_this_stack_auth_stops_the_run_before_anything_is_sent(
        client: StackAuthClient, tmp_path: Path) -> None:
    """Another Stack Auth holding the same project (a staging copy), or every user deleted there: each mapped
    user failed on its own, one table row each, while the users not mapped yet were created there."""
    datadir = export_of(tmp_path, "alice", "erin")
    assert migrate_users(client, datadir).failure() is None
    datadir = export_of(tmp_path, "alice", "erin", "dave")  # a user who signed up since
    with StackAuthSandbox(PROJECT, SECRET, config=TRUSTED) as staging:
        with StackAuthClient(staging.url, PROJECT, SECRET, retry=FAST) as elsewhere:
            for dry_run in (True, False):
                with pytest.raises(StackAuthError) as refused:
                    migrate_users(elsewhere, datadir, MigrateOptions(dry_run=dry_run))
                assert str(refused.value) == (
                    f"none of the 2 Stack Auth users {datadir.user_mapping} names is in the Stack Auth at "
                    f"{staging.url} (project {PROJECT}): it is not the Stack Auth they were created in, or they "
                    "were all deleted there (fix: point STACK_AUTH_API_URL at the Stack Auth the users were created "
                    "in; if they were deleted there, run `supamove map-users --forget-missing` (it drops them from "
                    "the mapping), then the same command again, which creates them anew (then `supamove import "
                    "--truncate-first`, if the import ran already))")
            assert staging.users == {}  # dave was not created in it
            kept = datadir.user_mapping.read_bytes()
            with pytest.raises(StackAuthError) as overwrite:  # a rebuild would map none of them: refused
                map_users(elsewhere, datadir)
            assert str(overwrite.value) == (
                f"none of the 2 Stack Auth users {datadir.user_mapping} names is in the Stack Auth at {staging.url} "
                f"(project {PROJECT}): a mapping rebuilt from it would name none of them (fix: point "
                "STACK_AUTH_API_URL at the Stack Auth the users were created in; if they were deleted there on "
                "purpose, run `supamove map-users --forget-missing`)")
            assert datadir.user_mapping.read_bytes() == kept
            map_users(elsewhere, datadir, forget_missing=True)  # as the fix says: dropped, then all three created
            assert UserMapping.load(datadir.user_mapping).entries == {}
            result = migrate_users(elsewhere, datadir)
        assert result.failure() is None and result.created == 3 and len(staging.users) == 3


def test_a_link_to_a_stack_auth_user_whose_e_mail_is_no_longer_verified_is_undone(
        stack: StackAuthSandbox, client: StackAuthClient, tmp_path: Path) -> None:
    """An earlier version linked to unverified holders; such a link (or one whose holder lost its verification)
    stayed, the import gave the rows to that account, and map-users kept the entry."""
    datadir = export_of(tmp_path, "alice", "judy")
    holder = stack.create_user({"primary_email": "alice@example.com", "primary_email_verified": True,
                                "primary_email_auth_enabled": True})["id"]
    assert outcomes(migrate_users(client, datadir))[uid("alice")].status == "linked"
    client.update_user(holder, {"primary_email_verified": False})
    assert uid("alice") not in {m["supabaseUserId"] for m in map_users(client, datadir, dry_run=True).matched}
    alice = outcomes(migrate_users(client, datadir))[uid("alice")]
    assert (alice.status, alice.reason) == ("failed", f"Stack Auth user {holder} already signs in with this e-mail "
                                                      "and has not verified it: it may be someone else's account, "
                                                      "so this user is not linked to it")
    assert UserMapping.load(datadir.user_mapping).get(uid("alice")) is None  # no import gives it alice's rows
    assert uid("alice") not in {m["supabaseUserId"] for m in map_users(client, datadir, dry_run=True).matched}
    twin = stack.create_user({"primary_email": "alice@example.com", "primary_email_verified": True,
                              "primary_email_auth_enabled": False})["id"]  # verified, but not the one signing in
    rebuilt = map_users(client, datadir, dry_run=True)
    assert twin not in {m["stackAuthUserId"] for m in rebuilt.matched}  # migrate-users would not link it either


def test_an_identity_an_earlier_version_carried_without_a_sign_in_gives_its_user_a_reset(
        stack: StackAuthSandbox, client: StackAuthClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user whose only sign-in was a bitbucket identity, migrated when it was carried: unchanged since, the
    rerun reused that run's verdict (no reset) while this version's plan needs one."""
    from supamove.users import plan as users_plan

    users = [auth_user("bitty", 0, encrypted_password="")]
    datadir = write_export(tmp_path / "d", users, [identity(users[0], "bitbucket", "{b1}", "bitty@example.com")])
    with monkeypatch.context() as older:  # as the version before carried it
        older.setattr(users_plan, "account_id", lambda provider, identity: (str(identity["provider_id"]), None))
        assert outcomes(migrate_users(client, datadir))[uid("bitty")].password == "none"
    again = outcomes(migrate_users(client, datadir))[uid("bitty")]
    assert (again.status, again.password, again.reset_reason) == ("migrated", "reset-required", "no-password")
    assert not [n for n in again.notes if "no longer in Supabase" in n], again.notes  # it is: no longer carried
    assert any(n.startswith("bitbucket identity not carried over") for n in again.notes), again.notes
    assert [u["supabaseUserId"] for u in orjson.loads(datadir.password_resets.read_bytes())["users"]] == [uid("bitty")]


def test_a_mapping_from_before_one_to_one_is_refused_then_rebuilt(stack: StackAuthSandbox, client: StackAuthClient,
                                                                   tmp_path: Path) -> None:
    datadir = export_of(tmp_path, "alice", "judy")
    alice = stack.create_user({"primary_email": "alice@example.com", "primary_email_auth_enabled": True,
                               "server_metadata": {"supabase_user_id": uid("alice"),
                                                   "supabase_linked_user_ids": [uid("judy")]}})["id"]
    datadir.user_mapping.write_bytes(orjson.dumps({"generatedAt": "x", "retainUntil": "y", "mappings": [
        {"supabaseUserId": uid(n), "stackAuthUserId": alice, "email": "alice@example.com", "migratedAt": None}
        for n in ("alice", "judy")]}))
    with pytest.raises(DataFileError) as caught:
        migrate_users(client, datadir)
    assert alice in str(caught.value) and "user-mapping.json" in str(caught.value)
    assert "map-users" in (caught.value.fix or "") and stack.create_count() == 0
    datadir.user_mapping.unlink()
    rebuilt = map_users(client, datadir)
    assert [m["supabaseUserId"] for m in rebuilt.matched] == [uid("alice")]
    assert [(sid, why.startswith(f"shares its e-mail with {uid('alice')}")) for sid, _, why in
            rebuilt.unmatched_supabase] == [(uid("judy"), True)]
    result = migrate_users(client, datadir)
    assert result.created == 1 and outcomes(result)[uid("judy")].reason == "duplicate-email"
    mapping = UserMapping.load(datadir.user_mapping)
    assert mapping.get(uid("alice")) == alice and mapping.get(uid("judy")) not in (None, alice)


def test_journaled_creates_missing_from_the_mapping_are_recovered(stack: StackAuthSandbox, client: StackAuthClient,
                                                                  datadir: DataDir) -> None:
    migrate_users(client, datadir)
    mapping = orjson.loads(datadir.user_mapping.read_bytes())
    lost = mapping["mappings"].pop(0)  # the batch rewrite that would have held it never happened
    datadir.user_mapping.write_bytes(orjson.dumps(mapping))
    journal = PendingJournal(datadir.pending_creates)
    journal.intent(lost["supabaseUserId"], lost["email"])
    journal.done(lost["supabaseUserId"], lost["stackAuthUserId"])
    journal.close()
    creates = stack.create_count()
    migrate_users(client, datadir)
    assert stack.create_count() == creates
    assert UserMapping.load(datadir.user_mapping).get(lost["supabaseUserId"]) == lost["stackAuthUserId"]


def test_a_create_in_flight_when_the_run_was_killed_is_found_and_counted(stack: StackAuthSandbox,
                                                                          client: StackAuthClient,
                                                                          datadir: DataDir) -> None:
    first = migrate_users(client, datadir)
    mapping = orjson.loads(datadir.user_mapping.read_bytes())
    lost = mapping["mappings"].pop(0)  # created, then killed before its answer was journaled or saved
    datadir.user_mapping.write_bytes(orjson.dumps(mapping))
    journal = PendingJournal(datadir.pending_creates)
    journal.intent(lost["supabaseUserId"], lost["email"])
    journal.close()
    creates = stack.create_count()
    rerun = migrate_users(client, datadir)
    assert stack.create_count() == creates
    found = outcomes(rerun)[lost["supabaseUserId"]]
    assert found.found_earlier and "found in Stack Auth by its Supabase id (an earlier run created it)" in found.notes
    # Every user in one bucket of the summary: it was in none ("Created 1,097 ... 396 unchanged" of 1,500).
    summary = orjson.loads(datadir.users_report.read_bytes())["summary"]
    assert summary["foundAfterInterruption"] == 1 and summary["createdThisRun"] == 0
    assert summary["foundAfterInterruption"] + summary["unchanged"] + summary["updated"] == len(first.outcomes)


def test_401_gives_the_clear_error(stack: StackAuthSandbox, datadir: DataDir) -> None:
    with StackAuthClient(stack.url, PROJECT, "ssk_not_the_key", retry=FAST) as c, pytest.raises(StackAuthError) as caught:
        migrate_users(c, datadir)
    assert "STACK_AUTH_SECRET_KEY" in str(caught.value) and "STACK_AUTH_PROJECT_ID" in str(caught.value)
    assert "ssk_not_the_key" not in str(caught.value)
    assert stack.create_count() == 0


# --- options -----------------------------------------------------------------------------------


def test_dry_run_creates_nothing(stack: StackAuthSandbox, client: StackAuthClient, datadir: DataDir) -> None:
    pre_existing_trent(stack)
    result = migrate_users(client, datadir, MigrateOptions(dry_run=True))
    assert stack.create_count() == 0 and len(stack.users) == 1
    assert stack.requests["GET /api/v1/users 200"] == 1  # Stack Auth's users listed once, for every check
    got = outcomes(result)
    assert got[uid("alice")].status == "create" and got[uid("trent")].status == "link"
    assert (got[uid("judy")].status, got[uid("judy")].reason) == ("create", "duplicate-email")
    assert (got[uid("frank")].status, got[uid("frank")].reason) == ("create", "anonymous")
    assert (got[uid("grace")].status, got[uid("grace")].reason) == ("create", "deleted")
    assert len(result.reset_required) == 4
    assert not datadir.user_mapping.exists() and not datadir.users_report.exists()


def test_dry_run_after_a_run_counts_the_same_resets(stack: StackAuthSandbox, client: StackAuthClient,
                                                   datadir: DataDir) -> None:
    real = migrate_users(client, datadir)
    listed = stack.requests["GET /api/v1/users 200"]
    again = migrate_users(client, datadir, MigrateOptions(dry_run=True))
    assert stack.requests["GET /api/v1/users 200"] == listed + 1  # one list for the mapping's users and the links
    assert {o.status for o in again.outcomes} <= {"done", "skipped"}
    assert len(again.reset_required) == len(real.reset_required) > 0


def test_no_password_hashes_forces_resets(stack: StackAuthSandbox, client: StackAuthClient, datadir: DataDir) -> None:
    result = migrate_users(client, datadir, MigrateOptions(use_password_hashes=False))
    assert not stack.check_password("alice@example.com", PASSWORDS["alice"])
    assert all(not u["has_password"] for u in stack.users.values())
    reasons = {o.supabase_user_id: o.reset_reason for o in result.reset_required}
    assert reasons[uid("alice")] == "forced" and reasons[uid("bob")] == "forced"
    assert uid("erin") not in reasons and uid("mallory") not in reasons  # OAuth-only; banned
    assert not {uid("judy"), uid("kim"), uid("grace"), uid("frank")} & set(reasons)  # no sign-in e-mail
    assert len(reasons) == 9  # alice bob carol oscar victor xavier (forced), dave trent (none), ivan (sso)


def test_a_new_data_directory_against_the_same_stack_auth_finds_the_users_created_before(
        stack: StackAuthSandbox, client: StackAuthClient, datadir: DataDir, tmp_path: Path) -> None:
    # Started again in a new data directory (the export's own advice when one is finished), the users with no
    # sign-in e-mail to link by (anonymous, deleted, phone-only, a shared e-mail) were created a second time.
    first = migrate_users(client, datadir)
    creates = stack.create_count()
    again = write_export(tmp_path / "elsewhere", *edge_users())
    planned = migrate_users(client, again, MigrateOptions(dry_run=True))
    assert {o.status for o in planned.outcomes} <= {"done", "failed"}, [(o.status, o.reason) for o in planned.outcomes]
    result = migrate_users(client, again)
    assert stack.create_count() == creates and max(by_supabase_id(stack).values()) == 1
    assert {o.supabase_user_id: o.stack_auth_user_id for o in result.outcomes} == \
        {o.supabase_user_id: o.stack_auth_user_id for o in first.outcomes}
    assert result.found_earlier >= 4 and result.failure() is None


def test_a_user_two_stack_auth_users_claim_fails_instead_of_being_taken_for_one(
        stack: StackAuthSandbox, client: StackAuthClient, datadir: DataDir, tmp_path: Path) -> None:
    # Reading Stack Auth's users for those an earlier run created, the last claimant listed was taken.
    migrate_users(client, datadir)
    alice = next(u for u in stack.users.values() if (u["server_metadata"] or {}).get("supabase_user_id") == uid("alice"))
    twin = client.create_user({"primary_email": "alice.twin@example.com",
                               "server_metadata": {"supabase_user_id": uid("alice")}}).user["id"]
    creates = stack.create_count()
    result = migrate_users(client, write_export(tmp_path / "elsewhere", *edge_users()))
    outcome = outcomes(result)[uid("alice")]
    assert outcome.status == "failed" and result.failure() is not None
    prefix = "claimed by more than one Stack Auth user (server_metadata.supabase_user_id): "
    assert outcome.reason.startswith(prefix) and set(outcome.reason[len(prefix):].split(", ")) == {alice["id"], twin}
    assert stack.create_count() == creates  # nobody created again, alice included


def test_a_lost_create_answer_looked_up_among_two_claimants_fails_the_user_instead_of_taking_one(
        stack: StackAuthSandbox, client: StackAuthClient, tmp_path: Path) -> None:
    # After a lost answer the user is looked up before a second create: the first claimant listed was taken.
    judy, phoebe = auth_user("judy", 1), auth_user("phoebe", 2, email=None, phone="15550001111")
    migrate_users(client, write_export(tmp_path / "data", [judy], []))  # a mapping: only the new user is created
    twin = client.create_user({"server_metadata": {"supabase_user_id": phoebe["id"]}}).user["id"]
    datadir = write_export(tmp_path / "data", [judy, phoebe], [])
    stack.drop_next_creates(1)  # phoebe's create lands, its answer is lost
    result = migrate_users(client, datadir)
    outcome = outcomes(result)[phoebe["id"]]
    assert outcome.status == "failed" and result.failure() is not None
    prefix = "claimed by more than one Stack Auth user (server_metadata.supabase_user_id): "
    landed = {u["id"] for u in stack.users.values()
              if (u["server_metadata"] or {}).get("supabase_user_id") == phoebe["id"]} - {twin}
    assert outcome.reason.startswith(prefix) and len(landed) == 1
    assert set(outcome.reason[len(prefix):].split(", ")) == landed | {twin}
    assert phoebe["id"] not in UserMapping.load(datadir.user_mapping).by_supabase()
    again = migrate_users(client, datadir)  # its intent kept: the rerun looks again, and creates nobody
    assert outcomes(again)[phoebe["id"]].status == "failed"
    assert sum((u["server_metadata"] or {}).get("supabase_user_id") == phoebe["id"] for u in stack.users.values()) == 2


def test_map_users_rebuilds_the_same_mapping(stack: StackAuthSandbox, client: StackAuthClient,
                                             datadir: DataDir) -> None:
    pre_existing_trent(stack)
    migrate_users(client, datadir)
    before = {m["supabaseUserId"]: m["stackAuthUserId"]
              for m in orjson.loads(datadir.user_mapping.read_bytes())["mappings"]}
    datadir.user_mapping.unlink()
    creates = stack.create_count()
    dry = map_users(client, datadir, dry_run=True)
    assert not datadir.user_mapping.exists() and len(dry.matched) == 17
    result = map_users(client, datadir)
    after = {m["supabaseUserId"]: m["stackAuthUserId"]
             for m in orjson.loads(datadir.user_mapping.read_bytes())["mappings"]}
    assert after == before and stack.create_count() == creates
    assert result.unmatched_supabase == []  # every user, peggy with her invalid address included
    assert result.unmatched_stack == []


def test_map_users_keeps_an_entry_whose_stack_auth_user_is_there_but_no_longer_matches(
        stack: StackAuthSandbox, client: StackAuthClient, datadir: DataDir) -> None:
    # Its Supabase id cleared and its e-mail changed in Stack Auth: the rebuilt mapping dropped the entry,
    # and the next migrate-users would have created that user a second time.
    migrate_users(client, datadir)
    alice = orjson.loads(datadir.user_mapping.read_bytes())["mappings"]
    stack_id = next(m["stackAuthUserId"] for m in alice if m["supabaseUserId"] == uid("alice"))
    client.update_user(stack_id, {"server_metadata": None, "primary_email": "alice.elsewhere@example.com"})
    result = map_users(client, datadir)
    assert result.kept == 1 and uid("alice") not in {sid for sid, _, _ in result.unmatched_supabase}
    assert stack_id not in {sid for sid, _ in result.unmatched_stack}
    mapping = {m["supabaseUserId"]: m["stackAuthUserId"] for m in orjson.loads(datadir.user_mapping.read_bytes())["mappings"]}
    assert mapping[uid("alice")] == stack_id
    creates = stack.create_count()
    assert outcomes(migrate_users(client, datadir, MigrateOptions(dry_run=True)))[uid("alice")].status != "create"
    assert stack.create_count() == creates


def test_map_users_refuses_to_guess_between_two_stack_auth_users_claiming_one_supabase_user(
        stack: StackAuthSandbox, client: StackAuthClient, datadir: DataDir) -> None:
    # A duplicate made by hand or by another importer: the first one listed was mapped without a word, and
    # the application's rows could have followed the wrong account.
    migrate_users(client, datadir)
    before = datadir.user_mapping.read_bytes()
    first = next(m["stackAuthUserId"] for m in orjson.loads(before)["mappings"] if m["supabaseUserId"] == uid("alice"))
    twin = client.create_user({"primary_email": "alice.twin@example.com",  # its claim written in upper case
                               "server_metadata": {"supabase_user_id": uid("alice").upper()}}).user["id"]
    for dry_run in (True, False):
        result = map_users(client, datadir, dry_run=dry_run)
        claims = result.claimed_twice[uid("alice")]
        assert sorted((c["stackAuthUserId"], c["inMapping"]) for c in claims) == sorted([(first, True), (twin, False)])
        assert uid("alice") not in {m["supabaseUserId"] for m in result.matched}  # neither is guessed at
        assert uid("alice") not in {sid for sid, _, _ in result.unmatched_supabase}
        failure = result.failure()
        assert isinstance(failure, StackAuthError) and failure.exit_code == 6
        assert "1 Supabase user is claimed by more than one Stack Auth user" in str(failure)
        assert f"{first} alice@example.com (in user-mapping.json)" in str(failure)
        assert f"{twin} alice.twin@example.com" in str(failure)
        assert ("user-mapping.json was not written" in str(failure)) is not dry_run
        assert result.to_dict()["claimedByMoreThanOne"][0]["supabaseUserId"] == uid("alice")
    assert datadir.user_mapping.read_bytes() == before
    client.update_user(twin, {"server_metadata": None})  # the fix the error gives
    result = map_users(client, datadir)
    assert result.failure() is None and (twin, "alice.twin@example.com") in result.unmatched_stack
    assert {m["supabaseUserId"]: m["stackAuthUserId"] for m in result.matched}[uid("alice")] == first


def test_damaged_mapping_is_a_data_file_error(tmp_path: Path) -> None:
    path = tmp_path / "user-mapping.json"
    path.write_text("{not json")
    with pytest.raises(DataFileError, match="user-mapping.json"):
        UserMapping.load(path)
    sid = str(uuid.uuid4())
    entry = {"supabaseUserId": sid, "stackAuthUserId": str(uuid.uuid4()), "email": None, "migratedAt": None}
    path.write_bytes(orjson.dumps({"generatedAt": "x", "retainUntil": "y", "mappings": [entry, entry]}))
    with pytest.raises(DataFileError, match=f"lists Supabase user {sid} twice") as caught:
        UserMapping.load(path)
    assert "user-mapping.json" in str(caught.value)
    path.write_bytes(orjson.dumps({"generatedAt": "x", "retainUntil": "y",
                                   "mappings": [{**entry, "stackAuthUserId": "st-1"}]}))
    with pytest.raises(DataFileError, match="mapping number 1 has stackAuthUserId 'st-1', not a uuid"):
        UserMapping.load(path)


def test_mapping_listing_one_supabase_id_in_two_cases_is_a_data_file_error(tmp_path: Path) -> None:
    path = tmp_path / "user-mapping.json"
    sid, stack_ids = str(uuid.uuid4()), [str(uuid.uuid4()), str(uuid.uuid4())]
    entries = [{"supabaseUserId": sid.upper(), "stackAuthUserId": stack_ids[0].upper(), "email": None,
                "migratedAt": None}]
    path.write_bytes(orjson.dumps({"generatedAt": "x", "retainUntil": "y", "mappings": entries}))
    mapping = UserMapping.load(path)  # ids are read in any case, and looked up in lower case
    assert mapping.by_supabase() == {sid: stack_ids[0].upper()}
    assert mapping.by_stack() == {stack_ids[0]: sid}
    entries.append({"supabaseUserId": sid, "stackAuthUserId": stack_ids[1], "email": None, "migratedAt": None})
    path.write_bytes(orjson.dumps({"generatedAt": "x", "retainUntil": "y", "mappings": entries}))
    with pytest.raises(DataFileError) as caught:  # one of the two would silently win
        UserMapping.load(path)
    assert str(caught.value).startswith(f"{path} lists Supabase user {sid} twice (fix: restore user-mapping.json")


def test_mapping_listing_one_stack_auth_id_twice_is_a_data_file_error(tmp_path: Path) -> None:
    path = tmp_path / "user-mapping.json"
    shared = str(uuid.uuid4())
    sb1, sb2, sb3 = (str(uuid.uuid4()) for _ in range(3))
    path.write_bytes(orjson.dumps({"generatedAt": "x", "retainUntil": "y", "mappings": [
        {"supabaseUserId": sb1, "stackAuthUserId": shared, "email": "a@x.io", "migratedAt": None},
        {"supabaseUserId": sb2, "stackAuthUserId": str(uuid.uuid4()), "email": None, "migratedAt": None},
        {"supabaseUserId": sb3, "stackAuthUserId": shared.upper(), "email": "a@x.io", "migratedAt": None}]}))
    with pytest.raises(DataFileError) as caught:
        UserMapping.load(path)
    assert str(path) in str(caught.value) and shared.upper() in str(caught.value)
    assert sb1 in str(caught.value) and sb3 in str(caught.value)
    mapping = UserMapping(path)
    mapping.add(sb1, shared, None)
    mapping.add(sb1, shared, None)  # the same pair again is fine
    with pytest.raises(ValueError, match=shared):
        mapping.add(sb2, shared, None)


def test_missing_export_says_to_export_first(client: StackAuthClient, tmp_path: Path) -> None:
    with pytest.raises(DataFileError) as caught:
        migrate_users(client, DataDir(tmp_path))
    assert caught.value.fix == ("run `supamove export` first, or, if it ran, set --data-dir (or MIGRATION_DATA_DIR) "
                                "to the directory it wrote")


def test_purge_mapping_refuses_before_retain_until(stack: StackAuthSandbox, client: StackAuthClient,
                                                  datadir: DataDir) -> None:
    migrate_users(client, datadir)
    with pytest.raises(ConfigError) as early:  # exit 2, as export's refusal of a finished export without --force
        purge_mapping(datadir)
    assert early.value.fix == "run `supamove purge-mapping` after that date, or pass --force to delete it now"
    assert datadir.user_mapping.exists()
    later = datetime.now(UTC) + timedelta(days=91)
    assert purge_mapping(datadir, now=later).deleted == [datadir.user_mapping, datadir.user_sync_state]
    assert not datadir.user_mapping.exists()
    migrate_users(client, datadir)
    assert datadir.user_sync_state.exists()
    assert purge_mapping(datadir, force=True).forced
    assert not datadir.user_sync_state.exists()  # it pairs the ids too
    migrate_users(client, datadir)
    mapping = orjson.loads(datadir.user_mapping.read_bytes())
    for edited in ("garbage", 5):
        datadir.user_mapping.write_bytes(orjson.dumps({**mapping, "retainUntil": edited}))
        with pytest.raises(DataFileError, match="retainUntil .* is not a date"):
            purge_mapping(datadir)
    assert purge_mapping(datadir, force=True).forced and not datadir.user_mapping.exists()
    datadir.pending_creates.write_bytes(b'{"op": "intent", "supabaseUserId": "a", "email": null}\n')  # a killed run's
    with pytest.raises(DataFileError, match="--force deletes the journals a killed run left"):
        purge_mapping(datadir)
    assert purge_mapping(datadir, force=True).deleted == [datadir.pending_creates]


def test_send_password_resets_is_idempotent(stack: StackAuthSandbox, client: StackAuthClient,
                                            datadir: DataDir) -> None:
    migrate_users(client, datadir)
    dry = send_password_resets(client, datadir, None, dry_run=True)
    assert len(dry.to_send) == 5 and stack.reset_emails == []  # bob, carol, dave, ivan, trent
    with pytest.raises(SupamoveError, match="callback-url"):
        send_password_resets(client, datadir, None)
    stack.fail_next(2, 429, match="POST /api/v1/auth/password/send-reset-code")
    first = send_password_resets(client, datadir, "https://app.example.com/reset")
    assert len(first.sent) == 5 and not first.failed
    assert sorted(e.email for e in stack.reset_emails) == ["bob@example.com", "carol@example.com", "dave@example.com",
                                                           "ivan@corp.example", "trent@example.com"]
    second = send_password_resets(client, datadir, "https://app.example.com/reset")
    assert second.sent == [] and second.already_sent == 5 and len(stack.reset_emails) == 5
    assert stat.S_IMODE(os.stat(datadir.password_resets_sent).st_mode) == 0o600


def test_a_reset_stack_auth_would_send_to_no_one_is_a_failure_not_a_send(stack: StackAuthSandbox,
                                                                          client: StackAuthClient,
                                                                          datadir: DataDir) -> None:
    """Stack Auth answers a reset for an e-mail no user signs in with as it answers any other, and sends
    nothing: a user deleted there, one whose e-mail changed there, or another Stack Auth of the same project
    altogether were all counted as sent."""
    migrate_users(client, datadir)
    link = "https://app.example.com/reset"
    with StackAuthSandbox(PROJECT, SECRET, config=TRUSTED) as staging:
        with StackAuthClient(staging.url, PROJECT, SECRET, retry=FAST) as elsewhere:
            with pytest.raises(StackAuthError) as refused:
                send_password_resets(elsewhere, datadir, link)
            assert str(refused.value) == (
                f"none of the 5 users to send a reset e-mail is in the Stack Auth at {staging.url} (project "
                f"{PROJECT}): it is not the Stack Auth they were created in, or they were deleted there (fix: point "
                "STACK_AUTH_API_URL at the Stack Auth the users were created in; if they were deleted there, run "
                "`supamove map-users --forget-missing`, then `supamove migrate-users` (which creates them anew), then "
                "this command again)")
            assert staging.reset_emails == []
    mapping = UserMapping.load(datadir.user_mapping)
    bob, carol, dave = (str(mapping.get(uid(name))) for name in ("bob", "carol", "dave"))
    stack.delete_user(bob)
    client.update_user(carol, {"primary_email": "carol.new@example.com"})  # the old one still signs her in
    client.update_user(dave, {"primary_email": "dave.new@example.com"})
    old = next(c for c in client.list_contact_channels(dave) if c["value"] == "dave@example.com")
    client.delete_contact_channel(dave, old["id"])  # and no one signs in with dave's old one
    result = send_password_resets(client, datadir, link)
    assert sorted(e.email for e in stack.reset_emails) == ["carol@example.com", "ivan@corp.example",
                                                           "trent@example.com"]
    assert sorted(result.sent) == sorted(uid(name) for name in ("carol", "ivan", "trent"))
    assert dict(result.failed) == {
        uid("bob"): f"Stack Auth user {bob} no longer exists (deleted in Stack Auth): nothing sent; run `supamove "
                    "map-users`, then `supamove migrate-users` (which creates the user anew), then this command again",
        uid("dave"): f"no Stack Auth user signs in with dave@example.com now, not {dave} (changed in Stack Auth since "
                     "the migration): nothing sent, as Stack Auth would send the link to no one or to another "
                     "account; run `supamove migrate-users`, which reports the change, and have the user reset their "
                     "password from the sign-in page"}
    assert str(result.failure()) == "2 reset e-mails failed (fix: correct the cause, then rerun)"
    sent = orjson.loads(datadir.password_resets_sent.read_bytes())["sent"]
    assert {e["supabaseUserId"] for e in sent} == set(result.sent)  # the two failed go when their cause is mended


def test_a_reset_whose_e_mail_another_stack_auth_user_signs_in_with_now_is_not_sent(
        stack: StackAuthSandbox, client: StackAuthClient, datadir: DataDir) -> None:
    """The link would reach that other account's owner, and reset nothing of this user's."""
    migrate_users(client, datadir)
    trent = str(UserMapping.load(datadir.user_mapping).get(uid("trent")))
    client.update_user(trent, {"primary_email": "trent.new@example.com"})
    old = next(c for c in client.list_contact_channels(trent) if c["value"] == "trent@example.com")
    client.delete_contact_channel(trent, old["id"])
    other = stack.create_user({"primary_email": "trent@example.com", "primary_email_auth_enabled": True})["id"]
    result = send_password_resets(client, datadir, "https://app.example.com/reset")
    assert "trent@example.com" not in {e.email for e in stack.reset_emails} and len(result.sent) == 4
    assert dict(result.failed)[uid("trent")].startswith(
        f"Stack Auth user {other} signs in with trent@example.com now, not {trent} (changed in Stack Auth since the "
        "migration): nothing sent")


def test_a_run_killed_between_its_saves_sends_no_e_mail_twice(stack: StackAuthSandbox, client: StackAuthClient,
                                                              datadir: DataDir, monkeypatch: pytest.MonkeyPatch) -> None:
    # password-resets-sent.json is written every 50 e-mails: a run killed before that kept no record of those
    # it had sent, and the rerun sent them again.
    from supamove.users import resets

    class Killed(BaseException):
        pass

    migrate_users(client, datadir)
    sends = 0
    real = client.send_reset_code

    def dying(email: str, callback_url: str) -> None:  # the process dies during the third send
        nonlocal sends
        sends += 1
        if sends >= 3:
            raise Killed
        real(email, callback_url)

    with monkeypatch.context() as killed:
        killed.setattr(resets._Sender, "save", lambda self: None)  # a kill -9 saves nothing, clears nothing
        killed.setattr(PendingJournal, "clear", lambda self, sid: None)
        killed.setattr(client, "send_reset_code", dying)
        with pytest.raises(Killed):
            send_password_resets(client, datadir, "https://app.example.com/reset", concurrency=1)
    assert len(stack.reset_emails) == 2 and not datadir.password_resets_sent.exists()
    assert stat.S_IMODE(os.stat(datadir.pending_resets).st_mode) == 0o600  # it holds e-mail addresses
    rerun = send_password_resets(client, datadir, "https://app.example.com/reset")
    emails = [e.email for e in stack.reset_emails]
    assert len(emails) == len(set(emails)) == 2  # none sent twice; the two in flight may have gone: held
    assert rerun.sent == [] and rerun.already_sent == 2 and rerun.uncertain_before == 3
    # the run that finds them says so with its exit code: the killed run could not
    assert str(rerun.failure()).startswith("3 reset e-mails may or may not have been sent (they were being sent "
                                           "when a run was killed)")
    assert send_password_resets(client, datadir, "https://app.example.com/reset").failure() is None  # said once
    recorded = orjson.loads(datadir.password_resets_sent.read_bytes())["sent"]
    assert sorted(e["status"] for e in recorded) == ["sent", "sent", "uncertain", "uncertain", "uncertain"]
    assert {e["email"] for e in recorded if e["status"] == "sent"} == set(emails)
    assert all(e["sentAt"] for e in recorded) and not datadir.pending_resets.exists()
    last = send_password_resets(client, datadir, "https://app.example.com/reset", resend_uncertain=True)
    assert len(last.sent) == 3 and len(stack.reset_emails) == 5 and last.failure() is None


def test_a_send_stopped_before_it_went_is_sent_by_the_next_run(stack: StackAuthSandbox, client: StackAuthClient,
                                                                datadir: DataDir) -> None:
    # The journal's line before a send was cleared only on a refusal or a lost answer: a run stopped by 429s to
    # the end (or Ctrl-C, or a wrong setting) held its user back as uncertain, and the next run sent them none.
    migrate_users(client, datadir)
    stack.fail_next(8, 429, match="POST /api/v1/auth/password/send-reset-code")
    with pytest.raises(StackAuthError, match="did not answer"):
        send_password_resets(client, datadir, "https://app.example.com/reset")
    assert stack.reset_emails == [] and not datadir.pending_resets.exists()
    second = send_password_resets(client, datadir, "https://app.example.com/reset")
    assert len(second.sent) == 5 and second.uncertain_before == 0 and second.failure() is None
    assert len(stack.reset_emails) == 5


def test_reset_files_edited_by_hand(stack: StackAuthSandbox, client: StackAuthClient, datadir: DataDir) -> None:
    migrate_users(client, datadir)
    required = orjson.loads(datadir.password_resets.read_bytes())
    listed = required["users"]
    datadir.password_resets.write_bytes(orjson.dumps({**required, "users": listed + listed[:1]}))
    assert len(send_password_resets(client, datadir, None, dry_run=True).to_send) == 5  # listed twice: one e-mail
    datadir.password_resets.write_bytes(orjson.dumps({**required, "users": [*listed, 1]}))
    with pytest.raises(DataFileError, match="user 6 is not as migrate-users writes it"):
        send_password_resets(client, datadir, None, dry_run=True)
    datadir.password_resets.write_bytes(orjson.dumps(required))
    datadir.password_resets_sent.write_bytes(b"{}")  # emptied: it read as nobody sent to yet
    with pytest.raises(DataFileError, match="password-resets-sent.json"):
        send_password_resets(client, datadir, None, dry_run=True)
    with pytest.raises(SupamoveError, match="carries a user name or password") as caught:
        send_password_resets(client, datadir, "https://admin:hunter2secret@app.example.com/reset")
    assert "hunter2secret" not in str(caught.value)


def test_many_users_concurrently_each_created_once(stack: StackAuthSandbox, client: StackAuthClient,
                                                   tmp_path: Path) -> None:
    # The speed target (users/s) is measured by bench/, not asserted here.
    datadir = write_export(tmp_path / "data", many_users(2_000), [])
    result = migrate_users(client, datadir, MigrateOptions(concurrency=8))
    assert result.created == 2_000 and len(stack.users) == 2_000
    mapping = orjson.loads(datadir.user_mapping.read_bytes())["mappings"]
    assert len({m["supabaseUserId"] for m in mapping}) == len({m["stackAuthUserId"] for m in mapping}) == 2_000


# --- secrets and the CLI -----------------------------------------------------------------------


def test_no_hash_or_secret_in_logs_output_or_files(stack: StackAuthSandbox, datadir: DataDir, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    pre_existing_trent(stack)
    log_file = tmp_path / "migration.log"
    for name, value in {"STACK_AUTH_API_URL": stack.url, "STACK_AUTH_PROJECT_ID": PROJECT,
                        "STACK_AUTH_SECRET_KEY": SECRET, "MIGRATION_DATA_DIR": str(datadir.root),
                        "LOG_FILE_PATH": str(log_file)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    from supamove.cli import main

    caplog.set_level(logging.DEBUG)
    stack.drop_next_creates(2)
    stack.fail_next(2, 429, retry_after="0.05")
    runner = CliRunner()
    outputs = [runner.invoke(main, ["-v", "migrate-users", "--dry-run"]),
               runner.invoke(main, ["-v", "migrate-users", "--concurrency", "4"]),
               runner.invoke(main, ["-v", "map-users", "--dry-run"]),
               runner.invoke(main, ["-v", "send-password-resets", "--callback-url", "https://app.example.com/r"]),
               runner.invoke(main, ["-v", "send-password-resets", "--dry-run"]),
               runner.invoke(main, ["purge-mapping"])]
    for result in outputs[:-1]:
        assert result.exit_code == 0, result.output
    assert outputs[0].output.count("would create") and "Nothing was created" in outputs[0].output
    assert "need a password reset" in outputs[1].output and "users/s" in outputs[1].output
    assert outputs[-1].exit_code != 0 and "--force" in outputs[-1].output
    texts = [r.output for r in outputs] + [caplog.text, log_file.read_text()]
    texts += [p.read_text() for p in datadir.root.iterdir() if p.is_file()]
    bcrypt_hashes = [h for h in HASHES.values()]
    for text in texts:
        assert SECRET not in text
        for hashed in bcrypt_hashes:
            assert hashed not in text


def test_wrong_secret_on_the_cli_is_one_clear_line(stack: StackAuthSandbox, datadir: DataDir, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"STACK_AUTH_API_URL": stack.url, "STACK_AUTH_PROJECT_ID": PROJECT,
                        "STACK_AUTH_SECRET_KEY": "ssk_wrong_one_555", "MIGRATION_DATA_DIR": str(datadir.root),
                        "LOG_FILE_PATH": str(tmp_path / "m.log")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    from supamove.cli import main

    result = CliRunner().invoke(main, ["migrate-users"])
    assert result.exit_code == StackAuthError.exit_code
    assert "STACK_AUTH_SECRET_KEY" in result.output and "ssk_wrong_one_555" not in result.output


def test_failed_users_and_e_mails_end_the_run_in_one_stack_auth_error(tmp_path: Path) -> None:
    report = tmp_path / "user-migration-report.json"
    ok = UserOutcome("sb-1", "migrated", None, "st-1", "a@x.io")
    assert MigrationResult([ok], False, 1.0, report_path=report).failure() is None
    failed = MigrationResult([ok, UserOutcome("sb-2", "failed", "refused", None, None)], False, 1.0,
                             report_path=report).failure()
    assert isinstance(failed, StackAuthError) and str(failed) == (
        f"1 user failed (see {report}) (fix: correct the cause shown for them, then run the same command again)")
    assert ResetResult(sent=["sb-1"]).failure() is None
    assert str(ResetResult(failed=[("sb-1", "bounced"), ("sb-2", "bounced")]).failure()) == (
        "2 reset e-mails failed (fix: correct the cause, then rerun)")


# --- one odd user never stops a migration -------------------------------------------------------


def two_users(tmp_path: Path, factors: list[dict[str, Any]] | None = None) -> DataDir:
    users, identities = edge_users()
    keep = {uid("alice"), uid("judy")}
    return write_export(tmp_path / "two", [u for u in users if u["id"] in keep],
                        [i for i in identities if i["user_id"] in keep], factors)


def test_a_persistent_500_fails_that_user_only(stack: StackAuthSandbox, tmp_path: Path) -> None:
    datadir = two_users(tmp_path)
    stack.fail_next(3, 500, match="POST /api/v1/users")  # the oldest user's three creates, each looked up
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as one:
        result = migrate_users(one, datadir, MigrateOptions(concurrency=1))
    got = outcomes(result)
    alice = got[uid("alice")]
    assert (alice.status, alice.reason) == ("failed", "Stack Auth answered 500 to its create and holds no such "
                                                      "user: Internal Server Error")
    assert alice.fix == ("look the request id up in Stack Auth's server log; correct the cause, then run the same "
                         "command again (only the failed users are retried)")
    assert got[uid("judy")].status == "migrated" and stack.create_count() == 1
    assert str(result.failure()).startswith("1 user failed")
    report = orjson.loads(datadir.users_report.read_bytes())
    assert report["summary"]["failed"] == 1 and report["users"][0]["fix"] == alice.fix
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as c:
        again = migrate_users(c, datadir)
    assert not again.failed and again.created == 1 and stack.create_count() == 2  # only alice, now


def test_a_provider_not_enabled_fails_its_users_and_the_rest_go_on(client: StackAuthClient, datadir: DataDir) -> None:
    with StackAuthSandbox(PROJECT, SECRET, config=SandboxConfig(oauth_providers=("google",))) as stack, \
            StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as c:
        result = migrate_users(c, datadir)
        judy = outcomes(result)[uid("judy")]
        assert (judy.status, judy.reason) == ("failed", "Stack Auth: OAuth provider github not found (the provider "
                                                        "is not enabled in the project)")
        assert judy.fix == ("enable the github OAuth provider in the Stack Auth dashboard (Auth Methods), then run "
                            "the same command again")
        assert [o.supabase_user_id for o in result.failed] == [uid("judy")] and result.created == 16
        stack.config.oauth_providers = ("google", "github")
        again = migrate_users(c, datadir)
        assert not again.failed and again.created == 1 and stack.create_count() == 17


def test_schema_errors_on_one_user_are_that_users_and_a_missing_endpoint_stops_at_once(
        stack: StackAuthSandbox, client: StackAuthClient, datadir: DataDir) -> None:
    with pytest.raises(Rejected) as refused:
        client.create_user({"display_name": "x" * 257})
    assert refused.value.code == "SCHEMA_ERROR" and "display_name must be at most 256" in refused.value.message
    with StackAuthClient(stack.url + "/v0", PROJECT, SECRET, retry=FAST) as wrong, \
            pytest.raises(StackAuthError) as caught:
        migrate_users(wrong, datadir)
    assert str(caught.value).startswith("Stack Auth has no GET /v0/api/v1/users (404): 404 — this page does not")
    assert caught.value.fix == "check STACK_AUTH_API_URL points at Stack Auth's API (without /api/v1)"
    assert stack.create_count() == 0


def test_display_names_are_cut_at_256_utf16_units_between_characters(tmp_path: Path) -> None:
    assert cut_utf16("a" * 300, 256) == "a" * 256
    assert cut_utf16("A" + "\U0001F9CA" * 200, 256) == "A" + "\U0001F9CA" * 127  # 255 units: no half emoji
    assert cut_utf16("\U0001F9CA" * 200, 256) == "\U0001F9CA" * 128
    assert cut_utf16("Zoë", 256) == "Zoë"
    users, identities = edge_users()
    users[0]["raw_user_meta_data"] = {"full_name": "B" + "\U0001F600" * 200}
    plan = {p.user.id: p for p in plan_users(load_auth_export(write_export(tmp_path, users, identities)), set())}
    alice = plan[uid("alice")]
    assert alice.body["display_name"] == "B" + "\U0001F600" * 127
    assert alice.body["server_metadata"]["supabase_display_name"] == "B" + "\U0001F600" * 200
    assert ("name longer than 256 UTF-16 units: display_name cut, the whole name kept in "
            "server_metadata.supabase_display_name") in alice.notes


@pytest.mark.parametrize(("meta", "name"), [
    ({"display_name": "Ada L.", "full_name": "Ada Lovelace"}, "Ada L."),  # the dashboard's name first
    ({"full_name": "  Ada Lovelace ", "name": "ada"}, "Ada Lovelace"),
    ({"name": "Ada"}, "Ada"),
    ({"first_name": "Ada", "last_name": "Lovelace"}, "Ada Lovelace"),
    ({"first_name": "Ada", "display_name": " "}, "Ada"),
    ({"user_name": "ada99", "plan": "pro"}, None),  # a handle is no name
])
def test_the_display_name_is_taken_where_supabase_and_sign_up_forms_keep_it(tmp_path: Path, meta: dict[str, str],
                                                                            name: str | None) -> None:
    # Only full_name and name were read: a name set in the Supabase dashboard (display_name), or by a sign-up
    # form as first and last name, left the Stack Auth user nameless.
    users, identities = edge_users()
    users[0]["raw_user_meta_data"] = meta
    plan = {p.user.id: p for p in plan_users(load_auth_export(write_export(tmp_path, users, identities)), set())}
    assert plan[uid("alice")].body.get("display_name") == name


def test_a_pending_change_of_e_mail_is_noted_not_carried(tmp_path: Path) -> None:
    # Supabase Auth keeps the new address in email_change until the user follows the link: that user signs in
    # with the old one, and the change, which Stack Auth cannot hold pending, was dropped without a word.
    users, identities = edge_users()
    users[0]["email_change"] = "alice.new@example.com"
    users[1]["email_change"] = ""  # Supabase Auth's value when no change is pending
    plan = {p.user.id: p for p in plan_users(load_auth_export(write_export(tmp_path, users, identities)), set())}
    alice = plan[uid("alice")]
    assert alice.body["primary_email"] == users[0]["email"].lower()
    assert ("a change of e-mail was pending in Supabase (auth.users.email_change, its link not yet followed): not "
            "carried, the user keeps the current address and asks for the change again") in alice.notes
    assert [p.user.id for p in plan.values() if any("change of e-mail" in n for n in p.notes)] == [uid("alice")]
    assert "alice.new@example.com" not in str(alice.body)


def test_totp_secrets_are_base32_decoded_then_base64_encoded() -> None:
    assert totp_base64("JBSWY3DPEHPK3PXP") == ("SGVsbG8h3q2+7w==", None)  # b"Hello!\xde\xad\xbe\xef"
    assert totp_base64("jbswy3dpehpk3pxp ") == ("SGVsbG8h3q2+7w==", None)
    assert totp_base64('{"key_id":"k","alg":"aes-gcm-hkdf","nonce":"bg==","data":"ZA=="}') == (None, (
        "TOTP secret stored encrypted by Supabase Auth (a JSON envelope, not the base32 text): supamove cannot "
        "read it"))
    assert totp_base64("not base32!") == (None, "TOTP secret is not base32 text")


def test_a_totp_secret_stack_auth_keeps_failing_fails_that_user_and_the_rerun_sets_it(stack: StackAuthSandbox, tmp_path: Path) -> None:
    datadir = two_users(tmp_path, [factor("alice", "totp"), factor("judy", "totp", "unverified")])
    stack.fail_next(3, 500, match="PATCH /api/v1/users/*")  # the first user's secret: a 500 that persists
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as c:
        first = outcomes(migrate_users(c, datadir, MigrateOptions(concurrency=1)))  # the others go on
        assert {u["requires_totp_mfa"] for u in stack.users.values()} == {False}  # created, MFA not yet on
        assert (first[uid("alice")].status, first[uid("alice")].reason, first[uid("alice")].mfa) == (
            "failed", "created, but Stack Auth refused its TOTP secret: Internal Server Error", None)
        assert not any("TOTP factor carried" in note for note in first[uid("alice")].notes)
        assert first[uid("judy")].status == "migrated"
        result = migrate_users(c, datadir)
    assert stack.create_count() == 2 and not result.failed
    got = outcomes(result)
    assert got[uid("alice")].mfa == "totp" and got[uid("judy")].mfa is None and result.totp_carried == 1
    assert got[uid("alice")].changed == ["totp_secret_base64"]  # set now, by the rerun
    alice = stack.stored(UserMapping.load(datadir.user_mapping).get(uid("alice")))
    assert alice["requires_totp_mfa"] is True and alice["totp_secret"] == b"Hello!\xde\xad\xbe\xef"
    judy = stack.stored(UserMapping.load(datadir.user_mapping).get(uid("judy")))
    assert judy["requires_totp_mfa"] is False and judy["totp_secret"] is None  # unverified: ignored
    assert orjson.loads(datadir.mfa_not_carried.read_bytes())["users"] == []
    patches = stack.requests["PATCH /api/v1/users/{id} 200"]
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as c:
        assert migrate_users(c, datadir).totp_carried == 1
    assert stack.requests["PATCH /api/v1/users/{id} 200"] == patches  # recorded: not set again


# --- password-reset e-mails ---------------------------------------------------------------------


def test_an_untrusted_reset_link_stops_before_any_e_mail(stack: StackAuthSandbox, client: StackAuthClient,
                                                       datadir: DataDir) -> None:
    migrate_users(client, datadir)
    with pytest.raises(StackAuthError) as caught:
        send_password_resets(client, datadir, "https://evil.example.net/reset")
    assert str(caught.value) == (
        "Stack Auth refuses the reset link https://evil.example.net/reset: Redirect URL not whitelisted. Did you "
        "forget to add this domain to the trusted domains list on the Stack Auth dashboard? (fix: add "
        "https://evil.example.net to the project's trusted domains (Stack Auth dashboard > Domains), then run the "
        "same command again)")
    assert stack.reset_emails == []
    assert stack.requests["POST /api/v1/auth/password/send-reset-code 400"] == 1  # one try, then stopped
    with pytest.raises(SupamoveError, match="must be an http"):
        send_password_resets(client, datadir, "app.example.com/reset")


def test_a_reset_whose_answer_was_lost_is_not_sent_again_unless_asked(stack: StackAuthSandbox, client: StackAuthClient,
                                                                      datadir: DataDir) -> None:
    migrate_users(client, datadir)
    stack.fail_next(1, 502, match="POST /api/v1/auth/password/send-reset-code")  # the first: the answer is lost
    first = send_password_resets(client, datadir, "https://app.example.com/reset")
    assert first.uncertain == [uid("bob")] and len(first.sent) == 4
    assert str(first.failure()) == (
        "1 reset e-mail may or may not have been sent (Stack Auth's answer was lost) (fix: ask those users "
        "whether it arrived (password-resets-sent.json lists them with status \"uncertain\"); "
        "`--resend-uncertain` sends them another)")
    sent = {e["supabaseUserId"]: e["status"] for e in orjson.loads(datadir.password_resets_sent.read_bytes())["sent"]}
    assert sent[uid("bob")] == "uncertain" and sorted(sent.values()).count("sent") == 4
    second = send_password_resets(client, datadir, "https://app.example.com/reset")
    assert second.sent == [] and second.uncertain_before == 1 and second.failure() is None
    assert send_password_resets(client, datadir, None, dry_run=True).to_send == []
    assert len(send_password_resets(client, datadir, None, dry_run=True, resend_uncertain=True).to_send) == 1
    third = send_password_resets(client, datadir, "https://app.example.com/reset", resend_uncertain=True)
    assert third.sent == [uid("bob")] and third.failure() is None
    assert [e.email for e in stack.reset_emails].count("bob@example.com") == 1


def test_a_journal_done_line_without_its_stack_auth_id_leaves_the_write_in_doubt(tmp_path: Path) -> None:
    # It was an unexpected KeyError; a done line that names no Stack Auth user proves nothing: the create is
    # looked up in Stack Auth (the e-mail counted as uncertain), as after a crash.
    journal = PendingJournal(tmp_path / "pending.jsonl")
    journal.path.write_bytes(b'{"op": "intent", "supabaseUserId": "a", "email": "a@example.com"}\n'
                             b'{"op": "done", "supabaseUserId": "a"}\n')
    assert journal.load() == ({"a": "a@example.com"}, {})


# --- the HTTP transport: kept-alive connections, TLS -----------------------------------------------------------


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A local HTTP server answering with `handler`, on its own thread: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_proxy_named_by_the_environment_carries_the_requests(stack: StackAuthSandbox,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine that reaches Stack Auth only through HTTP_PROXY / HTTPS_PROXY: the client's own transport took
    the requests past the proxy. Without such a setting, none goes to it."""
    import http.client

    seen: list[str] = []

    class Forward(BaseHTTPRequestHandler):
        def forward(self) -> None:
            seen.append(f"{self.command} {self.path}")  # a proxy is sent the whole URL
            url = httpx.URL(self.path)
            upstream = http.client.HTTPConnection(url.host, url.port)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            upstream.request(self.command, url.raw_path.decode(), body=body or None, headers=dict(self.headers))
            answer = upstream.getresponse()
            content = answer.read()
            self.send_response(answer.status)
            self.send_header("content-type", answer.getheader("content-type") or "application/json")
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
            upstream.close()

        do_GET = do_POST = do_PATCH = forward

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Forward) as proxy:
        with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as client:
            assert list(client.iter_users()) == [] and seen == []
        monkeypatch.setenv("HTTP_PROXY", proxy)
        with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as client:
            created = client.create_user({"primary_email": "proxied@example.com", "primary_email_auth_enabled": True})
            assert client.get_user(created.user["id"])["primary_email"] == "proxied@example.com"
    assert seen == [f"POST {stack.url}/api/v1/users", f"GET {stack.url}/api/v1/users/{created.user['id']}"]


def test_a_connection_stack_auth_closed_while_idle_is_not_sent_a_request(datadir: DataDir) -> None:
    """A server closes a kept-alive connection after it sat idle (Node's keepAliveTimeout: 5 s). A request sent
    into it is lost: a retry with a warning, and for a create a lookup first. It goes on a new connection."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []
    closed = threading.Event()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            with conn:
                while b"\r\n\r\n" not in (request := conn.recv(65536)):
                    pass
                body = orjson.dumps({"id": request.split(b" ")[1].rsplit(b"/", 1)[1].decode()})
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)  # keep-alive, then closed anyway
            closed.set()

    threading.Thread(target=serve, daemon=True).start()
    with StackAuthClient(f"http://127.0.0.1:{listener.getsockname()[1]}", PROJECT, SECRET, retry=FAST) as client:
        assert client.get_user("first") == {"id": "first"}
        assert closed.wait(5)
        assert client.get_user("second") == {"id": "second"}
        assert client.retries == 0 and len(accepted) == 2
    listener.close()


def test_requests_keep_the_api_urls_own_path_and_encode_their_query() -> None:
    """A Stack Auth served under a path of its own (behind a reverse proxy): every request keeps that path, and a
    query value with characters of its own (an e-mail's `+`, a space) arrives as it was."""
    from urllib.parse import parse_qs, urlsplit

    seen: list[str] = []

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = b'{"items": [], "pagination": {}}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Answer) as url, StackAuthClient(f"{url}/stack/", PROJECT, SECRET, retry=FAST) as client:
        assert client.find_by_email("a+b c@example.com") == []
    [path] = seen
    assert urlsplit(path).path == "/stack/api/v1/users"
    assert parse_qs(urlsplit(path).query) == {"limit": ["200"], "include_anonymous": ["true"],
                                              "query": ["a+b c@example.com"]}


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_an_answer_a_proxy_compressed_anyway_is_read(coding: str) -> None:
    """supamove asks for answers uncompressed; a proxy in front of Stack Auth that compresses them regardless
    (as httpx, which decoded them, allowed) is read all the same, not refused as no JSON."""
    import gzip
    import zlib

    class Compressing(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            plain = orjson.dumps({"id": self.path.rsplit("/", 1)[1], "display_name": "Zoë"})
            body = gzip.compress(plain) if coding == "gzip" else zlib.compress(plain)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-encoding", coding)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Compressing) as url, StackAuthClient(url, PROJECT, SECRET, retry=FAST) as client:
        assert client.get_user("u1") == {"id": "u1", "display_name": "Zoë"}
        assert client.get_user("u2") == {"id": "u2", "display_name": "Zoë"}  # on the same connection


def test_the_transport_sends_a_requests_head_and_body_at_once() -> None:
    """One send() of head and body: one TCP segment, where http.client sends two (and twice the system calls)."""
    from supamove.users.transport import _Connection

    sent: list[bytes] = []

    class Socket:
        def sendall(self, data: bytes) -> None:
            sent.append(bytes(data))

    for method, body in (("POST", b'{"a":1}'), ("GET", None)):
        conn = _Connection("127.0.0.1", 80)
        conn.sock = Socket()  # type: ignore[assignment]
        conn.request(method, "/api/v1/users", body=body, headers={"content-type": "application/json"} if body else {})
    assert sent == [b"POST /api/v1/users HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: identity\r\n"
                    b"Content-Length: 7\r\ncontent-type: application/json\r\n\r\n{\"a\":1}",
                    b"GET /api/v1/users HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: identity\r\n\r\n"]


def test_a_stack_auth_behind_tls_is_refused_until_its_ca_is_trusted(tmp_path: Path, datadir: DataDir,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A self-hosted Stack Auth with a certificate of its own CA: named, then usable with SSL_CERT_FILE."""
    import ssl

    from conftest import self_signed_certificate

    cert, key = self_signed_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with StackAuthSandbox(PROJECT, SECRET, tls=context) as stack:
        with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as client, \
                pytest.raises(StackAuthError) as refused:
            migrate_users(client, datadir)
        assert f"cannot connect to Stack Auth at {stack.url}: [SSL: CERTIFICATE_VERIFY_FAILED]" in str(refused.value)
        assert stack.create_count() == 0
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as client:
            result = migrate_users(client, datadir)
        assert result.created == stack.create_count() > 10 and result.failure() is None
