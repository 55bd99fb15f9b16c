"""verify before import (an empty target, no metadata.json yet), an unreachable database, and the report's pieces."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from conftest import error_line

from supamove.sandbox.pgserver import free_port
from supamove.verify import TableCheck, VerifyReport
from supamove.verify.locate import pair_by_key, shown


def test_preflight_on_an_empty_target_lists_the_empty_tables(cli, data_dir: Path) -> None:
    result = cli("verify", "--skip-checksum", "--before-export")
    assert result.exit_code == 7, result.output
    assert "--before-export: compared the public tables of the source catalog" in result.output
    report = orjson.loads((data_dir / "verification-report.json").read_bytes())
    assert report["tablesFrom"] == "source catalog"
    assert {t["schema"] for t in report["tables"]} == {"public"}
    assert report["summary"]["checksums"] is False
    readings = next(t for t in report["tables"] if t["table"] == "readings")
    assert readings["status"] == "fail" and readings["targetRows"] == 0 and readings["sourceRows"] > 0
    assert {t["reason"] for t in report["tables"] if t["sourceRows"]} == {
        "target table is empty: run `supamove import`"}
    assert "empty" in result.output


def test_a_data_directory_without_an_export_is_an_error_not_a_pass(cli, dbs, data_dir: Path) -> None:
    # A mistyped --data-dir compared the source's catalog with the target's and passed (exit 0): an export
    # never looked at. It is named now, and the mistyped directory is not created.
    with dbs.source() as conn:  # both sides empty: the catalogs' comparison passed
        conn.execute("TRUNCATE public.organizations, public.profiles, public.readings RESTART IDENTITY CASCADE")
    typo = data_dir.parent / "migraton-data"
    result = cli("verify", "--data-dir", str(typo))
    assert result.exit_code == 5, result.output
    assert error_line(result.output) == (
        f"Error: {typo / 'metadata.json'} not found: {typo} holds no export to verify (fix: check that --data-dir "
        "(or MIGRATION_DATA_DIR) names the export's directory, or run `supamove export` first; before the export, "
        "`supamove verify --before-export` compares the source's public tables)")
    assert not typo.exists()
    data_dir.mkdir()  # made by `schema`, say, before any export: the same
    empty = cli("verify", "--skip-checksum", "--json")
    assert empty.exit_code == 5 and orjson.loads(empty.stdout)["error"]["exitCode"] == 5
    assert not (data_dir / "verification-report.json").exists()


def test_before_export_is_refused_where_there_is_an_export(cli, exported: Path) -> None:
    result = cli("verify", "--before-export")
    assert result.exit_code == 2, result.output
    assert error_line(result.output) == (
        f"Error: --before-export compares the source's public tables, but {exported} holds an export "
        "(metadata.json) (fix: drop --before-export to verify the export's tables)")


def test_unreachable_target_fails(cli, monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?sslmode=disable")
    result = cli("verify")
    assert result.exit_code == 4, result.output
    assert "connection refused" in result.output
    assert not (data_dir / "verification-report.json").exists()


def test_missing_target_table_names_it(cli, dbs, data_dir: Path) -> None:
    with dbs.target() as conn:
        conn.execute("DROP TABLE public.alert_subscriptions")
    result = cli("verify", "--skip-checksum", "--before-export", "--tables", "alert_subscriptions")
    assert result.exit_code == 7
    report = orjson.loads((data_dir / "verification-report.json").read_bytes())
    assert [t["reason"] for t in report["tables"]] == [
        "target table public.alert_subscriptions does not exist (run `supamove import`)"]


def test_tables_pattern_matching_nothing_is_refused(cli, exported: Path) -> None:
    result = cli("verify", "--tables", "no_such_table")
    assert result.exit_code == 2
    assert "--tables no_such_table matches no table" in result.output
    # Beside a pattern that matches, a mistyped one was ignored: readings alone verified, exit 0.
    result = cli("verify", "--skip-checksum", "--tables", "readings", "--tables", "sensros")
    assert result.exit_code == 2, result.output
    line = error_line(result.output)
    assert line.startswith("Error: --tables sensros matches no table; the tables of edge, public are: ")
    assert "public.sensors" in line and line.endswith("(fix: check the pattern (name or schema.name, shell "
                                                      "patterns such as 'readings*'))")
    assert not (exported / "verification-report.json").exists()


def test_a_missing_and_an_extra_row_with_one_key_are_one_changed_row() -> None:
    missing = [("h1", 1, {"id": "7", "v": "a"}), ("h2", 2, {"id": "8", "v": "b"})]
    extra = [("h3", 1, {"id": "7", "v": "z"})]
    assert [d.to_dict() for d in pair_by_key(("id",), missing, extra)] == [
        {"kind": "changed", "key": {"id": "7"}, "columns": [{"column": "v", "source": "a", "target": "z"}]},
        {"kind": "missing", "key": {"id": "8"}, "count": 2, "row": {"id": "8", "v": "b"}},
    ]
    assert [d.to_dict() for d in pair_by_key((), missing[:1], extra)] == [
        {"kind": "missing", "count": 1, "row": {"id": "7", "v": "a"}},
        {"kind": "extra", "count": 1, "row": {"id": "7", "v": "z"}},
    ]


def test_long_values_are_cut_in_the_report() -> None:
    assert shown(None) is None and shown("short") == "short"
    assert shown("x" * 1000).endswith("… (1,000 characters)")


def test_a_failed_table_fails_verify_naming_the_report() -> None:
    def report(*tables: TableCheck) -> VerifyReport:
        return VerifyReport("", "", "", list(tables), 0.0, True, "metadata.json", Path("/data/verification-report.json"))

    passed = TableCheck("public", "sites")
    assert report(passed, TableCheck("public", "units", warnings=["column x is in the source only"])).failure() is None
    error = report(passed, TableCheck("public", "readings", failures=["contents differ"])).failure()
    assert error is not None and error.exit_code == 7
    assert str(error) == "1 of 2 tables do not match (fix: see the reasons above and in /data/verification-report.json)"
