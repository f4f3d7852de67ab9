"""The engine-side modules export sorted, existing names."""

from __future__ import annotations

import importlib

import pytest

MODULES = ["tablesync.backoff", "tablesync.machine", "tablesync.vault", "tablesync.session",
           "tablesync.engine", "tablesync.cycles", "tablesync.snapshot", "tablesync.daemon", "tablesync.remote.base",
           "tablesync.remote.rest", "tablesync.remote.realtime"]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_exists(name: str) -> None:
    mod = importlib.import_module(name)
    exported = list(mod.__all__)
    assert exported == sorted(exported)
    assert [n for n in exported if not hasattr(mod, n)] == []
