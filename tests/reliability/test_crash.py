"""Crash safety: the engine process SIGKILLed during push, pull and apply loses nothing.

A real `tablesync run` process (with phase markers, see ``crash_runner.py``) syncs one
system through the fault proxy (delay mode) while the application and a dashboard keep
writing; it is killed a random moment after a push, a catch-up or a local apply began,
the SQLite file is checked (``PRAGMA integrity_check``), and it is restarted. After the
last restart: the queue drains, server and replica agree, every row holds the LWW winner
of all the writes made, and the server's audit trail shows no version stored twice.
The benchmark run with 50+ kills is ``python -m bench.crash``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .crash import CrashRig

pytestmark = pytest.mark.postgres

CI_KILLS = 6


@pytest.mark.slow
def test_sigkill_in_push_pull_and_apply_loses_nothing(pg_dsn: str, tmp_path: Path) -> None:
    rig = CrashRig(tmp_path, pg_dsn, seed=20261124, log=print)
    try:
        rig.setup()
        report = rig.run(CI_KILLS)
    finally:
        rig.close()
    print(report.summary())
    assert len(report.kills) >= CI_KILLS and report.integrity_checks == len(report.kills)
    hit = report.phase_counts()
    # every targeted phase was really open at some kill (the marks prove it)
    for phase in ("push", "pull", "apply"):
        assert hit[phase] >= 1, f"no kill landed in {phase}: {hit}"
    assert report.app_writes > 100 and report.server_writes > 100
