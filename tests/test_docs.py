"""The docs cannot drift from the CLI: every command and flag in one is in the other.

The README holds the quick start and the runbook; the command and file references live in docs/.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from supamove.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
COMMANDS_MD = (ROOT / "docs" / "commands.md").read_text()
FILES_MD = (ROOT / "docs" / "files.md").read_text()
DOCS = {"README.md": README, "docs/commands.md": COMMANDS_MD, "docs/files.md": FILES_MD}
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
SHELL_BREAK = {"&&", "||", "|", ";", "#", ">", "2>&1"}


def options(command: click.Command) -> set[str]:
    """Every option string of a command, --help included."""
    params = command.get_params(click.Context(command, **main.context_settings))
    return {opt for p in params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}


COMMANDS: dict[str, click.Command] = dict(main.commands)
GLOBAL = options(main)


def section(text: str, heading: str) -> str:
    """The body of a markdown section, up to the next heading of the same or a higher level."""
    # Shell comments in code blocks are not headings: blank them out (same length) before searching.
    masked = FENCE.sub(lambda m: re.sub(r"(?m)^#", " ", m.group()), text)
    level = len(heading.split(" ", 1)[0])
    start = masked.index(f"\n{heading}\n") + len(heading) + 2
    end = re.search(rf"\n#{{1,{level}}} ", masked[start:])
    return text[start:start + end.start()] if end else text[start:]


REFERENCE = section(COMMANDS_MD, "## Command reference")


def reference_for(name: str) -> str:
    return section(REFERENCE, f"### `supamove {name}`")


def table_flags(text: str) -> set[str]:
    """The flags in the first cell of each row of a section's options table."""
    found: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| `-"):
            found |= set(FLAG.findall(line.split("|")[1]))
    return found


def code_snippets() -> list[str]:
    """Every line of every fenced block and every inline code span of the README and the docs."""
    found: list[str] = []
    for text in DOCS.values():
        found += [line for block in FENCE.findall(text) for line in block.splitlines()]
        found += INLINE.findall(FENCE.sub("", text))
    return found


def invocations() -> list[tuple[str | None, list[str]]]:
    """(command, the flags given to it) for every `supamove ...` written in the README's code."""
    found: list[tuple[str | None, list[str]]] = []
    for line in code_snippets():
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        for i, word in enumerate(words):
            if word != "supamove":
                continue
            rest: list[str] = []
            for token in words[i + 1:]:
                if token in SHELL_BREAK or token.startswith("#"):
                    break
                rest.append(token)
            # Global options are all flags, so the first other word is the command.
            command = next((t for t in rest if not t.startswith("-")), None)
            if command is not None and command.startswith("<"):  # a placeholder: supamove <command> --help
                continue
            found.append((command, [t.split("=", 1)[0] for t in rest if t.startswith("-")]))
    return found


def test_readme_opens_with_what_it_does_and_the_two_commands() -> None:
    opening = README.split("\n## ", 2)
    assert "Supabase" in opening[0] and "Stack Auth" in opening[0]
    quick = section(README, "## Quick start")
    assert "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && supamove demo" in quick
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(line for line in ci.splitlines() if "pytest" in line).strip()
    assert test_command in quick, f"the README's test command must be the one .ci/run runs: {test_command}"
    assert "bash .ci/run" in quick


@pytest.mark.parametrize("heading", [
    "## Migration Runbook", "### Overview", "### Prerequisites", "### Environment setup",
    "### Step 1: Pre-migration checks", "### Step 2: Export", "### Step 3: Migrate users",
    "### Step 4: Import", "### Step 5: Verify", "### Step 6: Post-migration tasks",
    "### Rollback procedure", "### Troubleshooting", "### User mapping retention (90 days)",
    "## Contents", "## Output and exit codes", "## Reference", "## Benchmark", "## Development",
])
def test_readme_has_section(heading: str) -> None:
    assert f"\n{heading}\n" in README


@pytest.mark.parametrize(("path", "heading"), [("docs/commands.md", "## Command reference"),
                                               ("docs/files.md", "## File reference")])
def test_references_live_in_docs_and_the_readme_links_them(path: str, heading: str) -> None:
    assert f"\n{heading}\n" in DOCS[path]
    assert f"]({path})" in section(README, "## Reference")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def test_readme_contents_lists_every_section_and_every_link_lands() -> None:
    contents = section(README, "## Contents")
    masked = FENCE.sub("", README)
    headings = {anchor(h) for h in re.findall(r"(?m)^#{2,3} (.+)$", masked)}
    listed = set(re.findall(r"\]\(#([^)]+)\)", contents))
    top = {anchor(h) for h in re.findall(r"(?m)^## (.+)$", masked)} - {"contents"}
    assert top <= listed, f"sections missing from the contents: {sorted(top - listed)}"
    assert listed <= headings, f"contents links to no heading: {sorted(listed - headings)}"


def test_links_between_the_readme_and_the_docs_land_on_a_heading() -> None:
    files = {name: {anchor(h) for h in re.findall(r"(?m)^#{1,4} (.+)$", FENCE.sub("", text))}
             for name, text in DOCS.items()}
    for name, text in DOCS.items():
        for target, fragment in re.findall(r"\]\(((?:\.\./)?(?:README|docs/\w+|\w+)\.md)?#([^)]+)\)", text):
            resolved = name if not target else str(Path(name).parent / target).replace("docs/../", "")
            assert fragment in files[resolved], f"{name}: a link to {resolved}#{fragment} lands on no heading"


def test_exit_codes_are_in_every_help_and_in_the_readme() -> None:
    from supamove.errors import INTERRUPTED, SupamoveError

    codes = {0, 1, INTERRUPTED} | {kind.exit_code for kind in SupamoveError.__subclasses__()}
    table = section(README, "## Output and exit codes")
    assert set(map(int, re.findall(r"(?m)^\| (\d+) \|", table))) == codes
    for name in [*COMMANDS, None]:
        result = CliRunner().invoke(main, [name, "--help"] if name else ["--help"])
        listed = re.findall(r"(?m)^ +(\d+)  \S", result.output.split("Exit codes:", 1)[1])
        assert set(map(int, listed)) == codes, f"supamove {name or ''} --help lists exit codes {listed}"


def test_env_example_lists_every_setting_with_a_comment() -> None:
    from supamove.config import Settings

    lines = (ROOT / ".env.example").read_text().splitlines()
    for name in Settings.model_fields:
        index = next((i for i, line in enumerate(lines) if line.startswith(f"{name}=")), None)
        assert index is not None, f".env.example lacks {name}"
        assert lines[index - 1].startswith("#"), f".env.example: {name} has no comment above it"
        assert name in README, f"the README does not mention the setting {name}"


def test_env_example_describes_the_target_as_the_runbook_prepares_it() -> None:
    # It said the target needs "the application schema already created" and "INSERT, SELECT and TRUNCATE":
    # an operator following it made the tables by hand, which `schema --apply` then refuses, and a user
    # that is not their owner, which the load refuses.
    lines = (ROOT / ".env.example").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("DATABASE_URL="))
    comment = " ".join(line for line in lines[:index][::-1][:4] if line.startswith("#"))
    assert "empty database" in comment and "supamove schema --apply" in comment, comment
    assert "own" in comment and "already created" not in comment, comment


def test_every_command_has_a_reference_section() -> None:
    documented = set(re.findall(r"^### `supamove ([a-z-]+)`$", REFERENCE, re.MULTILINE))
    assert documented == set(COMMANDS), (
        f"undocumented commands: {sorted(set(COMMANDS) - documented)}; "
        f"documented but absent from the CLI: {sorted(documented - set(COMMANDS))}")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_reference_table_lists_exactly_the_command_flags(name: str) -> None:
    in_cli = options(COMMANDS[name]) - {"-h", "--help"}
    in_readme = table_flags(reference_for(name))
    assert in_readme == in_cli, (f"supamove {name}: missing from the README {sorted(in_cli - in_readme)}, "
                                 f"not in the CLI {sorted(in_readme - in_cli)}")


def test_global_options_are_documented() -> None:
    in_readme = table_flags(section(REFERENCE, "### Global options"))
    assert in_readme == GLOBAL, f"global options: README {sorted(in_readme)}, CLI {sorted(GLOBAL)}"


def test_every_supamove_command_in_the_readme_exists() -> None:
    written = invocations()
    assert written, "the README shows no supamove command"
    for command, flags in written:
        if command is None:
            assert set(flags) <= GLOBAL, f"`supamove {' '.join(flags)}`: unknown global flag"
            continue
        assert command in COMMANDS, f"the README shows `supamove {command}`, which does not exist"
        unknown = set(flags) - options(COMMANDS[command]) - GLOBAL
        assert not unknown, f"the README gives `supamove {command}` flags it lacks: {sorted(unknown)}"


def test_every_flag_in_the_readme_exists() -> None:
    every = set(GLOBAL).union(*(options(c) for c in COMMANDS.values()))
    # A flag written on its own (`--disable-fk`, `--callback-url URL`); those on a `supamove` line
    # are checked against their command above, and other programs' flags are not supamove's.
    mentioned = {snippet.split()[0].split("=")[0] for snippet in code_snippets() if snippet.startswith("-")}
    assert mentioned, "the README mentions no flag"
    assert mentioned <= every, f"the README mentions flags no command has: {sorted(mentioned - every)}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_explains_flags_defaults_and_an_example(name: str) -> None:
    command = COMMANDS[name]
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output, f"supamove {name} --help has no Example: line"
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        assert param.help, f"supamove {name} {param.opts[0]} has no help text"
        if not param.is_flag and param.default not in (None, ()) and not param.multiple:
            assert param.show_default, f"supamove {name} {param.opts[0]}: default not shown in --help"
