"""The docs stay true: generated references are current, the quickstart's commands exist."""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tablesync import docgen
from tablesync.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _commands() -> dict[tuple[str, ...], Any]:
    return dict(docgen._commands(app))


def _options(callback: Any) -> set[str]:
    opts = {"--help"}
    for param in inspect.signature(callback).parameters.values():
        for decl in getattr(param.default, "param_decls", ()):
            opts.update(decl.split("/"))
    return opts


def _shell_lines(markdown: str) -> list[str]:
    """Commands in ```sh blocks (comments dropped, backslash continuations joined)."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _tablesync_invocations(line: str) -> list[list[str]]:
    """The argument lists of every ``tablesync`` call on a shell line (env prefixes,
    ``.venv/bin/`` and pipes/``&&`` handled)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    parts: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            parts.append([])
        else:
            parts[-1].append(token)
    out = []
    for words in parts:
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            words.pop(0)
        if words and Path(words[0]).name == "tablesync":
            out.append(words[1:])
    return out


def _check_invocation(args: list[str]) -> None:
    commands = _commands()
    args = [a for a in args if a != "--debug"]
    path: tuple[str, ...] = ()
    while args and (*path, args[0]) in {k[:len(path) + 1] for k in commands}:
        path = (*path, args.pop(0))
        if path in commands:
            break
    assert path in commands, f"`tablesync {' '.join(path)}` is not a command"
    known = _options(commands[path])
    for word in args:
        if word.startswith("-"):
            assert word.split("=", 1)[0] in known, f"`tablesync {' '.join(path)}` has no {word}"


def test_quickstart_commands_exist() -> None:
    text = (DOCS / "quickstart.md").read_text()
    calls = [c for line in _shell_lines(text) for c in _tablesync_invocations(line)]
    assert len(calls) >= 6  # the test would pass vacuously if the parsing broke
    for args in calls:
        _check_invocation(args)
    makefile = (ROOT / "Makefile").read_text()
    for line in _shell_lines(text) + _shell_lines((ROOT / "README.md").read_text()):
        if line.startswith("make "):
            assert re.search(rf"^{line.split()[1]}:", makefile, re.M), line


def test_the_checker_catches_a_wrong_command() -> None:
    with pytest.raises(AssertionError, match="no --nope"):
        _check_invocation(["sync", "status", "--nope"])
    with pytest.raises(AssertionError, match="not a command"):
        _check_invocation(["frobnicate"])
    assert _tablesync_invocations("X_Y=1 .venv/bin/tablesync run -c a.toml | cat") == [
        ["run", "-c", "a.toml"]]


@pytest.mark.parametrize("name", [docgen.SYNC_TOML_DOC, docgen.CLI_DOC])
def test_generated_references_are_current(name: str) -> None:
    refs = docgen.references(app, DOCS)
    assert not docgen.stale({DOCS / name: refs[DOCS / name]}), (
        f"docs/{name} is stale: run `tablesync docs`")


def test_docs_check_command(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["docs", "--check", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "stale" in res.output
    res = runner.invoke(app, ["docs", "--out", str(tmp_path)])
    assert res.exit_code == 0 and "wrote" in res.output
    res = runner.invoke(app, ["docs", "--check", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("path", list(_commands()), ids=" ".join)
def test_every_command_and_option_has_help(path: tuple[str, ...]) -> None:
    callback = _commands()[path]
    assert docgen._summary(callback.__doc__), f"{path} has no docstring"
    for name, param in inspect.signature(callback).parameters.items():
        if hasattr(param.default, "param_decls"):
            assert param.default.help, f"{' '.join(path)}: option {name} has no help"
    res = CliRunner().invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output


def test_cli_reference_matches_help_output() -> None:
    """Every option the reference lists appears in the command's real --help."""
    text = (DOCS / docgen.CLI_DOC).read_text()
    sections = re.split(r"^#+ `tablesync ([a-z -]+)`$", text, flags=re.M)
    checked = 0
    for name, body in zip(sections[1::2], sections[2::2]):
        res = CliRunner().invoke(app, [*name.split(), "--help"], terminal_width=200)
        assert res.exit_code == 0
        for opt in re.findall(r"^\| `(--[a-z-]+)", body, re.M):
            assert opt in res.output, f"{name}: {opt} not in --help"
            checked += 1
    assert checked >= 20


def test_sync_toml_reference_names_every_key() -> None:
    from tablesync.config import SyncConfig

    text = (DOCS / docgen.SYNC_TOML_DOC).read_text()
    for section, model, _ in docgen.SECTIONS:
        assert f"## `[{section}]`" in text
        for name, f in model.model_fields.items():
            assert f"| `{f.alias or name}` |" in text
    top = {n for n in SyncConfig.model_fields if n != "source"}
    assert top == {s.split(".")[0] for s, _, _ in docgen.SECTIONS}


def test_docs_link_to_existing_files() -> None:
    for doc in [*DOCS.glob("*.md"), ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
