"""The import rules of docs/architecture.md, checked by parsing imports with ast."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "tablesync"

# third-party library -> module path prefixes allowed to import it
CONFINED = {
    "sqlglot": ("sql/",),
    "httpx": ("remote/rest.py", "devserver/"),
    "websockets": ("remote/realtime", "devserver/"),
    "typer": ("cli.py",),
    "starlette": ("web", "devserver/"),
    "uvicorn": ("web", "devserver/"),
    "psycopg": ("devserver/",),
    "psycopg_pool": ("devserver/",),
    "cryptography": ("vault.py",),
}
PURE = ("errors.py", "model.py", "clock.py", "lww.py", "backoff.py", "machine.py",
        "status.py", "metrics.py")
EDGES = ("cli", "web", "devserver", "demo")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


MODULES = sorted(p for p in PKG.rglob("*.py"))


def _rel(p: Path) -> str:
    return p.relative_to(PKG).as_posix()


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_third_party_libraries_stay_in_their_module(path: Path) -> None:
    rel = _rel(path)
    for name in _imports(path):
        top = name.split(".")[0]
        if top in CONFINED:
            assert rel.startswith(CONFINED[top]), f"{rel} imports {top}"


@pytest.mark.parametrize("path", [PKG / p for p in PURE if (PKG / p).exists()], ids=_rel)
def test_pure_modules_use_stdlib_only(path: Path) -> None:
    import sys

    for name in _imports(path):
        top = name.split(".")[0]
        assert top == "__future__" or top in sys.stdlib_module_names or (
            name.startswith("tablesync.") and name.split(".")[1].removesuffix(".py") + ".py" in PURE
        ), f"{_rel(path)} imports {name}"


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_core_does_not_import_edges(path: Path) -> None:
    rel = _rel(path)
    if rel.startswith(EDGES) or rel in ("__init__.py", "__main__.py"):
        return
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "tablesync" and len(parts) > 1:
            assert parts[1] not in EDGES, f"{rel} imports {name}"
