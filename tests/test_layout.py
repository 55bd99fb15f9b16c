"""The layout the code keeps: steps over shared modules, click only in the CLI, short functions."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "supamove"
# One module or package per runbook step; none imports another, nor the CLI layer above them.
STEPS = ("connections", "schema", "export", "users", "importer", "verify")
# Above the steps: drives them as one run (`supamove migrate`); below the CLI layer, which calls it.
PIPELINE = ("pipeline",)
CLI_LAYER = ("cli", "render", "context", "sandbox")


def unit_of(path: Path) -> str:
    """`importer` for importer/load.py, `export` for export.py."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def supamove_imports(path: Path) -> set[str]:
    """The top-level supamove modules `path` imports (`supamove.x.y` gives `x`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "supamove":
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("supamove.")}
    return found


def sources(*units: str) -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if unit_of(p) in units]


@pytest.mark.parametrize("step", STEPS)
def test_a_step_imports_only_the_shared_modules_below_it(step: str) -> None:
    wrong = {f"{p.relative_to(PACKAGE)} imports supamove.{name}"
             for p in sources(step) for name in supamove_imports(p)
             if name != step and name in STEPS + PIPELINE + CLI_LAYER}
    assert not wrong, sorted(wrong)


def test_only_the_cli_layer_imports_the_pipeline_and_it_imports_no_cli_module() -> None:
    below = [p for p in PACKAGE.rglob("*.py") if unit_of(p) not in PIPELINE + CLI_LAYER]
    wrong = {f"{p.relative_to(PACKAGE)} imports supamove.pipeline" for p in below if "pipeline" in supamove_imports(p)}
    wrong |= {f"{p.relative_to(PACKAGE)} imports supamove.{name}"
              for p in sources(*PIPELINE) for name in supamove_imports(p) if name in CLI_LAYER}
    assert sources(*PIPELINE) and not wrong, sorted(wrong)


def imported_packages(path: Path) -> set[str]:
    """The top-level package of everything `path` imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
    return names


def test_click_is_used_only_by_the_cli() -> None:
    users = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "click" in imported_packages(p)}
    assert users == {"cli/__init__.py", "cli/options.py"}


def test_no_function_outside_the_sandbox_is_over_40_lines() -> None:
    long = [f"{p.relative_to(PACKAGE)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in PACKAGE.rglob("*.py") if unit_of(p) != "sandbox"
            for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and (n.end_lineno or 0) - n.lineno + 1 > 40]
    assert not long, long


def test_the_cli_only_parses_and_renders() -> None:
    for module in (PACKAGE / "cli").glob("*.py"):
        assert len(module.read_text().splitlines()) < 300, module


def test_no_test_module_imports_another() -> None:
    tests = Path(__file__).parent
    wrong = {f"{p.name} imports {name}" for p in sorted(tests.glob("test_*.py"))
             for name in imported_packages(p) if name.startswith("test_")}
    assert not wrong, sorted(wrong)  # shared helpers live in conftest.py


def test_the_repository_tracks_no_file_a_run_leaves_behind() -> None:
    # stack.pid (a local Stack Auth's process id from someone's session) was committed at the root,
    # where an operator's clone showed it beside README.md.
    root = PACKAGE.parent.parent
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    leftovers = [name for name in tracked.splitlines() if name.endswith((".pid", ".log", ".partial"))
                 or name.startswith("tests/contract/node_modules")]  # npm's, installed by .ci/run (a link, too)
    assert leftovers == []
