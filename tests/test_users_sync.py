"""A rerun of migrate-users brings every change across, sends nothing for unchanged users, never
overwrites a user changed in Stack Auth unless asked, and never updates a user twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
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

from supamove.errors import StackAuthError
from supamove.paths import DataDir
from supamove.sandbox.stackauth import SandboxConfig, StackAuthSandbox
from supamove.usermap import UserMapping
from supamove.users.client import StackAuthClient
from supamove.users.migrate import MigrateOptions, MigrationResult, migrate_users

PROJECT = str(uuid.uuid4())
SECRET = "ssk_users_sync_test_secret_13579"
PATCHES = "PATCH /api/v1/users/{id} 200"
ADDS = "POST /api/v1/oauth-providers 201"
NEW_PASSWORD = "alice-changed-after-a-leak"


@pytest.fixture
def stack() -> Any:
    with StackAuthSandbox(PROJECT, SECRET, config=TRUSTED) as sandbox:
        yield sandbox


def run(stack: StackAuthSandbox, datadir: DataDir, **options: Any) -> MigrationResult:
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as client:
        return migrate_users(client, datadir, MigrateOptions(**options))


def first_export() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    users = [auth_user("alice", 0), auth_user("bob", 1, email_confirmed_at=None, confirmed_at=None),
             auth_user("dave", 3, raw_user_meta_data={"name": "Dave"}), auth_user("erin", 4),
             auth_user("grace", 6), auth_user("mallory", 10), auth_user("oscar", 11, banned_until="2999-01-01 00:00:00+00"),
             auth_user("tina", 12), auth_user("trent", 13), auth_user("uma", 14), auth_user("xavier", 15),
             auth_user("zed", 16)]
    identities = [identity(users[3], "google", "g-erin-123", "erin@gmail.com")]
    return users, identities, [factor("uma", "totp")]


def changed_export(users: list[dict[str, Any]], identities: list[dict[str, Any]]) -> tuple[list, list, list]:
    """One change of every kind since the first run."""
    by = {u["email"].split("@")[0]: u for u in users}
    by["alice"]["encrypted_password"] = bcrypt.hashpw(NEW_PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    by["bob"]["email_confirmed_at"] = ts(20)
    by["dave"]["raw_user_meta_data"] = {"name": "David"}
    by["grace"]["deleted_at"] = ts(50)
    by["mallory"]["banned_until"] = "2999-01-01 00:00:00+00"
    by["oscar"]["banned_until"] = None
    by["xavier"]["email"] = "xavier@new.example.com"
    identities = identities + [identity(by["erin"], "github", "gh-erin-5", "erin@users.noreply.github.com")]
    return [u for u in users if u is not by["zed"]], identities, [factor("tina", "totp")]


EXPECTED = {  # bob confirmed his address: his password comes along with it
    "alice": ["password_hash"], "bob": ["primary_email_verified", "password_hash"], "dave": ["display_name", "server_metadata"],
    "grace": ["primary_email_auth_enabled", "password_hash", "restricted_by_admin", "server_metadata"],
    "mallory": ["restricted_by_admin", "server_metadata"], "oscar": ["restricted_by_admin", "server_metadata"],
    "tina": ["totp_secret_base64"], "uma": ["totp_secret_base64"],
    "xavier": ["primary_email"],
}


def stack_user(stack: StackAuthSandbox, datadir: DataDir, name: str) -> dict[str, Any]:
    return stack.users[UserMapping.load(datadir.user_mapping).get(uid(name))]  # type: ignore[index]


def test_every_kind_of_change_is_carried_and_only_changed_users_are_sent(stack: StackAuthSandbox,
                                                                         tmp_path: Path) -> None:
    users, identities, factors = first_export()
    datadir = write_export(tmp_path / "d", users, identities, factors)
    first = run(stack, datadir)
    assert not first.failed and first.created == 12 and first.updated == 0
    assert stack_user(stack, datadir, "uma")["requires_totp_mfa"] is True
    write_export(datadir.root, *changed_export(users, identities))
    before = dict(stack.requests)
    result = run(stack, datadir)
    assert result.failure() is None
    got = {o.supabase_user_id: o for o in result.outcomes}
    changed = {name: got[uid(name)].changed for name in EXPECTED}
    assert changed == EXPECTED
    assert got[uid("erin")].sync == "updated" and got[uid("erin")].changed == ["oauth_providers"]
    assert "github identity (account gh-erin-5) added in Stack Auth" in got[uid("erin")].notes
    assert got[uid("trent")].sync == "unchanged" and got[uid("trent")].changed == []
    zed = got[uid("zed")]
    assert (zed.sync, zed.reason, zed.changed) == ("updated", "deleted", [
        "restricted_by_admin", "server_metadata", "primary_email_auth_enabled"])
    # Each updated user: one read, one PATCH (erin: a read, her new identity, a read; xavier: his old address's
    # contact channel listed and deleted); the unchanged ones: nothing.
    sent = {k: v - before.get(k, 0) for k, v in stack.requests.items() if v != before.get(k, 0)}
    assert sent == {"GET /api/v1/users 200": 1, "GET /api/v1/users/{id} 200": 12, PATCHES: 10, ADDS: 1,
                    "GET /api/v1/contact-channels 200": 1, DELETES: 1}
    summary = orjson.loads(datadir.users_report.read_bytes())["summary"]
    assert (summary["updated"], summary["unchanged"], summary["conflicts"]) == (11, 1, 0)
    assert stack.check_password("alice@example.com", NEW_PASSWORD)
    assert not stack.check_password("alice@example.com", PASSWORDS["alice"])
    assert stack_user(stack, datadir, "bob")["primary_email_verified"] is True
    assert stack.check_password("bob@example.com", PASSWORDS["bob"])  # confirmed in Supabase: his password now
    assert stack_user(stack, datadir, "dave")["display_name"] == "David"
    grace = stack_user(stack, datadir, "grace")
    assert grace["restricted_by_admin"] is True and grace["restricted_by_admin_reason"] == "deleted in Supabase on 2024-02-20"
    assert grace["primary_email_auth_enabled"] is False and grace["has_password"] is False
    assert stack_user(stack, datadir, "mallory")["restricted_by_admin_reason"] == "Your account is suspended."
    oscar = stack_user(stack, datadir, "oscar")
    assert oscar["restricted_by_admin"] is False and oscar["restricted_by_admin_reason"] is None
    assert stack_user(stack, datadir, "tina")["requires_totp_mfa"] is True
    assert stack_user(stack, datadir, "uma")["requires_totp_mfa"] is False
    xavier = stack_user(stack, datadir, "xavier")
    assert xavier["primary_email"] == "xavier@new.example.com" and xavier["primary_email_auth_enabled"] is True
    zed_user = stack_user(stack, datadir, "zed")
    assert zed_user["restricted_by_admin"] is True and zed_user["has_password"] is False
    assert zed_user["restricted_by_admin_reason"] == "deleted in Supabase"
    assert stack.stored(xavier["id"])["password_hash"] == HASHES["xavier"]  # only the e-mail was sent
    state = datadir.user_sync_state.read_text()
    assert HASHES["xavier"] not in state and NEW_PASSWORD not in state
    # And then nothing is left to send.
    before = dict(stack.requests)
    again = run(stack, datadir)
    assert again.updated == 0 and len(again.synced("unchanged")) == 12
    assert {k: v - before.get(k, 0) for k, v in stack.requests.items() if v != before.get(k, 0)} == {
        "GET /api/v1/users 200": 1}
    assert sorted((p["id"], p["account_id"]) for p in stack_user(stack, datadir, "erin")["oauth_providers"]) == [
        ("github", "gh-erin-5"), ("google", "g-erin-123")]


def test_an_unchanged_rerun_sends_no_request_and_the_dry_run_shows_the_changes(stack: StackAuthSandbox,
                                                                                tmp_path: Path) -> None:
    users, identities, factors = first_export()
    datadir = write_export(tmp_path / "d", users, identities, factors)
    run(stack, datadir)
    before = dict(stack.requests)
    unchanged = run(stack, datadir)
    assert {k: v - before[k] for k, v in stack.requests.items() if v != before.get(k)} == {
        "GET /api/v1/users 200": 1}  # the credentials check, nothing per user
    assert len(unchanged.synced("unchanged")) == 12 and unchanged.updated == 0
    write_export(datadir.root, *changed_export(users, identities))
    state = datadir.user_sync_state.read_bytes()
    dry = run(stack, datadir, dry_run=True)
    assert stack.requests[PATCHES] == before[PATCHES]  # nothing sent
    assert datadir.user_sync_state.read_bytes() == state
    got = {o.supabase_user_id: o for o in dry.outcomes}
    assert {name: got[uid(name)].changed for name in ("alice", "bob", "tina")} == {
        "alice": ["password_hash"], "bob": ["primary_email_verified", "password_hash"], "tina": ["totp_secret_base64"]}
    assert dry.updated == 11 and got[uid("zed")].sync == "update" and got[uid("erin")].sync == "update"
    assert len(dry.synced("unchanged")) == 1 and dry.failure() is None


def test_a_user_changed_in_stack_auth_is_a_conflict_until_overwrite_changed(stack: StackAuthSandbox,
                                                                            tmp_path: Path) -> None:
    users, identities, factors = first_export()
    datadir = write_export(tmp_path / "d", users, identities, factors)
    run(stack, datadir)
    users, identities, factors = changed_export(users, identities)
    write_export(datadir.root, users, identities, factors)
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as client:
        client.update_user(stack_user(stack, datadir, "alice")["id"], {"display_name": "Ali"})  # renamed there
        client.update_user(stack_user(stack, datadir, "dave")["id"], {"password": "set-in-stack-auth"})
    bob = stack_user(stack, datadir, "bob")["id"]
    stack.store.users[bob]["last_active_at_millis"] += 60_000  # he signed in there
    patches = stack.requests[PATCHES]
    result = run(stack, datadir)
    got = {o.supabase_user_id: o for o in result.outcomes}
    assert [o.supabase_user_id for o in result.conflicts] == [uid("alice"), uid("bob"), uid("dave")]
    assert {name: got[uid(name)].changed_in_stack_auth for name in ("alice", "bob", "dave")} == {
        "alice": ["display_name"], "bob": ["last_active_at_millis"], "dave": ["has_password"]}
    assert got[uid("bob")].changed == ["primary_email_verified", "password_hash"]
    assert "changed in Stack Auth since supamove wrote it (last_active_at_millis): not overwritten" in \
        got[uid("bob")].notes
    assert stack.requests[PATCHES] == patches + 7  # everyone else
    assert stack.check_password("alice@example.com", PASSWORDS["alice"])  # not overwritten
    assert stack_user(stack, datadir, "alice")["display_name"] == "Ali"
    failure = result.failure()
    assert isinstance(failure, StackAuthError) and str(failure) == (
        f"3 users changed in Stack Auth since supamove wrote them were not updated (see {datadir.users_report}) "
        "(fix: check them in the Stack Auth dashboard; `supamove migrate-users --overwrite-changed` writes the "
        "Supabase values over them)")
    again = run(stack, datadir)  # still a conflict: nothing was recorded for them
    assert [o.supabase_user_id for o in again.conflicts] == [uid("alice"), uid("bob"), uid("dave")]
    assert stack.requests[PATCHES] == patches + 7
    forced = run(stack, datadir, overwrite_changed=True)
    assert forced.failure() is None and forced.updated == 3
    assert stack.check_password("alice@example.com", NEW_PASSWORD)
    assert stack_user(stack, datadir, "alice")["display_name"] == "Ali"  # her name did not change in Supabase
    assert stack_user(stack, datadir, "bob")["primary_email_verified"] is True
    assert stack.check_password("bob@example.com", PASSWORDS["bob"])  # confirmed in Supabase: his password now
    dave = stack_user(stack, datadir, "dave")
    assert dave["display_name"] == "David" and dave["has_password"] is True  # only the changed fields are sent
    assert run(stack, datadir).failure() is None


def many(count: int) -> list[dict[str, Any]]:
    return [auth_user(f"user{n:03}", n, encrypted_password="") for n in range(count)]


def renamed(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**u, "raw_user_meta_data": {"full_name": f"Renamed {u['email']}"}} for u in users]


def test_a_lost_update_answer_is_checked_before_sending_again(stack: StackAuthSandbox, tmp_path: Path) -> None:
    users = many(3)
    datadir = write_export(tmp_path / "d", users, [])
    run(stack, datadir)
    write_export(datadir.root, renamed(users), [])
    stack.drop_next_updates(1)
    result = run(stack, datadir, concurrency=1)
    assert result.failure() is None and result.updated == 3
    assert sorted(stack.updates.values()) == [1, 1, 1]  # the dropped one was found applied, not sent again
    assert {u["display_name"] for u in stack.users.values()} == {f"Renamed {u['email']}" for u in users}


def killed_midway(stack: StackAuthSandbox, datadir: DataDir, tmp_path: Path, until: Callable[[], bool],
                  concurrency: int) -> str:
    """migrate-users in a process of its own, killed (-9) once `until()` holds; what it had sent still lands.
    Its output."""
    env = {**os.environ, "STACK_AUTH_API_URL": stack.url, "STACK_AUTH_PROJECT_ID": PROJECT,
           "STACK_AUTH_SECRET_KEY": SECRET, "MIGRATION_DATA_DIR": str(datadir.root),
           "LOG_FILE_PATH": str(tmp_path / "m.log")}
    process = subprocess.Popen([sys.executable, "-m", "supamove", "migrate-users", "--concurrency", str(concurrency)],
                               env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(600):
            if until() or process.poll() is not None:
                break
            time.sleep(0.02)
        process.kill()
        output = process.communicate(timeout=10)[0]
    finally:
        if process.poll() is None:
            process.kill()
    time.sleep(0.5)  # the requests already sent still land
    stack.clear_faults()
    return output


def test_a_killed_sync_resumes_with_no_user_updated_twice(stack: StackAuthSandbox, tmp_path: Path) -> None:
    users = many(40)
    datadir = write_export(tmp_path / "d", users, [])
    run(stack, datadir)
    write_export(datadir.root, renamed(users), [])
    # Slow updates: the kill lands while some are in flight (sent, applied later, never recorded).
    stack.delay_next(10_000, 0.2, match="PATCH /api/v1/users/*")
    output = killed_midway(stack, datadir, tmp_path, lambda: sum(stack.updates.values()) >= 8, concurrency=4)
    assert 0 < sum(stack.updates.values()) < 40, output
    assert datadir.pending_updates.exists()
    result = run(stack, datadir)
    assert result.failure() is None and result.updated + len(result.synced("unchanged")) == 40
    assert set(stack.updates.values()) == {1} and len(stack.updates) == 40  # every user updated exactly once
    assert any("updated by an interrupted run (found applied in Stack Auth, not sent again)" in o.notes
               for o in result.outcomes)
    assert not datadir.pending_updates.exists()
    assert {u["display_name"] for u in stack.users.values()} == {f"Renamed {u['email']}" for u in users}


def test_users_a_killed_run_created_keep_their_baseline_and_a_change_in_supabase_is_an_update(
        stack: StackAuthSandbox, tmp_path: Path) -> None:
    # Killed before it saved user-sync-state.json (or between the mapping's save and its own), a run left
    # its users mapped without the state of what it had sent: the next run called a change made in Supabase
    # meanwhile a conflict, said to be made in Stack Auth, and stopped with exit 6.
    users = many(40)
    datadir = write_export(tmp_path / "d", users, [])
    stack.delay_next(10_000, 0.1, match="POST /api/v1/users")
    killed_midway(stack, datadir, tmp_path, lambda: stack.create_count() >= 8, concurrency=2)
    assert 0 < stack.create_count() < 40 and not datadir.user_sync_state.exists()
    write_export(datadir.root, renamed(users), [])  # changed in Supabase since
    dry = run(stack, datadir, dry_run=True)  # it said "would create" for the creates in flight, found by the run
    assert sum(o.status == "create" for o in dry.outcomes) == 40 - len(stack.users) and dry.failure() is None
    result = run(stack, datadir)
    assert result.failure() is None and not result.conflicts, [o.notes for o in result.conflicts]
    assert stack.create_count() == 40 and len(stack.users) == 40  # none created twice
    assert {u["display_name"] for u in stack.users.values()} == {f"Renamed {u['email']}" for u in users}


def test_a_change_made_after_a_killed_sync_is_carried_where_its_update_was_found_applied(
        stack: StackAuthSandbox, tmp_path: Path) -> None:
    # An update the killed run had sent was found applied and taken as the whole sync: a change made in
    # Supabase after the kill was not sent (exit 0), and the dry run called those users conflicts (exit 6).
    users = many(40)
    datadir = write_export(tmp_path / "d", users, [])
    run(stack, datadir)
    write_export(datadir.root, renamed(users), [])
    stack.delay_next(10_000, 0.2, match="PATCH /api/v1/users/*")
    killed_midway(stack, datadir, tmp_path, lambda: sum(stack.updates.values()) >= 8, concurrency=4)
    assert datadir.pending_updates.exists()
    final = [{**u, "raw_user_meta_data": {"full_name": f"Final {u['email']}"}} for u in users]
    write_export(datadir.root, final, [])
    dry = run(stack, datadir, dry_run=True)
    assert dry.failure() is None and not dry.conflicts, [o.changed_in_stack_auth for o in dry.conflicts]
    result = run(stack, datadir)
    assert result.failure() is None and not result.conflicts
    assert {u["display_name"] for u in stack.users.values()} == {f"Final {u['email']}" for u in users}


def test_every_update_body_passes_stack_auths_schema(stack: StackAuthSandbox, tmp_path: Path) -> None:
    from conftest import RecordingTransport, validate

    users, identities, factors = first_export()
    datadir = write_export(tmp_path / "d", users, identities, factors)
    run(stack, datadir)
    write_export(datadir.root, *changed_export(users, identities))
    recorder = RecordingTransport()
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST, transport=recorder) as client:
        assert migrate_users(client, datadir).updated == 11
    bodies = [r.body for r in recorder.sent if r.method == "PATCH"]
    assert len(bodies) == 10
    adds = [r.body for r in recorder.sent if r.method == "POST" and r.path == "/api/v1/oauth-providers"]
    assert adds == [{"user_id": stack_user(stack, datadir, "erin")["id"], "provider_config_id": "github",
                     "account_id": "gh-erin-5", "allow_sign_in": True, "allow_connected_accounts": True,
                     "email": "erin@users.noreply.github.com"}]
    refused = {**adds[0], "type": "github"}
    verdicts = validate([{"schema": "oauth-providers.create", "body": body} for body in [*adds, refused]])
    assert verdicts[0] == {"ok": True}
    assert verdicts[1] == {"ok": False, "errors": ["body contains unknown properties: type"]}
    assert {"password": None}.items() <= next(b for b in bodies if "password" in b).items()  # a password removed
    assert any(b.get("totp_secret_base64", "") is None for b in bodies)  # TOTP turned off
    assert any(b.get("restricted_by_admin") is False for b in bodies)  # unbanned
    verdicts = validate([{"schema": "users.update", "body": body} for body in bodies])
    assert [(body, v["errors"]) for body, v in zip(bodies, verdicts, strict=True) if not v["ok"]] == []


def cli_on(stack: StackAuthSandbox, datadir: DataDir, monkeypatch: pytest.MonkeyPatch) -> Any:
    """supamove's command line, its settings naming this Stack Auth and data directory (the log beside it)."""
    for name, value in {"STACK_AUTH_API_URL": stack.url, "STACK_AUTH_PROJECT_ID": PROJECT,
                        "STACK_AUTH_SECRET_KEY": SECRET, "MIGRATION_DATA_DIR": str(datadir.root),
                        "LOG_FILE_PATH": str(datadir.root.parent / "m.log")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(datadir.root.parent)
    from supamove.cli import main

    return main


def test_the_cli_shows_updates_and_conflicts_and_exits_non_zero(stack: StackAuthSandbox, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    users = many(2)
    datadir = write_export(tmp_path / "d", users, [])
    main = cli_on(stack, datadir, monkeypatch)
    assert CliRunner().invoke(main, ["migrate-users"]).exit_code == 0
    write_export(datadir.root, renamed(users), [])
    first = UserMapping.load(datadir.user_mapping).get(uid("user000"))
    stack.store.users[first]["last_active_at_millis"] += 1  # signed in there
    dry = CliRunner().invoke(main, ["migrate-users", "--dry-run"])
    assert dry.exit_code == StackAuthError.exit_code
    assert "Users of earlier runs: 1 would be updated, 0 unchanged, 1 changed in Stack Auth (conflict)." in dry.output
    assert f"would be updated: {uid('user001')} user001@example.com: display_name, server_metadata" in dry.output
    result = CliRunner().invoke(main, ["migrate-users"])
    assert result.exit_code == StackAuthError.exit_code
    assert "Users of earlier runs: 1 updated, 0 unchanged, 1 changed in Stack Auth (conflict)." in result.output
    assert (f"conflict: {uid('user000')} user000@example.com: changed in Stack Auth (last_active_at_millis); "
            "in Supabase (display_name, server_metadata)") in result.output
    assert "1 user changed in Stack Auth since supamove wrote it was not updated" in result.output
    forced = CliRunner().invoke(main, ["migrate-users", "--overwrite-changed"])
    assert forced.exit_code == 0, forced.output
    assert "Users of earlier runs: 1 updated, 1 unchanged, 0 changed in Stack Auth (conflict)." in forced.output


def test_the_cli_counts_the_users_failing_for_one_reason_on_one_row(stack: StackAuthSandbox, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Each reason named the user's own Stack Auth id: 3 users deleted in Stack Auth were 3 rows of 1 user."""
    datadir = write_export(tmp_path / "d", many(4), [])
    main = cli_on(stack, datadir, monkeypatch)
    assert CliRunner().invoke(main, ["migrate-users"]).exit_code == 0
    mapping = UserMapping.load(datadir.user_mapping)
    deleted = [str(mapping.get(uid(f"user00{n}"))) for n in range(3)]
    for stack_id in deleted:
        stack.delete_user(stack_id)
    result = CliRunner().invoke(main, ["migrate-users"])
    assert result.exit_code == StackAuthError.exit_code
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.output.splitlines()
            if line.startswith("│")]
    assert ["failed", "Stack Auth user … no longer exists (deleted in Stack Auth)", "3"] in rows
    for stack_id in deleted:  # each user still named, with its own id, in the table of those not created
        assert sum(f"Stack Auth user {stack_id} no longer exists" in " ".join(row) for row in rows) == 1


def test_map_users_writes_over_a_mapping_none_of_whose_users_it_finds_only_when_told(
        stack: StackAuthSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pointed at another Stack Auth holding the same project, map-users replaced a full mapping by an empty one."""
    datadir = write_export(tmp_path / "d", many(2), [])
    main = cli_on(stack, datadir, monkeypatch)
    assert CliRunner().invoke(main, ["migrate-users"]).exit_code == 0
    kept = datadir.user_mapping.read_bytes()
    with StackAuthSandbox(PROJECT, SECRET) as staging:
        monkeypatch.setenv("STACK_AUTH_API_URL", staging.url)
        for command in (["map-users", "--dry-run"], ["map-users"]):
            refused = CliRunner().invoke(main, command)
            assert refused.exit_code == StackAuthError.exit_code, refused.output
            assert "a mapping rebuilt from it would name none of them" in " ".join(refused.output.split())
        assert datadir.user_mapping.read_bytes() == kept
        forgot = CliRunner().invoke(main, ["map-users", "--forget-missing"])
    assert forgot.exit_code == 0, forgot.output
    assert UserMapping.load(datadir.user_mapping).entries == {}


def test_an_update_stack_auth_refuses_fails_that_user_only(stack: StackAuthSandbox, tmp_path: Path) -> None:
    users = many(3)  # no password: each needs a reset
    factors = [factor("user001", "webauthn")]  # and user001 has a second factor Stack Auth cannot hold
    datadir = write_export(tmp_path / "d", users, [], factors)
    run(stack, datadir)
    mapping = UserMapping.load(datadir.user_mapping)
    stack.delete_user(mapping.get(uid("user000")))  # type: ignore[arg-type]
    taken = stack.create_user({"primary_email": "taken@example.com", "primary_email_auth_enabled": True})
    changed = renamed(users)
    changed[1]["email"] = "taken@example.com"
    write_export(datadir.root, changed, [], factors)
    result = run(stack, datadir)
    got = {o.supabase_user_id: o for o in result.outcomes}
    assert got[uid("user000")].status == "failed" and got[uid("user000")].reason == (
        f"Stack Auth user {mapping.get(uid('user000'))} no longer exists (deleted in Stack Auth)")
    refused = got[uid("user001")]
    assert (refused.status, refused.sync, refused.reason) == ("failed", "failed", (
        "Stack Auth refused the update of primary_email, display_name, server_metadata: the e-mail "
        f"taken@example.com is the sign-in of Stack Auth user {taken['id']}"))
    assert refused.fix == ("one e-mail signs one user in: change it in Supabase (then `supamove export "
                           "--auth-only`) or free it in Stack Auth, then run the same command again")
    # Still in Stack Auth as the first run left it: its id, its reset and its second factor stay listed.
    assert refused.stack_auth_user_id == mapping.get(uid("user001"))
    assert refused in result.reset_required and refused.password == "reset-required"
    assert [o.supabase_user_id for o in result.mfa_not_carried] == [uid("user001")]
    assert got[uid("user002")].sync == "updated" and result.updated == 1
    assert stack.users[taken["id"]]["primary_email"] == "taken@example.com"
    failure = result.failure()
    assert isinstance(failure, StackAuthError) and str(failure).startswith("2 users failed")
    retry = run(stack, datadir)  # nothing recorded for them: tried again
    assert {o.supabase_user_id for o in retry.failed} == {uid("user000"), uid("user001")}


def gained_github(count: int = 3) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Users signing in with Google; the second links GitHub in Supabase after the first run."""
    users = many(count)
    google = [identity(u, "google", f"g-{n}", u["email"]) for n, u in enumerate(users)]
    return users, google, google + [identity(users[1], "github", "gh-1", "user001@users.noreply.github.com")]


def providers_of(stack: StackAuthSandbox, datadir: DataDir, name: str) -> list[tuple[str, str]]:
    return sorted((p["id"], p["account_id"]) for p in stack_user(stack, datadir, name)["oauth_providers"])


def test_a_new_oauth_identity_is_added_once_and_a_removed_one_noted(stack: StackAuthSandbox, tmp_path: Path) -> None:
    users, before_ids, after_ids = gained_github()
    datadir = write_export(tmp_path / "d", users, before_ids)
    run(stack, datadir)
    write_export(datadir.root, users, after_ids)
    result = run(stack, datadir)
    got = {o.supabase_user_id: o for o in result.outcomes}
    assert result.failure() is None and result.updated == 1
    assert (got[uid("user001")].sync, got[uid("user001")].changed) == ("updated", ["oauth_providers"])
    assert providers_of(stack, datadir, "user001") == [("github", "gh-1"), ("google", "g-1")]
    github = next(p for p in stack_user(stack, datadir, "user001")["oauth_providers"] if p["id"] == "github")
    assert github["email"] == "user001@users.noreply.github.com"
    carried = orjson.loads(datadir.user_sync_state.read_bytes())["users"][uid("user001")]["oauthProviders"]
    assert carried == [["github", "gh-1"], ["google", "g-1"]]
    before = dict(stack.requests)
    again = run(stack, datadir)  # nothing left to send: not even a read
    assert again.updated == 0 and len(again.synced("unchanged")) == 3
    assert {k: v - before.get(k, 0) for k, v in stack.requests.items() if v != before.get(k, 0)} == {
        "GET /api/v1/users 200": 1}
    write_export(datadir.root, users, before_ids)  # GitHub unlinked in Supabase: noted, left in Stack Auth
    removed = {o.supabase_user_id: o for o in run(stack, datadir).outcomes}[uid("user001")]
    assert removed.sync == "unchanged" and removed.notes[-1] == (
        "github identity (account gh-1) no longer in Supabase: left in Stack Auth (Stack Auth's API removes none "
        "for supamove; remove it in the Stack Auth dashboard if it must not sign in)")
    assert providers_of(stack, datadir, "user001") == [("github", "gh-1"), ("google", "g-1")]
    assert stack.requests[ADDS] == 1


def test_an_identity_whose_e_mail_is_no_valid_address_is_added_without_it(stack: StackAuthSandbox,
                                                                           tmp_path: Path) -> None:
    """POST /oauth-providers checks the identity's e-mail as an address (a create's oauth_providers do not): the
    sync pass failed that user on every rerun. The address is informational; the account id signs in."""
    users, before_ids, after_ids = gained_github()
    after_ids[-1]["identity_data"]["email"] = "dñ@exämple.com"
    datadir = write_export(tmp_path / "d", users, before_ids)
    run(stack, datadir)
    write_export(datadir.root, users, after_ids)
    result = run(stack, datadir)
    assert result.failure() is None and result.updated == 1, [o.notes for o in result.outcomes if o.status == "failed"]
    github = next(p for p in stack_user(stack, datadir, "user001")["oauth_providers"] if p["id"] == "github")
    assert (github["account_id"], github["email"]) == ("gh-1", None)


def test_a_lost_answer_on_an_identity_add_is_checked_not_sent_twice(stack: StackAuthSandbox, tmp_path: Path) -> None:
    users, before_ids, after_ids = gained_github()
    datadir = write_export(tmp_path / "d", users, before_ids)
    run(stack, datadir)
    write_export(datadir.root, users, after_ids)
    stack.drop_next_oauth_adds(1)
    result = run(stack, datadir)
    assert result.failure() is None and result.updated == 1
    assert providers_of(stack, datadir, "user001") == [("github", "gh-1"), ("google", "g-1")]
    assert stack.requests[ADDS] == 1 and not [k for k in stack.requests if k.startswith("POST /api/v1/oauth-providers 4")]
    assert not datadir.pending_updates.exists()
    assert run(stack, datadir).updated == 0


def test_an_identity_add_stack_auth_refuses_fails_that_user_only(stack: StackAuthSandbox, tmp_path: Path) -> None:
    users, before_ids, after_ids = gained_github()
    users[2]["raw_user_meta_data"] = {"name": "Carl"}
    datadir = write_export(tmp_path / "d", users, before_ids)
    run(stack, datadir)
    other = stack.create_user({"primary_email": "octo@example.com", "primary_email_auth_enabled": True,
                               "oauth_providers": [{"id": "github", "account_id": "gh-1", "email": None}]})
    users[2]["raw_user_meta_data"] = {"name": "Carla"}
    write_export(datadir.root, users, after_ids)
    result = run(stack, datadir)
    got = {o.supabase_user_id: o for o in result.outcomes}
    refused = got[uid("user001")]
    assert (refused.status, refused.reason, refused.fix) == (
        "failed", "Stack Auth refused its github identity (account gh-1): A provider with the same account ID is "
                  f"already used for signing in. (Stack Auth user {other['id']} signs in with it)",  # not supamove's
        f"remove that github account from Stack Auth user {other['id']} (or delete that user if it is a leftover), "
        "then run the same command again")
    assert got[uid("user002")].sync == "updated" and result.updated == 1
    assert providers_of(stack, datadir, "user001") == [("google", "g-1")]
    failure = result.failure()
    assert isinstance(failure, StackAuthError) and str(failure).startswith("1 user failed")
    stack.delete_user(other["id"])  # the fix: then the rerun adds it
    retry = run(stack, datadir)
    assert retry.failure() is None and retry.updated == 1
    assert providers_of(stack, datadir, "user001") == [("github", "gh-1"), ("google", "g-1")]


def test_an_identity_of_a_provider_not_enabled_fails_with_the_fix(tmp_path: Path) -> None:
    users, before_ids, after_ids = gained_github()
    config = SandboxConfig(oauth_providers=("google",), trusted_domains=TRUSTED.trusted_domains)
    with StackAuthSandbox(PROJECT, SECRET, config=config) as stack:
        datadir = write_export(tmp_path / "d", users, before_ids)
        run(stack, datadir)
        write_export(datadir.root, users, after_ids)
        refused = run(stack, datadir).failed
    assert [(o.supabase_user_id, o.reason, o.fix) for o in refused] == [(
        uid("user001"), "Stack Auth refused its github identity (account gh-1): OAuth provider github not found or "
                        "not configured (the provider is not enabled in the project)",
        "enable the github OAuth provider in the Stack Auth dashboard (Auth Methods), then run the same command "
        "again")]


def test_an_identity_an_interrupted_run_added_is_no_conflict_and_not_sent_again(stack: StackAuthSandbox,
                                                                                 tmp_path: Path) -> None:
    users, before_ids, after_ids = gained_github()
    datadir = write_export(tmp_path / "d", users, before_ids)
    run(stack, datadir)
    write_export(datadir.root, users, after_ids)
    user = stack_user(stack, datadir, "user001")  # added, then the run was killed before its state was written
    stack.create_oauth_provider({"user_id": user["id"], "provider_config_id": "github", "account_id": "gh-1",
                                 "allow_sign_in": True, "allow_connected_accounts": True})
    result = run(stack, datadir)
    assert result.failure() is None and not result.conflicts
    assert stack.requests[ADDS] == 0 and providers_of(stack, datadir, "user001") == [("github", "gh-1"), ("google", "g-1")]
    carried = orjson.loads(datadir.user_sync_state.read_bytes())["users"][uid("user001")]["oauthProviders"]
    assert carried == [["github", "gh-1"], ["google", "g-1"]]
    before = dict(stack.requests)
    assert run(stack, datadir).updated == 0 and stack.requests == before | {
        "GET /api/v1/users 200": before["GET /api/v1/users 200"] + 1}


def test_one_account_two_supabase_users_share_signs_in_the_older_only(stack: StackAuthSandbox, tmp_path: Path) -> None:
    """linkedin and linkedin_oidc are one provider in Stack Auth, which signs one user in with an account: a
    second user carrying it would be a plain 500 at its create, and the fix the failure gave was to delete
    the first."""
    older, newer = auth_user("lena", 1, encrypted_password=""), auth_user("liam", 2, encrypted_password="")
    identities = [identity(older, "linkedin", "li-same", "lena@example.com"),
                  identity(newer, "linkedin_oidc", "li-same", "liam@example.com")]
    datadir = write_export(tmp_path / "d", [older, newer], identities)
    note = (f"linkedin identity (account li-same) not carried over: Supabase user {uid('lena')} has the same "
            "account and signs in with it (Stack Auth signs one user in with an account; the oldest keeps it)")
    dry = run(stack, datadir, dry_run=True)
    assert [(o.supabase_user_id, note) for o in dry.outcomes if note in o.notes] == [(uid("liam"), note)]
    result = run(stack, datadir)
    assert result.failure() is None and result.created == 2
    assert [(o.supabase_user_id, n) for o, n in result.identities_not_carried] == [(uid("liam"), note)]
    assert stack_user(stack, datadir, "lena")["oauth_providers"][0]["account_id"] == "li-same"
    assert stack_user(stack, datadir, "liam")["oauth_providers"] == []
    # Left without the account it signed in with, and without a password: it gets a reset e-mail.
    assert [o.supabase_user_id for o in result.reset_required] == [uid("liam")]


def test_after_map_users_a_change_stack_auth_lacks_is_a_conflict_not_a_baseline(stack: StackAuthSandbox,
                                                                                 tmp_path: Path) -> None:
    """Without sync state (the mapping rebuilt by map-users), what the export would send was recorded as
    the baseline: a change made in Supabase since the users were created was then never carried, nor said."""
    from supamove.users.mapusers import map_users

    users = many(3)
    datadir = write_export(tmp_path / "d", users, [])
    run(stack, datadir)
    datadir.user_mapping.unlink()
    datadir.user_sync_state.unlink()
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as client:
        assert len(map_users(client, datadir).matched) == 3
    changed = [users[0], *renamed(users[1:2]), users[2]]  # user001 renamed in Supabase meanwhile
    write_export(datadir.root, changed, [])
    result = run(stack, datadir)
    got = {o.supabase_user_id: o for o in result.outcomes}
    assert (got[uid("user001")].sync, got[uid("user001")].changed_in_stack_auth) == (
        "conflict", ["display_name", "server_metadata"])
    assert {got[uid(n)].sync for n in ("user000", "user002")} == {"unchanged"}  # the baseline, read and the same
    assert isinstance(result.failure(), StackAuthError) and stack.requests.get(PATCHES, 0) == 0
    forced = run(stack, datadir, overwrite_changed=True)
    assert forced.failure() is None and stack.requests[PATCHES] == 1
    assert stack_user(stack, datadir, "user001")["display_name"] == "Renamed user001@example.com"
    again = run(stack, datadir)
    assert again.failure() is None and {o.sync for o in again.outcomes} == {"unchanged"}


def test_an_e_mail_freed_in_supabase_goes_to_the_user_who_took_it_in_the_same_run(stack: StackAuthSandbox,
                                                                                    tmp_path: Path) -> None:
    """Between two runs a user is deleted (gone from auth.users, or deleted_at set) and someone signs up with its
    address (an admin's delete and re-invite): the next run turns the old user's e-mail sign-in off before it
    creates the new user, and its dry run says so, never a link to the old user's Stack Auth account."""
    users = [auth_user("ann", 0), auth_user("ben", 1)]
    datadir = write_export(tmp_path / "d", users, [])
    assert not run(stack, datadir).failed
    later = [auth_user("ben", 1, deleted_at=ts(40)),  # ann: gone from auth.users
             *(auth_user(f"{name}2", 41 + n, email=f"{name}@example.com") for n, name in enumerate(("ann", "ben")))]
    write_export(datadir.root, later, [])
    predicted = {o.supabase_user_id: o for o in run(stack, datadir, dry_run=True).outcomes}
    assert [predicted[uid(name)].status for name in ("ann2", "ben2")] == ["create", "create"]
    result = run(stack, datadir)
    assert result.failure() is None, [(o.email, o.reason) for o in result.failed]
    mapping = UserMapping.load(datadir.user_mapping)
    for name in ("ann", "ben"):
        signing_in = [u["id"] for u in stack.users.values()
                      if u["primary_email"] == f"{name}@example.com" and u["primary_email_auth_enabled"]]
        assert signing_in == [mapping.get(uid(f"{name}2"))] and mapping.get(uid(name)) not in signing_in


DELETES = "DELETE /api/v1/contact-channels/{user_id}/{id} 200"


def moved(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**u, "email": u["email"].replace("@example.com", "@moved.example.com")} for u in users]


def old_addresses_free(stack: StackAuthSandbox, users: list[dict[str, Any]]) -> bool:
    """Each user signs in with its new address only (its one contact channel), its old one free."""
    by_email = {u["primary_email"]: uid_ for uid_, u in stack.users.items()}
    return all([c["value"] for c in stack.channels(by_email[u["email"]])] == [u["email"]]
               and u["email"].replace("@moved.", "@") not in stack.store.auth_emails for u in moved(users))


def test_a_replaced_e_mail_no_longer_signs_in_and_goes_to_the_user_who_takes_it(stack: StackAuthSandbox,
                                                                                tmp_path: Path) -> None:
    """Stack Auth's update only demotes a replaced primary e-mail's contact channel, which still signs the user in
    (crud.tsx onUpdate): the old address went on signing in (a password reset sent to it took the account), and
    a user who signed up with it since failed with "Stack Auth reports the e-mail taken but lists no such user".
    The sync deletes that channel after the update, and its dry run says so."""
    users = [auth_user("xavier", 0), auth_user("judy", 1)]
    datadir = write_export(tmp_path / "d", users, [])
    assert not run(stack, datadir).failed
    later = [{**users[0], "email": "xavier@new.example.com"}, {**users[1], "email": None, "phone": "15550001234"},
             auth_user("yves", 2, email="xavier@example.com"), auth_user("kim", 3, email="judy@example.com")]
    write_export(datadir.root, later, [])
    dry = {o.supabase_user_id: o for o in run(stack, datadir, dry_run=True).outcomes}
    assert "previous e-mail xavier@example.com would be removed from its Stack Auth user: it would no longer sign " \
           "in with it, and another user may take it" in dry[uid("xavier")].notes
    assert [dry[uid(name)].status for name in ("yves", "kim")] == ["create", "create"]
    assert stack.requests.get(DELETES, 0) == 0
    result = run(stack, datadir)
    assert result.failure() is None, [(o.email, o.reason) for o in result.failed]
    got = {o.supabase_user_id: o for o in result.outcomes}
    assert "previous e-mail xavier@example.com removed from its Stack Auth user: it no longer signs in with it, " \
           "and another user may take it" in got[uid("xavier")].notes
    xavier, judy = (stack_user(stack, datadir, name)["id"] for name in ("xavier", "judy"))
    assert [c["value"] for c in stack.channels(xavier)] == ["xavier@new.example.com"] and stack.channels(judy) == []
    assert stack.check_password("xavier@new.example.com", PASSWORDS["xavier"])
    assert not stack.check_password("xavier@example.com", PASSWORDS["xavier"])  # the old address: yves's now
    mapping = UserMapping.load(datadir.user_mapping)
    assert stack.store.auth_emails["xavier@example.com"] == mapping.get(uid("yves"))
    assert stack.store.auth_emails["judy@example.com"] == mapping.get(uid("kim"))
    before = dict(stack.requests)
    again = run(stack, datadir)
    assert again.failure() is None and {o.sync for o in again.outcomes} == {"unchanged"}
    assert {k: v - before.get(k, 0) for k, v in stack.requests.items() if v != before.get(k, 0)} == {
        "GET /api/v1/users 200": 1}


def test_a_run_stopped_between_an_e_mail_update_and_its_channel_delete_is_finished_by_the_next(
        stack: StackAuthSandbox, tmp_path: Path) -> None:
    users = many(3)
    datadir = write_export(tmp_path / "d", users, [])
    run(stack, datadir)
    write_export(datadir.root, moved(users), [])
    stack.fail_next(1000, 503, match="DELETE /api/v1/contact-channels/*")  # down after the first update
    with pytest.raises(StackAuthError, match="did not answer DELETE"):
        run(stack, datadir, concurrency=1)
    stack.clear_faults()
    assert 0 < sum(stack.updates.values()) < 3 and datadir.pending_updates.exists()
    assert "user000@example.com" in stack.store.auth_emails  # its update applied, its old address still signing in
    dry = run(stack, datadir, dry_run=True)
    assert all(any(n.startswith("previous e-mail user00") for n in o.notes) for o in dry.outcomes)
    result = run(stack, datadir)
    assert result.failure() is None
    assert set(stack.updates.values()) == {1} and len(stack.updates) == 3  # none updated twice
    first = next(o for o in result.outcomes if o.email == "user000@moved.example.com")
    assert first.notes[-2:] == ["updated by an interrupted run (found applied in Stack Auth, not sent again)",
                                "previous e-mail user000@example.com removed from its Stack Auth user: it no longer "
                                "signs in with it, and another user may take it"]
    assert old_addresses_free(stack, users) and not datadir.pending_updates.exists()


def test_a_lost_answer_to_a_channel_delete_is_no_failure(stack: StackAuthSandbox, tmp_path: Path) -> None:
    users = many(2)
    datadir = write_export(tmp_path / "d", users, [])
    run(stack, datadir)
    write_export(datadir.root, moved(users), [])
    stack.drop_next_channel_deletes(1)
    result = run(stack, datadir, concurrency=1)
    assert result.failure() is None and result.updated == 2 and old_addresses_free(stack, users)
    # The delete was applied, its answer lost; sent again, it found the channel gone.
    assert stack.requests[DELETES] == 1 and stack.requests["DELETE /api/v1/contact-channels/{user_id}/{id} 400"] == 1


def test_a_killed_sync_of_replaced_e_mails_leaves_none_signing_in(stack: StackAuthSandbox, tmp_path: Path) -> None:
    users = many(40)
    datadir = write_export(tmp_path / "d", users, [])
    run(stack, datadir)
    write_export(datadir.root, moved(users), [])
    # The deletes answered 503 (retried): the kill lands after some updates, before their deletes.
    stack.fail_next(10_000, 503, match="DELETE /api/v1/contact-channels/*")
    output = killed_midway(stack, datadir, tmp_path, lambda: sum(stack.updates.values()) >= 4, concurrency=4)
    assert 0 < sum(stack.updates.values()) < 40, output
    updated = [u["primary_email"].replace("@moved.", "@") for u in stack.users.values() if "@moved." in u["primary_email"]]
    assert updated and all(email in stack.store.auth_emails for email in updated)  # their old addresses sign in still
    result = run(stack, datadir)
    assert result.failure() is None, [(o.email, o.reason) for o in result.failed]
    assert set(stack.updates.values()) == {1} and len(stack.updates) == 40
    assert old_addresses_free(stack, users) and not datadir.pending_updates.exists()


def test_an_address_another_user_still_signs_in_with_as_a_further_e_mail_fails_with_the_fix(
        stack: StackAuthSandbox, tmp_path: Path) -> None:
    """An address Stack Auth left signing in as a user's non-primary contact channel (replaced there, or by a
    supamove before this version): a Supabase user with it cannot be created; the failure said only "Stack Auth
    reports the e-mail taken but lists no such user"."""
    with StackAuthClient(stack.url, PROJECT, SECRET, retry=FAST) as client:
        other = client.create_user({"primary_email": "ann@example.com", "primary_email_auth_enabled": True}).user["id"]
        client.update_user(other, {"primary_email": "ann@elsewhere.example.com"})
    datadir = write_export(tmp_path / "d", [auth_user("ann", 0)], [])
    result = run(stack, datadir)
    (failed,) = result.failed
    assert failed.reason == ("Stack Auth reports the e-mail taken, yet no Stack Auth user has it as primary e-mail: "
                             "another user signs in with it as a further address (Stack Auth leaves a replaced e-mail "
                             "signing in: one changed in Stack Auth, or by a supamove before this version)")
    assert failed.fix is not None and failed.fix.startswith("find the Stack Auth user that has this address")
    stack.delete_channel(other, next(c["id"] for c in stack.channels(other) if c["value"] == "ann@example.com"))
    assert run(stack, datadir).failure() is None
