"""Shared fixtures: env isolation, a real PostgreSQL server started by the suite."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TABLESYNC_* from the caller's shell; HOME points at a temp dir."""
    for key in list(os.environ):
        if key.startswith("TABLESYNC_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator["PostgresServer"]:
    """One real PostgreSQL cluster for the whole run, with a bootstrapped template DB."""
    from tablesync.devserver import postgres

    server = postgres.start(tmp_path_factory.mktemp("pgdata"))
    dsn = server.create_database("tablesync_template")
    postgres.bootstrap(dsn)
    yield server
    server.stop()


_db_counter = itertools.count()


@pytest.fixture
def pg_dsn(pg_server: "PostgresServer") -> Iterator[str]:
    """A fresh database (Supabase bootstrap applied) for one test; dropped afterwards."""
    name = f"t_{os.getpid()}_{next(_db_counter)}"
    dsn = pg_server.create_database(name, template="tablesync_template")
    yield dsn
    pg_server.drop_database(name)


if False:  # pragma: no cover - typing only
    from tablesync.devserver.postgres import PostgresServer


# Hypothesis profiles: "dev" locally (quick), "ci" when HYPOTHESIS_PROFILE=ci (.ci/run sets it).
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("dev", max_examples=50)
_hyp_settings.register_profile("ci", max_examples=200, deadline=None, print_blob=True)
_hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
