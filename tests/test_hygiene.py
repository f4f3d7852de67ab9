"""Rules for the tests themselves (issue 12): shared helpers live in helper modules.

- no test module imports another test module (share through a non-``test_`` module:
  ``helpers``, ``reliability.stack``, ``web/pages.py``, ``property/convergence.py``...);
- no ``sys.path`` edits (``tests/`` and each non-package test folder are on it already);
- tablesync's own modules are imported plainly, never with ``pytest.importorskip`` (a
  broken import must fail loudly);
- one ``wait_for``, in ``tests/helpers.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
FILES = sorted(TESTS.rglob("*.py"))


def _rel(p: Path) -> str:
    return p.relative_to(TESTS).as_posix()


def _problems(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [f"{node.module or ''}.{a.name}" for a in node.names] + [node.module or ""]
        if any(part.startswith("test_") for n in names for part in n.split(".")):
            out.append(f"line {node.lineno}: imports a test module")
        if isinstance(node, ast.Attribute) and node.attr == "path" and \
                isinstance(node.value, ast.Name) and node.value.id == "sys":
            out.append(f"line {node.lineno}: touches sys.path")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr == "importorskip" and node.args and \
                isinstance(node.args[0], ast.Constant) and \
                str(node.args[0].value).split(".")[0] == "tablesync":
            out.append(f"line {node.lineno}: importorskip of tablesync's own module")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                node.name.lstrip("_") == "wait_for" and \
                path.name != "helpers.py":
            out.append(f"line {node.lineno}: a copy of wait_for (use helpers.wait_for)")
    return sorted(out, key=lambda m: int(m.split(":")[0].removeprefix("line ")))


@pytest.mark.parametrize("path", [p for p in FILES if p.name != "test_hygiene.py"], ids=_rel)
def test_test_module_hygiene(path: Path) -> None:
    assert _problems(path) == []


def test_hygiene_checker_catches_each_rule(tmp_path: Path) -> None:
    bad = tmp_path / "test_bad.py"
    bad.write_text("import sys\nimport test_other\nfrom tests.test_engine import x\n"
                   "sys.path.insert(0, '.')\nimport pytest\n"
                   "m = pytest.importorskip('tablesync.store')\n"
                   "ok = pytest.importorskip('playwright')\n"
                   "def _wait_for(c):\n    pass\n")
    assert _problems(bad) == [
        "line 2: imports a test module", "line 3: imports a test module",
        "line 4: touches sys.path", "line 6: importorskip of tablesync's own module",
        "line 8: a copy of wait_for (use helpers.wait_for)"]
