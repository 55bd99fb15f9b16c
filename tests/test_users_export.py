"""migrate-users after a real `supamove export` of a Supabase-shaped database (conftest's fixtures)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

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


def test_map_users_after_a_real_migration_gives_the_same_mapping(cli, exported: Path, stack: StackAuthSandbox) -> None:
    assert cli("migrate-users").exit_code == 0
    mapping_file = exported / "user-mapping.json"
    before = {m["supabaseUserId"]: m["stackAuthUserId"] for m in orjson.loads(mapping_file.read_bytes())["mappings"]}
    mapping_file.unlink()
    result = cli("map-users")
    assert result.exit_code == 0, result.output
    after = {m["supabaseUserId"]: m["stackAuthUserId"] for m in orjson.loads(mapping_file.read_bytes())["mappings"]}
    assert after == before
