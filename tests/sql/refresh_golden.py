"""Golden files of the generated SQL: render them in memory, and refresh them.

``tests/golden/sql/<project>/{sqlite.sql,supabase.sql}`` hold what ``tablesync generate``
writes for each project in :data:`PROJECTS`; ``tests/sql/test_golden.py`` fails on any
difference. After an intended change to the generators, refresh and review the diff::

    python -m tests.sql.refresh_golden

(from the repository root; ``make``'s venv: ``.venv/bin/python -m tests.sql.refresh_golden``).
Not a test module: ``test_golden.py`` imports it (``tests/sql/`` is on ``sys.path`` while
pytest collects that directory).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tablesync.generate import artifacts
from tablesync.project import load_project

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "sql"
FILES = ("sqlite.sql", "supabase.sql")
PROJECTS = {
    "sample": ROOT / "sync.toml",  # the repository's own sync.toml + schemas/
    "awkward": ROOT / "tests" / "fixtures" / "awkward" / "sync.toml",
}
REFRESH = "python -m tests.sql.refresh_golden"


@contextmanager
def _without_env_overrides() -> Iterator[None]:
    """Golden output must not depend on the caller's TABLESYNC_* environment."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("TABLESYNC_")}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def render(project: str) -> dict[str, str]:
    """``{file name: text}`` of the golden files of ``project``, generated now."""
    with _without_env_overrides():
        loaded = load_project(PROJECTS[project])
    arts = artifacts(loaded, Path("out"))
    return {a.path.name: a.text for a in arts if a.path.name in FILES}


def path(project: str, name: str) -> Path:
    return GOLDEN / project / name


def refresh() -> list[Path]:
    """Rewrite every golden file whose text differs; return the ones changed."""
    changed = []
    for project in PROJECTS:
        for name, text in render(project).items():
            target = path(project, name)
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
                changed.append(target)
    return changed


def main() -> int:
    changed = refresh()
    for p in changed:
        print(f"updated {p.relative_to(ROOT)}")
    if not changed:
        print("golden files are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
