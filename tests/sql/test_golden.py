"""The generated SQL, byte for byte, against tests/golden/sql/<project>/.

A failure shows a unified diff. If the change is intended, refresh the files with
``python -m tests.sql.refresh_golden`` and commit them with the change (docs/generate.md,
"Golden files").
"""

from __future__ import annotations

import difflib
import sqlite3

import pytest

from refresh_golden import FILES, GOLDEN, PROJECTS, REFRESH, path, render

CASES = [(project, name) for project in PROJECTS for name in FILES]


@pytest.mark.parametrize(("project", "name"), CASES, ids=[f"{p}/{n}" for p, n in CASES])
def test_generated_sql_matches_golden(project: str, name: str) -> None:
    golden = path(project, name)
    assert golden.exists(), f"{golden} is missing; create it with: {REFRESH}"
    expected = golden.read_text(encoding="utf-8")
    actual = render(project)[name]
    if actual != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True),
            fromfile=f"golden/{project}/{name}", tofile=f"generated/{project}/{name}", n=2))
        pytest.fail(f"generated {name} of project {project!r} differs from {golden}.\n"
                    f"If the change is intended, run `{REFRESH}` and commit the result.\n"
                    f"{diff}", pytrace=False)


def test_every_project_has_a_golden_directory() -> None:
    on_disk = {p.name for p in GOLDEN.iterdir() if p.is_dir()}
    assert on_disk == set(PROJECTS), f"stale or missing golden directories; run `{REFRESH}`"


@pytest.mark.parametrize("project", sorted(PROJECTS))
def test_golden_sqlite_sql_runs_twice(project: str) -> None:
    """The pinned text is also valid: SQLite runs it, and again (idempotent)."""
    text = path(project, "sqlite.sql").read_text(encoding="utf-8")
    conn = sqlite3.connect(":memory:")
    conn.executescript(text)
    conn.executescript(text)


@pytest.mark.postgres
def test_awkward_supabase_sql_applies_twice(pg_dsn: str) -> None:
    """The awkward project's names and types are accepted by PostgreSQL too."""
    import psycopg

    text = path("awkward", "supabase.sql").read_text(encoding="utf-8")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(text.encode())
        conn.execute(text.encode())
