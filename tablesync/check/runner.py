"""Run the check: load the project, start PostgreSQL, run the machine, report.

:func:`run_check` returns a :class:`CheckResult` (never raises for a failing property:
the result holds the shrunk script and the message); configuration and startup problems
raise :class:`~tablesync.errors.TablesyncError` subclasses.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from xml.sax.saxutils import escape

from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky
from hypothesis.stateful import run_state_machine_as_test

from tablesync.check.cluster import Cluster
from tablesync.check.machine import Stats, machine_for
from tablesync.config import Project
from tablesync.errors import ConfigError

__all__ = ["CheckResult", "DEFAULT_EXAMPLES", "DEFAULT_REPLICAS", "DEFAULT_STEPS", "run_check"]

DEFAULT_EXAMPLES = 100
DEFAULT_REPLICAS = 3
DEFAULT_STEPS = 30


@dataclass
class CheckResult:
    """What a run found."""

    ok: bool
    examples: int
    steps: int
    conflicts: int
    superseded: int
    seconds: float
    postgres: str
    replicas: int
    seed: int | None
    message: str = ""                       # the failed property (empty when ok)
    script: list[str] = field(default_factory=list)   # the shrunk example's steps

    def summary(self) -> str:
        """One line: examples, steps, conflicts exercised, the PostgreSQL it ran on."""
        return (f"tablesync check: {'OK' if self.ok else 'FAILED'}: {self.examples} "
                f"example(s), {self.steps} step(s), {self.replicas} replicas, "
                f"{self.conflicts} conflict(s) logged, {self.superseded} push(es) "
                f"superseded, against {self.postgres} in {self.seconds:.1f} s"
                + (f" (seed {self.seed})" if self.seed is not None else ""))

    def report(self) -> str:
        """The summary, and on failure the property and the shrunk steps."""
        if self.ok:
            return self.summary()
        steps = "\n".join(f"{i:>3}. {s}" for i, s in enumerate(self.script, 1))
        return (f"{self.summary()}\n\nProperty violated:\n{self.message}\n\n"
                f"Shortest failing sequence found ({len(self.script)} steps):\n{steps}\n")

    def junit(self, name: str = "tablesync check") -> str:
        """A JUnit XML report with one test case."""
        failure = (f'<failure message="{escape(self.message.splitlines()[0][:200], {chr(34): "&quot;"})}">'
                   f"{escape(self.report())}</failure>" if not self.ok else "")
        return (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="tablesync" '
                f'tests="1" failures="{0 if self.ok else 1}" time="{self.seconds:.3f}">'
                f'<testcase classname="tablesync" name="{escape(name)}" '
                f'time="{self.seconds:.3f}">{failure}</testcase></testsuite>\n')


def run_check(config: str | os.PathLike[str] | Project, *, examples: int = DEFAULT_EXAMPLES,
              replicas: int = DEFAULT_REPLICAS, steps: int = DEFAULT_STEPS,
              seed: int | None = None, dsn: str | None = None,
              prepare: Callable[[Cluster], Any] | None = None) -> CheckResult:
    """Check ``config`` (a sync.toml path or a loaded project).

    Args:
        examples: Hypothesis examples (each a fresh set of replicas on emptied tables).
        replicas: replicas per example (each its own system id and scope).
        steps: the most steps per example.
        seed: a fixed seed (the same seed gives the same examples).
        dsn: an existing PostgreSQL database with Supabase's bootstrap (tests); None
            starts a private cluster (pgserver) for the run.
        prepare: called with the cluster after the schema is applied (tests use it to
            break the server's rule on purpose).
    """
    if replicas < 1 or replicas > 26 or examples < 1 or steps < 1:
        raise ConfigError("tablesync check: --replicas must be 1-26, --examples and steps "
                          "at least 1")
    if isinstance(config, Project):
        project = config
    else:
        from tablesync.project import load_project

        project = load_project(Path(config))
    started = time.monotonic()
    cluster = Cluster(project, dsn=dsn)
    stats = Stats()
    message = ""
    try:
        if prepare is not None:
            prepare(cluster)
        version = str(cluster.execute("SHOW server_version")[0][0]).split()[0]
        machine = machine_for(project, cluster, replicas, stats)
        options = settings(max_examples=examples, stateful_step_count=steps, deadline=None,
                           database=None, derandomize=False, print_blob=False,
                           report_multiple_bugs=False,
                           suppress_health_check=list(HealthCheck),
                           phases=[Phase.explicit, Phase.generate, Phase.shrink])
        try:
            _with_seed(seed, lambda: run_state_machine_as_test(machine, settings=options))
        except (AssertionError, Flaky) as exc:
            message = str(exc).strip() or type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - any crash of the stack is a finding
            # the step that raised is not in the script (it records finished steps):
            # Hypothesis' own notes list every rule call, the last one included
            notes = [n for n in getattr(exc, "__notes__", []) if "state." in n]
            message = f"{type(exc).__name__} in a step: {exc}" + (
                "\n\nThe rule calls (Hypothesis):\n" + "\n".join(notes) if notes else "")
    finally:
        cluster.close()
    return CheckResult(ok=not message, examples=stats.examples, steps=stats.steps,
                       conflicts=stats.conflicts, superseded=stats.superseded,
                       seconds=time.monotonic() - started, postgres=f"PostgreSQL {version}",
                       replicas=replicas, seed=seed, message=message,
                       script=stats.script.collapsed() if message else [])


def _with_seed(seed: int | None, run: Callable[[], None]) -> None:
    """Run with Hypothesis's global seed forced (what pytest's --hypothesis-seed sets),
    and the engine's log quiet (thousands of syncs; the script tells what happened)."""
    from hypothesis import core

    old = getattr(core, "global_force_seed", None)
    logger = logging.getLogger("tablesync")
    level, propagate = logger.level, logger.propagate
    quiet = logging.NullHandler()
    setattr(core, "global_force_seed", seed)
    logger.addHandler(quiet)
    logger.setLevel(logging.CRITICAL)
    logger.propagate = False
    try:
        run()
    finally:
        setattr(core, "global_force_seed", old)
        logger.removeHandler(quiet)
        logger.setLevel(level)
        logger.propagate = propagate
