"""migrate-users after a real `supamove export` of a Supabase-shaped database (conftest's fixtures)."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from conftest import error_line

from supamove.errors import StackAuthError
from supamove.sandbox import fixtures
from supamove.sandbox.stackauth import StackAuthSandbox

PROJECT = str(uuid.uuid4())
SECRET = "ssk_export_test_secret_24680"


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[StackAuthSandbox]:
    with StackAuthSandbox(PROJECT, SECRET) as sandbox:
        monkeypatch.setenv("STACK_AUTH_API_URL", sandbox.url)
        monkeypatch.setenv("STACK_AUTH_PROJECT_ID", PROJECT)
        monkeypatch.setenv("STACK_AUTH_SECRET_KEY", SECRET)
        yield sandbox


def exported_ids(data_dir: Path) -> set[str]:
    lines = (data_dir / "auth" / "auth.users.jsonl").read_bytes().splitlines()
    return {orjson.loads(line)["id"] for line in lines if line.strip()}


def test_every_exported_user_ends_in_the_report_and_keeps_their_password(cli, exported: Path,
                                                                          stack: StackAuthSandbox) -> None:
    result = cli("migrate-users")
    assert result.exit_code == 0, result.output
    report = orjson.loads((exported / "user-migration-report.json").read_bytes())
    assert {u["supabaseUserId"] for u in report["users"]} == exported_ids(exported)
    assert all(u["status"] in ("migrated", "linked", "skipped") for u in report["users"])
    assert all(u["reason"] for u in report["users"] if u["status"] == "skipped")
    kept = {u["email"] for u in report["users"] if u["password"] == "kept"}
    known = fixtures.KNOWN_PASSWORDS
    checked = 0
    for email, password in dict(known).items():
        if email.strip().lower() in kept:
            assert stack.check_password(email, password), email
            checked += 1
    assert checked >= 5, checked  # the seeded bcrypt users, $2a$10$ and pgcrypto's $2a$06$

    creates = stack.create_count()
    again = cli("migrate-users")
    assert again.exit_code == 0, again.output
    assert stack.create_count() == creates


def test_an_auth_file_changed_after_the_export_is_refused_before_anything_is_sent(cli, exported: Path,
                                                                                  stack: StackAuthSandbox) -> None:
    users = exported / "auth" / "auth.users.jsonl"
    text = users.read_bytes()
    assert b"alice@freshtrack.test" in text
    users.write_bytes(text.replace(b"alice@freshtrack.test", b"alice@freshtrock.test", 1))  # the same size
    for command in (("migrate-users",), ("migrate-users", "--dry-run"), ("map-users",)):
        result = cli(*command)
        assert result.exit_code == 5, (command, result.output)
        assert f"Error: {users} does not match metadata.json: SHA-256 " in result.stderr, result.stderr
        assert "supamove export --force --tables auth.users" in result.stderr
    assert stack.create_count() == 0
    users.write_bytes(text[:-100])  # cut short: its size tells
    result = cli("migrate-users")
    assert result.exit_code == 5, result.output
    assert f"Error: {users} is {len(text) - 100:,} bytes, metadata.json records {len(text):,}: the file was cut " \
           "short or changed (table auth.users)" in result.stderr
    users.write_bytes(text)
    assert cli("migrate-users").exit_code == 0 and stack.create_count() > 0


@pytest.mark.parametrize(("table", "change", "problem"), [
    ("users", {"is_anonymous": "false"}, 'is_anonymous is "false", not true or false'),
    ("users", {"id": None}, "id is null, not a uuid"),
    ("users", {"email": 5}, "email is 5, not text"),
    ("users", {"created_at": "garbage"}, 'created_at is "garbage", not a timestamp'),
    ("identities", {"provider": ["github"]}, 'provider is ["github"], not text'),
    ("identities", {"last_sign_in_at": "yesterday"}, 'last_sign_in_at is "yesterday", not a timestamp'),
    # a row of no user was dropped without a word: that user's sign-in account, or second factor, lost
    ("identities", {"user_id": "00000000-0000-4000-8000-000000000000"},
     "user_id 00000000-0000-4000-8000-000000000000 is no user of auth.users.jsonl"),
    ("mfa_factors", {"user_id": None}, "user_id is null, not a uuid"),
    ("mfa_factors", {"status": True}, "status is true, not text"),
])
def test_an_auth_row_whose_values_the_export_never_writes_is_named_by_line(cli, exported: Path, stack: StackAuthSandbox,
                                                                           table: str, change: dict,
                                                                           problem: str) -> None:
    path = exported / "auth" / f"auth.{table}.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = orjson.dumps({**orjson.loads(lines[2]), **change}) + b"\n"
    body = b"".join(lines)
    path.write_bytes(body)
    meta = orjson.loads((exported / "metadata.json").read_bytes())  # edited with it: the digest passes
    entry = next(e for e in meta["auth"] if e["name"] == table)
    entry.update(bytes=len(body), sha256=hashlib.sha256(body).hexdigest())
    (exported / "metadata.json").write_bytes(orjson.dumps(meta))
    for command in (["migrate-users", "--dry-run"], ["map-users", "--dry-run"]):
        result = cli(*command)
        assert result.exit_code == 5, result.output
        assert error_line(result.output).startswith(f"Error: {path} line 3: {problem} (fix: restore the file or run "
                                                    f"`supamove export --force --tables auth.{table}`"), result.output
    assert stack.create_count() == 0


def test_map_users_after_a_real_migration_gives_the_same_mapping(cli, exported: Path, stack: StackAuthSandbox) -> None:
    assert cli("migrate-users").exit_code == 0
    mapping_file = exported / "user-mapping.json"
    before = {m["supabaseUserId"]: m["stackAuthUserId"] for m in orjson.loads(mapping_file.read_bytes())["mappings"]}
    mapping_file.unlink()
    result = cli("map-users")
    assert result.exit_code == 0, result.output
    after = {m["supabaseUserId"]: m["stackAuthUserId"] for m in orjson.loads(mapping_file.read_bytes())["mappings"]}
    assert after == before



def report_of(exported: Path) -> dict[str, dict]:
    return {u["supabaseUserId"]: u for u in orjson.loads((exported / "user-migration-report.json").read_bytes())["users"]}


def stack_user(stack: StackAuthSandbox, exported: Path, key: str) -> dict:
    mapping = {m["supabaseUserId"]: m["stackAuthUserId"]
               for m in orjson.loads((exported / "user-mapping.json").read_bytes())["mappings"]}
    return stack.stored(mapping[fixtures.user_uuid(key)])


def test_odd_users_are_carried_or_failed_one_by_one(cli, exported: Path, stack: StackAuthSandbox) -> None:
    """Long names, one provider spelled twice, azure object ids, second factors, a provider account taken."""
    taken = fixtures.oauth_account_id("taken", "github")
    other = stack.create_user({"primary_email": "tad@elsewhere.test", "primary_email_auth_enabled": True,
                               "oauth_providers": [{"id": "github", "account_id": taken, "email": None}]})["id"]
    dry = cli("migrate-users", "--dry-run")
    assert dry.exit_code == StackAuthError.exit_code, dry.output  # it foretells the failure below
    assert ("Second factors: 2 TOTP factors will be carried; 2 users have a factor that cannot be carried."
            in " ".join(dry.output.split()))
    planned = {u["supabaseUserId"]: u for u in orjson.loads(cli("migrate-users", "--dry-run", "--json").stdout)["users"]}
    assert [sid for sid, u in planned.items() if u["status"] == "failed"] == [fixtures.user_uuid("taken")]
    assert (planned[fixtures.user_uuid("taken")]["reason"], planned[fixtures.user_uuid("taken")]["fix"]) == (
        f"its github account {taken} already signs in Stack Auth user {other}",
        f"remove that github account from Stack Auth user {other} (or delete that user if it is a leftover), "
        "then run the same command again")
    result = cli("migrate-users")
    assert result.exit_code == StackAuthError.exit_code, result.output
    assert "Error: 1 user failed (see " in result.output
    report = report_of(exported)
    failed = {sid: u for sid, u in report.items() if u["status"] == "failed"}
    assert list(failed) == [fixtures.user_uuid("taken")]
    assert failed[fixtures.user_uuid("taken")]["reason"] == (
        f"Stack Auth answered 500: its github account {taken} already signs in Stack Auth user {other}")
    assert failed[fixtures.user_uuid("taken")]["fix"] == (
        f"remove that github account from Stack Auth user {other} (or delete that user if it is a leftover), "
        "then run the same command again")

    longname, emoji = stack_user(stack, exported, "longname"), stack_user(stack, exported, "emoji")
    assert longname["display_name"] == fixtures.LONG_NAME[:256]
    assert longname["server_metadata"]["supabase_display_name"] == fixtures.LONG_NAME
    assert emoji["display_name"] == "A" + "\U0001F9CA" * 127  # 255 UTF-16 units: the 128th emoji would split
    assert emoji["server_metadata"]["supabase_display_name"] == fixtures.EMOJI_NAME

    linda, xena = stack_user(stack, exported, "linda"), stack_user(stack, exported, "xena")
    kept, dropped = (fixtures.oauth_account_id("linda", p) for p in ("linkedin_oidc", "linkedin"))
    assert [(p["id"], p["account_id"]) for p in linda["oauth_providers"]] == [("linkedin", kept)]
    assert report[fixtures.user_uuid("linda")]["notes"] == [
        f"linkedin identity (account {dropped}) not carried over: Stack Auth keeps one linkedin account per user; "
        f"kept the linkedin_oidc identity (account {kept}), signed in last"]
    assert [(p["id"], p["account_id"]) for p in xena["oauth_providers"]] == [
        ("x", fixtures.oauth_account_id("xena", "x"))]

    ada, old = stack_user(stack, exported, "ada"), stack_user(stack, exported, "azure_no_oid")
    assert [(p["id"], p["account_id"]) for p in ada["oauth_providers"]] == [
        ("microsoft", fixtures.azure_object_id("ada"))]
    assert old["oauth_providers"] == [] and old["password_hash"]  # still signs in with the password
    assert report[fixtures.user_uuid("azure_no_oid")]["notes"] == [
        "azure identity not carried over: its identity_data has no custom_claims.oid (the Microsoft object id "
        "Stack Auth signs in with)"]

    for key in ("alice", "tina"):
        user = stack_user(stack, exported, key)
        secret = base64.b32decode(fixtures.TOTP_SECRETS[key] + "=" * (-len(fixtures.TOTP_SECRETS[key]) % 8))
        assert user["requires_totp_mfa"] is True and user["totp_secret"] == secret, key
        assert report[user["server_metadata"]["supabase_user_id"]]["mfa"] == "totp"
    for key in ("una", "pete", "enzo"):
        user = stack_user(stack, exported, key)
        assert user["requires_totp_mfa"] is False and user["totp_secret"] is None, key
    path = exported / "mfa-not-carried.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    listed = {u["supabaseUserId"]: [(f["type"], f["reason"]) for f in u["factors"]]
              for u in orjson.loads(path.read_bytes())["users"]}
    assert listed == {
        fixtures.user_uuid("pete"): [
            ("webauthn", "WebAuthn second factor: its credential cannot be moved; the user registers a passkey anew"),
            ("phone", "phone (SMS) second factor: Stack Auth has no SMS second factor")],
        fixtures.user_uuid("enzo"): [
            ("totp", "TOTP secret stored encrypted by Supabase Auth (a JSON envelope, not the base32 text): "
                     "supamove cannot read it")]}

    stack.delete_user(other)  # the operator removes the leftover account
    creates = stack.create_count()
    again = cli("migrate-users")
    assert again.exit_code == 0, again.output
    assert stack.create_count() == creates + 1  # only the failed user
    assert report_of(exported)[fixtures.user_uuid("taken")]["status"] == "migrated"
    assert [(p["id"], p["account_id"]) for p in stack_user(stack, exported, "taken")["oauth_providers"]] == [
        ("github", taken)]
    dry = cli("migrate-users", "--dry-run")  # after the real runs: nothing left to carry
    assert dry.exit_code == 0, dry.output
    assert ("Second factors: 0 TOTP factors will be carried (2 more set by an earlier run); 2 users have a factor "
            "that cannot be carried." in " ".join(dry.output.split()))
