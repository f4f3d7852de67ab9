"""The public API in ``tablesync/__init__.py``: sorted, complete, resolvable and cheap."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import tablesync
from tablesync import daemon, engine, errors, model, project

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_sorted_unique_and_every_name_resolves() -> None:
    exported = list(tablesync.__all__)
    assert exported == sorted(exported)
    assert len(set(exported)) == len(exported)
    assert [n for n in exported if getattr(tablesync, n, None) is None] == []


def _public_classes(module: object) -> set[str]:
    return {name for name, obj in vars(module).items()
            if inspect.isclass(obj) and not name.startswith("_")
            and obj.__module__ == getattr(module, "__name__")}


def test_every_error_class_is_exported() -> None:
    assert _public_classes(errors) <= set(tablesync.__all__)
    assert all(issubclass(getattr(tablesync, n), errors.TablesyncError)
               for n in _public_classes(errors))


def test_every_model_type_is_exported() -> None:
    assert _public_classes(model) <= set(tablesync.__all__)


def test_the_entry_points_are_the_library_objects() -> None:
    from tablesync.generate import artifacts, write  # the module's names, despite the function

    assert tablesync.load_project is project.load_project
    assert tablesync.Project is project.Project
    assert tablesync.Engine is engine.Engine
    assert tablesync.build_engine is daemon.build_engine
    assert callable(tablesync.generate) and callable(artifacts) and callable(write)


def test_import_tablesync_stays_cheap() -> None:
    """No devserver, web framework, database driver, CLI or metrics library on import."""
    heavy = ("tablesync.devserver", "tablesync.web", "tablesync.cli", "tablesync.demo",
             "starlette", "uvicorn", "psycopg", "psycopg_pool", "pgserver", "typer",
             "prometheus_client", "jwt")
    code = ("import sys, tablesync\n"
            f"heavy = {heavy!r}\n"
            "print(' '.join(m for m in sys.modules if m.split('.')[0] in heavy "
            "or m.startswith(heavy)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.split() == []


def test_nothing_imports_the_generate_module_through_the_package() -> None:
    """``tablesync.generate`` is the function, so ``from tablesync import generate`` (or
    ``import tablesync.generate as g``) gives the function, not the module: use
    ``from tablesync.generate import artifacts, write``."""
    import re

    bad = re.compile(r"^\s*(from tablesync import [^\n]*\bgenerate\b|import tablesync\.generate\b)",
                     re.M)
    offenders = [str(p.relative_to(ROOT)) for folder in ("tablesync", "tests", "bench")
                 for p in sorted((ROOT / folder).rglob("*.py"))
                 if p.name != "test_api.py" and bad.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
