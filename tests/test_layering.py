"""The import rules of docs/architecture.md, checked by parsing imports with ast."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "tablesync"

# third-party library -> module path prefixes allowed to import it
CONFINED = {
    "sqlglot": ("sql/",),
    "httpx": ("remote/rest.py", "devserver/"),
    "websockets": ("remote/realtime", "devserver/"),
    "typer": ("cli.py", "cli_sync.py", "cliutil.py"),
    "starlette": ("web", "devserver/"),
    "uvicorn": ("web", "devserver/"),
    "psycopg": ("devserver/", "check/"),
    "psycopg_pool": ("devserver/",),
    "jwt": ("devserver/",),
    "cryptography": ("vault.py", "devserver/jwt.py"),
    "prometheus_client": ("web/prometheus.py",),
}
PURE = ("errors.py", "model.py", "clock.py", "lww.py", "backoff.py", "events.py", "machine.py",
        "status.py", "metrics.py", "causes.py", "activity.py")
EDGES = ("cli", "web", "devserver", "demo", "check")


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


# --- Layer order (docs/architecture.md, "Layers"): a module imports only from its own
# layer or a lower one. The table in the doc is the source of truth: it is parsed here, so
# a module missing from it, a stale row, or an upward import fails. Imports inside
# functions and under TYPE_CHECKING count too (they are dependencies all the same).

ARCHITECTURE = PKG.parent / "docs" / "architecture.md"


def _layer_table(markdown: str) -> dict[str, int]:
    """``{pattern: layer}`` from the table rows ``| 3. adapters | `store`, `sql/*` ... |``.

    A pattern is a module (``store``, ``remote/rest``, ``__init__``) or a package with
    everything under it (``sql/*``); parenthesised notes in the cell are ignored.
    """
    table: dict[str, int] = {}
    for line in markdown.splitlines():
        m = re.match(r"\|\s*(\d+)\.[^|]*\|([^|]*)\|", line)
        if m:
            cell = re.sub(r"\([^)]*\)", "", m.group(2))
            for pattern in re.findall(r"`([^`]+)`", cell):
                table[pattern] = int(m.group(1))
    return table


def _module_name(rel: str) -> str:
    """``remote/rest.py`` -> ``remote.rest``; ``sql/__init__.py`` -> ``sql``;
    the package's own ``__init__.py`` -> ``__init__``."""
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _layer_of(module: str, table: Mapping[str, int]) -> int | None:
    path = module.replace(".", "/")
    if path in table:
        return table[path]
    parts = path.split("/")
    for i in range(len(parts), 0, -1):
        layer = table.get("/".join(parts[:i]) + "/*")
        if layer is not None:
            return layer
    return None


def _tablesync_imports(source: str, importer: str, modules: set[str]) -> set[str]:
    """The tablesync modules ``source`` (module ``importer``) imports, resolved to the
    modules of ``modules`` (``from tablesync import lww`` -> ``lww``; a name that is not a
    submodule comes from the package itself: ``__init__``)."""

    def resolve(dotted: str) -> str:
        parts = dotted.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        return ".".join(parts) or "__init__"

    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "tablesync" or alias.name.startswith("tablesync."):
                    found.add(resolve(alias.name.removeprefix("tablesync").lstrip(".")))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = importer.split(".") if importer in _packages(modules) else \
                    importer.split(".")[:-1]
                base_parts = package[:len(package) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            elif node.module == "tablesync" or (node.module or "").startswith("tablesync."):
                base = (node.module or "").removeprefix("tablesync").lstrip(".")
            else:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                found.add(sub if sub in modules else resolve(base))
    found.discard(importer)
    return found


def _packages(modules: set[str]) -> set[str]:
    return {m.rsplit(".", 1)[0] for m in modules if "." in m}


def layer_violations(layers: Mapping[str, int], imports: Mapping[str, set[str]]) -> list[str]:
    """Every import of a module from a higher layer, as ``"a (layer 3) imports b (layer 4)"``."""
    out = []
    for module in sorted(imports):
        for target in sorted(imports[module]):
            if layers[target] > layers[module]:
                out.append(f"{module} (layer {layers[module]}) imports {target} "
                           f"(layer {layers[target]})")
    return out


def _package_layers() -> tuple[dict[str, int | None], dict[str, set[str]], dict[str, int]]:
    table = _layer_table(ARCHITECTURE.read_text(encoding="utf-8"))
    names = {_module_name(_rel(p)): p for p in MODULES}
    layers = {name: _layer_of(name, table) for name in names}
    imports = {name: _tablesync_imports(p.read_text(), name, set(names))
               for name, p in names.items()}
    return layers, imports, table


def test_every_module_is_in_the_layer_table() -> None:
    layers, _, table = _package_layers()
    missing = sorted(m for m, layer in layers.items() if layer is None)
    assert not missing, f"add these modules to the Layers table of docs/architecture.md: {missing}"
    stale = sorted(p for p in table
                   if not any(_layer_of(m, {p: 0}) is not None for m in layers))
    assert not stale, f"the Layers table names modules that do not exist: {stale}"


def test_imports_respect_the_layer_order() -> None:
    layers, imports, _ = _package_layers()
    known = {m: layer for m, layer in layers.items() if layer is not None}
    checked = {m: {i for i in imported if i in known}  # unplaced: the test above fails
               for m, imported in imports.items() if m in known}
    assert layer_violations(known, checked) == []


def test_layer_checker_flags_upward_imports() -> None:
    layers = {"model": 1, "config": 2, "store": 3, "project": 4, "cli": 5}
    imports = {"model": set(), "config": {"model"}, "store": {"model", "config", "project"},
               "project": {"store", "config"}, "cli": {"project", "store"}}
    assert layer_violations(layers, imports) == ["store (layer 3) imports project (layer 4)"]
    assert layer_violations(layers, {**imports, "store": {"config"}}) == []


def test_layer_table_and_import_resolution() -> None:
    table = _layer_table("| layer | modules | may use |\n|---|---|---|\n"
                         "| 1. foundations | `errors`, `model` | stdlib |\n"
                         "| 3. adapters | `sql/*` (sqlglot; not `web`), `store` | layers 1-3 |\n"
                         "| 5. edges | `__init__`, `cli` | anything |\n")
    assert table == {"errors": 1, "model": 1, "sql/*": 3, "store": 3, "__init__": 5, "cli": 5}
    assert [_layer_of(m, table) for m in ("sql", "sql.base", "store", "__init__", "web")] == [
        3, 3, 3, 5, None]
    modules = {"__init__", "lww", "store", "sql", "sql.base", "sql.sqlite", "project"}
    source = ("from tablesync import lww, Engine\nimport tablesync.sql.base\n"
              "from tablesync.sql import sqlite as sq\nfrom . import project\n"
              "from .sql.base import ident\nimport os\nfrom typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    from tablesync.project import Project\n")
    assert _tablesync_imports(source, "store", modules) == {
        "lww", "__init__", "sql.base", "sql.sqlite", "project"}
    assert _tablesync_imports("from . import base\nfrom .. import lww\n", "sql.sqlite",
                              modules) == {"sql.base", "lww"}


# -- the devserver is a separate program that ships in the same wheel ------------------------

DEVSERVER = "devserver/"
# the only library modules that may start a devserver, and only from inside a function
DEVSERVER_USERS = ("cli.py", "demo.py", "check/cluster.py", "check/remote_pg.py")


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolved_imports(path: Path) -> list[tuple[str, bool]]:
    module = _dotted(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(path.read_text(), package)


def _imports_in(source: str, package: str) -> list[tuple[str, bool]]:
    """Every imported module (``from a import b`` gives ``a`` and ``a.b``; relative imports
    resolved against ``package``), each with whether it runs at import time (not inside a
    function)."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((a.name, not in_function) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, not in_function))
            found.extend((f"{base}.{a.name}", not in_function) for a in node.names)
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                 ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


def _is_devserver(name: str) -> bool:
    return name == "tablesync.devserver" or name.startswith("tablesync.devserver.")


@pytest.mark.parametrize("path", [p for p in MODULES if _rel(p).startswith(DEVSERVER)], ids=_rel)
def test_devserver_imports_nothing_from_the_library(path: Path) -> None:
    """Only ``tablesync.devserver.*``, the stdlib and third-party libraries: no client errors,
    config, SQL generation or model (the caller passes in what the devserver needs)."""
    for name, _ in _resolved_imports(path):
        if name == "tablesync" or name.startswith("tablesync."):
            assert _is_devserver(name), f"{_rel(path)} imports {name}"


@pytest.mark.parametrize("path", [p for p in MODULES if not _rel(p).startswith(DEVSERVER)],
                         ids=_rel)
def test_library_never_imports_the_devserver_at_module_level(path: Path) -> None:
    """The core, the web page and ``__init__`` never import the devserver; ``cli``,
    ``demo`` and ``check`` (PostgreSQL via its postgres module, PostgREST's status map) only
    inside the functions that use it."""
    rel = _rel(path)
    for name, at_import_time in _resolved_imports(path):
        if not _is_devserver(name):
            continue
        assert rel in DEVSERVER_USERS, f"{rel} imports {name}"
        assert not at_import_time, f"{rel} imports {name} at module level (import it lazily)"


def test_layering_checks_see_relative_and_lazy_imports() -> None:
    """The two checks above are not rubber stamps."""
    source = ("from ..errors import TablesyncError\n"
              "from tablesync import devserver\n\n"
              "def f():\n    import tablesync.devserver.jwt\n")
    names = _imports_in(source, "tablesync.devserver")
    assert ("tablesync.errors", True) in names
    assert ("tablesync.errors.TablesyncError", True) in names
    assert ("tablesync.devserver", True) in names
    assert ("tablesync.devserver.jwt", False) in names
    assert not _is_devserver("tablesync.devserverx")
