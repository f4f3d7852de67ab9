"""``tablesync check``: property tests of a user's own sync.toml against real PostgreSQL.

:func:`run_check` is the entry point (the CLI command and the pytest plugin call it); see
docs/testing-your-sync.md. Modules: :mod:`.cluster` (PostgreSQL with the generated
supabase.sql), :mod:`.remote_pg` (a Remote that calls the generated SQL directly),
:mod:`.values` (values an app would write), :mod:`.machine` (the Hypothesis state
machine), :mod:`.invariants`, :mod:`.script` (the readable counterexample),
:mod:`.runner`, :mod:`.pytest_plugin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tablesync.check.runner import CheckResult

__all__ = ["CheckResult", "run_check"]


def run_check(config: Any, **kw: Any) -> "CheckResult":
    """Run the check on the sync.toml at ``config`` (see :func:`tablesync.check.runner.
    run_check` for the options); imported lazily so ``import tablesync.check`` is cheap."""
    from tablesync.check.runner import run_check as run

    return run(config, **kw)


def __getattr__(name: str) -> Any:
    if name == "CheckResult":
        from tablesync.check.runner import CheckResult

        return CheckResult
    raise AttributeError(name)
