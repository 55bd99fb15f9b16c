"""What a script can rely on: results on stdout, progress and messages on stderr, --json, exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from conftest import APP_PASSWORD, EDGE, STACK_SECRET, error_line, flat, write_mapping

from supamove import render
from supamove.files import write_json
from supamove.log import console, get_logger, setup_logging
from supamove.words import counted

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def auth_user_ids(data_dir: Path) -> set[str]:
    lines = (data_dir / "auth" / "auth.users.jsonl").read_bytes().splitlines()
    return {orjson.loads(line)["id"] for line in lines if line.strip()}


def test_test_connections_prints_its_table_or_its_json_on_stdout(cli: Any, stack_auth: Any) -> None:
    text = cli("test-connections")
    assert text.exit_code == 0, text.output
    assert "Connections" in text.stdout and "All configured endpoints are usable." in text.stdout
    assert "Connections" not in text.stderr and "usable" not in text.stderr
    result = cli("test-connections", "--json")
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)  # the whole of stdout is one JSON document
    assert report["ok"] is True
    names = [e["name"] for e in report["endpoints"]]
    assert names[:2] == ["source (SUPABASE_DB_URL)", "target (DATABASE_URL)"] and names[2].startswith("Stack Auth (")
    common = {"name", "configured", "reachable", "usable", "version", "tls", "latencyMs", "warnings", "errors"}
    for endpoint, place in zip(report["endpoints"], ({"host", "port", "database", "user"},) * 2 + (
            {"apiUrl", "projectId"},), strict=True):
        assert set(endpoint) == common | place
        assert endpoint["usable"] is True and endpoint["errors"] == []
    assert re.match(r"\d+\.\d+", report["endpoints"][0]["version"])
    assert APP_PASSWORD not in result.stdout + result.stderr and STACK_SECRET not in result.stdout + result.stderr


def test_json_keeps_the_warnings_and_errors_on_stderr(cli: Any, stack_auth: Any, monkeypatch: Any) -> None:
    # With --json, stderr said only "Error: not every endpoint is usable (fix: correct the settings named
    # above)": nothing was named above, the endpoint's error was inside the JSON document alone.
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@127.0.0.1:1/app?sslmode=disable")
    result = cli("test-connections", "--json")
    assert result.exit_code == 1, result.output
    report = orjson.loads(result.stdout)  # still the one document on stdout
    refused = report["endpoints"][1]["errors"][0]
    assert refused.startswith("connection refused by 127.0.0.1:1")
    assert f"error: target (DATABASE_URL): {refused}" in flat(result.stderr)
    assert "warning: source (SUPABASE_DB_URL): the source connection is not encrypted" in flat(result.stderr)
    assert "Connections" not in result.stderr  # the table is the text's result, not a message
    plan = cli("export", "--dry-run", "--json")  # the schemas left out: a warning of the plan
    assert orjson.loads(plan.stdout)["schemas"] == ["public"]
    assert "warning: schema edge" in flat(plan.stderr) and "Export plan" not in plan.stderr


def test_export_dry_run_plan_on_stdout_and_as_json(cli: Any, data_dir: Path) -> None:
    text = cli("export", *EDGE, "--dry-run")
    assert text.exit_code == 0, text.output
    assert "Export plan (dependency order)" in text.stdout and "Dry run: nothing was written." in text.stdout
    assert "Export plan" not in text.stderr and "Dry run" not in text.stderr
    result = cli("export", *EDGE, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = orjson.loads(result.stdout)
    assert plan["schemas"] == ["public", "edge"] and plan["stop"] is None
    names = [f"{t['schema']}.{t['table']}" for t in plan["tables"]]
    assert names.index("public.organizations") < names.index("public.sites")  # load order
    assert set(plan["tables"][0]) == {"schema", "table", "estimatedRows", "sizeBytes", "userIdColumns", "parts"}
    assert any(set(group) == {"edge.cycle_a", "edge.cycle_b"} for group in plan["cycles"])
    assert {t["table"] for t in plan["authTables"]} >= {"users", "identities"}
    assert "auth" in plan["skippedSchemas"]
    assert not (data_dir / "metadata.json").exists()


def test_json_without_dry_run_is_refused(cli: Any, data_dir: Path) -> None:
    result = cli("export", "--json")
    assert result.exit_code == 2
    assert error_line(result.stderr) == "Error: export --json prints the dry run's plan (fix: add --dry-run)"
    assert orjson.loads(result.stdout) == {"ok": False, "error": {
        "message": "export --json prints the dry run's plan (fix: add --dry-run)", "exitCode": 2}}
    assert not (data_dir / "metadata.json").exists()


def test_a_command_stopped_before_its_result_still_prints_one_json_document(cli: Any, data_dir: Path,
                                                                            monkeypatch: Any) -> None:
    # It printed nothing on stdout: a script reading it found no JSON at all.
    monkeypatch.setenv("DATABASE_URL", os.environ["SUPABASE_DB_URL"])  # the target is the source: refused
    for command in (["verify", "--json"], ["import", "--dry-run", "--json"], ["migrate-users", "--dry-run", "--json"]):
        result = cli(*command)
        assert result.exit_code in (2, 4, 5), result.output  # target refused; Stack Auth not set up
        document = orjson.loads(result.stdout)
        assert document["ok"] is False and document["error"]["exitCode"] == result.exit_code, command
        assert error_line(result.stderr) == f"Error: {document['error']['message']}"


def test_import_and_verify_results_json_and_progress_phases(cli: Any, dbs: Any, exported: Path) -> None:
    early = cli("verify", "--skip-checksum", "--json")  # before the import: the empty tables, exit 7 as ever
    assert early.exit_code == 7, early.output
    assert orjson.loads(early.stdout)["summary"]["fail"] > 0
    assert error_line(early.stderr).startswith("Error: ") and "target tables are empty" in early.stderr
    unmapped = orjson.loads(cli("import", "--dry-run", "--json").stdout)  # no user-mapping.json yet
    with_ids = [t for t in unmapped["tables"] if t["unmappedUserIds"]]
    assert with_ids and all(set(t["userIdsRemapped"].values()) == {0} for t in with_ids)  # it said all remapped
    write_mapping(dbs, exported)
    plan = orjson.loads(cli("import", "--dry-run", "--json").stdout)
    assert plan["problems"] == []
    assert plan["options"] == {"disableFk": False, "truncateFirst": False, "unmappedUsers": "error"}
    assert {t["state"] for t in plan["tables"]} == {"to load"}
    assert [t["userIdsRemapped"] for t in plan["tables"] if t["userIdsRemapped"]] == \
        [t["unmappedUserIds"] for t in unmapped["tables"] if t["unmappedUserIds"]]  # now every one of them
    assert all(not t["unmappedUserIds"] for t in plan["tables"])
    assert set(plan["tables"][0]) == {"schema", "table", "rows", "state", "userIdsRemapped", "unmappedUserIds",
                                      "jsonUserIdsRewritten", "missingInTarget", "missingInExport"}
    assert {f"{t['schema']}.{t['table']}": t["jsonUserIdsRewritten"] for t in plan["tables"]
            if t["jsonUserIdsRewritten"]} == {"edge.posts": ["meta"]}

    loaded = cli("import")
    assert loaded.exit_code == 0, loaded.output
    assert "Import summary" in loaded.stdout and "Imported " in loaded.stdout
    assert "Import summary" not in loaded.stderr
    assert ": indexes and constraints" in loaded.stderr and "indexes and constraints" not in loaded.stdout

    full = cli("verify", "--json")
    assert full.exit_code == 0, full.output
    report = orjson.loads(full.stdout)
    assert report == orjson.loads((exported / "verification-report.json").read_bytes())
    assert report["summary"]["checksums"] is True and report["summary"]["fail"] == 0
    assert "rows compared" in full.stderr and "rows compared" not in full.stdout


def test_counts_only_verify_never_replaces_a_full_verification(cli: Any, dbs: Any, exported: Path) -> None:
    write_mapping(dbs, exported)
    assert cli("import").exit_code == 0
    first = cli("verify", "--skip-checksum")  # no report yet: it is the report
    assert first.exit_code == 0, first.output
    assert "rows counted" in first.stderr and "rows compared" not in first.stderr  # none is compared
    report = exported / "verification-report.json"
    assert orjson.loads(report.read_bytes())["summary"]["checksums"] is False
    assert cli("verify").exit_code == 0  # a full verification replaces a counts-only report
    full = report.read_bytes()
    assert orjson.loads(full)["summary"]["checksums"] is True
    quick = cli("verify", "--skip-checksum")
    assert quick.exit_code == 0, quick.output
    assert report.read_bytes() == full
    counts = exported / "verification-counts-report.json"
    assert orjson.loads(counts.read_bytes())["summary"]["checksums"] is False
    assert (f"verification-report.json holds a full verification (with checksums): kept; this row-count check "
            f"is in {counts}") in flat(quick.stderr)
    assert f"Report: {counts}" in flat(quick.stdout)


def test_users_dry_runs_as_json_and_reruns_keep_retain_until(cli: Any, exported: Path, stack_auth: Any) -> None:
    ids = auth_user_ids(exported)
    planned = cli("migrate-users", "--dry-run", "--json")
    assert planned.exit_code == 0, planned.output
    data = orjson.loads(planned.stdout)
    assert data["dryRun"] is True and sum(data["counts"].values()) == len(ids)
    assert {u["supabaseUserId"] for u in data["users"]} == ids
    assert not (exported / "user-mapping.json").exists()

    assert cli("migrate-users").exit_code == 0
    mapping_file = exported / "user-mapping.json"
    mapping = orjson.loads(mapping_file.read_bytes())
    first = "2026-01-02T03:04:05Z"  # as if the first run were weeks ago
    write_json(mapping_file, {**mapping, "retainUntil": first})
    assert cli("migrate-users").exit_code == 0
    assert orjson.loads(mapping_file.read_bytes())["retainUntil"] == first
    assert cli("map-users").exit_code == 0
    rebuilt = orjson.loads(mapping_file.read_bytes())
    assert rebuilt["retainUntil"] == first and len(rebuilt["mappings"]) == len(mapping["mappings"])

    matches = orjson.loads(cli("map-users", "--dry-run", "--json").stdout)
    assert matches["dryRun"] is True and matches["mappingPath"] is None
    assert {m["supabaseUserId"] for m in matches["matched"]} == {m["supabaseUserId"] for m in mapping["mappings"]}
    assert set(matches) == {"dryRun", "matched", "unmatchedSupabase", "unmatchedStackAuth", "mappingPath",
                            "keptFromEarlierMapping", "claimedByMoreThanOne"}
    resets = orjson.loads(cli("send-password-resets", "--dry-run", "--json").stdout)
    required = orjson.loads((exported / "password-reset-required.json").read_bytes())["users"]
    assert {u["supabaseUserId"] for u in resets["toSend"]} == {u["supabaseUserId"] for u in required if u["email"]}
    assert resets["alreadySent"] == len(required) - len(resets["toSend"]) and resets["failed"] == []


def test_a_narrow_terminal_never_cuts_a_count(cli: Any, env: dict[str, str], data_dir: Path) -> None:
    # A real process on a 50-column terminal (rich told so), then with stdout a pipe: same counts, never cut.
    base = {**os.environ, **env, "NO_COLOR": "1"}
    narrow = subprocess.run([sys.executable, "-m", "supamove", "export", *EDGE], capture_output=True, text=True,
                            env={**base, "TTY_COMPATIBLE": "1", "COLUMNS": "50"}, timeout=300)
    assert narrow.returncode == 0, narrow.stderr
    metadata = orjson.loads((data_dir / "metadata.json").read_bytes())
    counts = [f"{t['rowCount']:,}" for t in metadata["tables"]]
    summary = ANSI.sub("", narrow.stdout)
    rows = [line for line in summary.splitlines() if line.startswith("│")]
    assert max(len(line) for line in rows) <= 50, summary
    for count in counts:
        assert any(re.search(rf"│\s*{re.escape(count)}\s*│", line) for line in rows), (count, summary)
    piped = subprocess.run([sys.executable, "-m", "supamove", "export", *EDGE, "--force"], capture_output=True,
                           text=True, env={**base, "COLUMNS": "50"}, timeout=300)
    assert piped.returncode == 0, piped.stderr
    lines = {line.split("│")[1].strip(): line for line in piped.stdout.splitlines() if line.count("│") > 2}
    for table in metadata["tables"]:
        name, count = f"{table['schema']}.{table['name']}", f"{table['rowCount']:,}"
        assert re.search(rf"│\s*{re.escape(count)}\s*│", lines[name]), (name, piped.stdout)
        # Off a terminal, progress is a plain line per table as it ends, not a last frame of cut bars.
        assert re.search(rf"^{re.escape(name)}: {re.escape(count)} rows in \d+\.\ds", piped.stderr, re.M), piped.stderr
    assert "━" not in piped.stderr and "…" not in piped.stderr


def test_progress_off_a_terminal_is_a_line_every_ten_seconds_and_one_at_the_end() -> None:
    now = [100.0]
    plain = render.PlainProgress("rows", {"users": "users"}, clock=lambda: now[0])
    with console.capture() as seen:
        plain.start("public.readings", 1000)
        plain.start("users", None)
        plain.advance("public.readings", 100)
        now[0] += 9.9
        plain.advance("public.readings", 100)  # under ten seconds since it started: nothing said
        now[0] += 0.1
        plain.advance("public.readings", 300)
        plain.advance("users", 30)
        now[0] += 5
        plain.advance("public.readings", 100)  # five seconds after its last line: nothing
        plain.start("public.readings: indexes and constraints", None)
        plain.finish("public.readings")
        now[0] += 2.5
        plain.finish("public.readings: indexes and constraints")
        plain.finish("users")
    assert seen.get().splitlines() == [
        "public.readings: 500 of 1,000 rows, 50 rows/s",
        "users: 30 users, 3 users/s",
        "public.readings: 600 rows in 15.0s (40 rows/s)",
        "public.readings: indexes and constraints: done in 2.5s",
        "users: 30 users in 17.5s (2 users/s)",
    ]


def one_bar(label: str, total: int, seconds: float) -> list[str]:
    """What a bar off a terminal prints for `total` done in `seconds`."""
    now = [0.0]
    plain = render.PlainProgress("rows", clock=lambda: now[0])
    with console.capture() as seen:
        plain.start(label, total)
        plain.advance(label, total)
        now[0] += seconds
        plain.finish(label)
    return seen.get().splitlines()


def test_the_constraints_put_back_after_a_load_are_a_phase_not_rows() -> None:
    # The import's bar for a table's foreign keys and checks, put back after its rows, said
    # "public.alerts: constraints: 2 rows in 0.0s (596 rows/s)": two constraints counted as rows.
    assert one_bar("public.alerts: constraints", 2, 0.5) == ["public.alerts: constraints: done in 0.5s"]


def test_a_count_of_one_is_singular() -> None:
    # "1 users failed", "public.settings: 1 rows in 0.0s", "1 rows without a match": every count now says
    # its noun through one helper.
    assert one_bar("public.settings", 1, 0.0) == ["public.settings: 1 row in 0.0s"]
    assert [counted(n, "user id") for n in (0, 1, 2, 1204)] == ["0 user ids", "1 user id", "2 user ids", "1,204 user ids"]
    assert counted(1, "entry", "entries") == "1 entry" and counted(3, "entry", "entries") == "3 entries"


def test_log_lines_off_a_terminal_are_never_wrapped_and_still_scrubbed() -> None:
    setup_logging(None)
    message = "applied " + "/tmp/a-long-data-directory/" * 6 + "schema.sql to the target: 9 tables"
    with console.capture() as seen:
        get_logger("schema").info("%s (postgresql://app:%s@db/app)", message, "hunter2-password")
    assert seen.get() == f"INFO     {message} (postgresql://app:***@db/app)\n"


def test_an_option_click_refuses_still_prints_one_json_document_with_json(env: dict[str, str]) -> None:
    # click refuses a wrong option before any command runs: stdout stayed empty under --json.
    done = subprocess.run([sys.executable, "-m", "supamove", "verify", "--json", "--jobs", "0"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert orjson.loads(done.stdout) == {"ok": False, "error": {
        "message": "Invalid value for '--jobs': 0 is not in the range 1<=x<=64.", "exitCode": 2}}
    assert done.stderr.splitlines()[-1] == "Error: Invalid value for '--jobs': 0 is not in the range 1<=x<=64."
    unknown = subprocess.run([sys.executable, "-m", "supamove", "export", "--dry-run", "--json", "--bogus"],
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and orjson.loads(unknown.stdout)["error"]["message"].startswith(
        "No such option '--bogus'")
    plain = subprocess.run([sys.executable, "-m", "supamove", "verify", "--jobs", "0"], env={**os.environ, **env},
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode == 2 and plain.stdout == ""  # without --json, as ever


def test_the_migrate_summary_counts_the_users_found_after_an_interruption() -> None:
    # The users step's line said "611 created, 1,000 in Stack Auth" where the report said 2 were found.
    from supamove.pipeline.model import MigrateResult
    from supamove.users.migrate import MigrationResult, UserOutcome

    users = [UserOutcome("a", "migrated", None, "s1", None, created_now=True),
             UserOutcome("b", "migrated", None, "s2", None, found_earlier=True)]
    result = MigrateResult(dry_run=False)
    result.users = MigrationResult(users, False, 1.0)
    assert render._step_done(result, "migrate-users") == (
        "1 created, 1 found from an earlier run, 2 in Stack Auth, 0 failed, 0 need a password reset")


def test_a_key_with_a_tab_and_one_with_a_written_backslash_t_read_apart() -> None:
    assert (render._key_text("key\twith"), render._key_text("key\\twith")) == ("key\\twith", "key\\\\twith")
    assert render._key_text("plain key") == "plain key" and render._key_text(None) is None
