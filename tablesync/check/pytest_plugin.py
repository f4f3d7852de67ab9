"""pytest plugin: ``tablesync check`` as a test in an app's own suite.

Registered as the ``tablesync`` pytest11 entry point (or ``-p tablesync.check.pytest_plugin``).
A test marked ``@pytest.mark.tablesync_check(config="sync.toml", examples=20)`` gets the
``tablesync_check`` fixture: a function that runs the check and fails the test with the
shrunk script. Or call :func:`tablesync.check.run_check` yourself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from tablesync.check.runner import CheckResult, run_check


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "tablesync_check(config='sync.toml', examples=100, replicas=3, seed=None): "
        "run tablesync's convergence check on the app's sync.toml")


@pytest.fixture
def tablesync_check(request: pytest.FixtureRequest) -> Callable[..., CheckResult]:
    """A function running the check (options from the ``tablesync_check`` marker, then
    keyword arguments); it fails the test with the readable counterexample."""
    marker = request.node.get_closest_marker("tablesync_check")
    defaults: dict[str, Any] = dict(marker.kwargs) if marker else {}
    base = Path(str(request.node.path)).parent

    def run(**kw: Any) -> CheckResult:
        options = {**defaults, **kw}
        config = Path(options.pop("config", "sync.toml"))
        result = run_check(config if config.is_absolute() else base / config, **options)
        if not result.ok:
            pytest.fail(result.report(), pytrace=False)
        return result

    return run
