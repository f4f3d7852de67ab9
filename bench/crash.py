"""Crash-safety benchmark: the engine process SIGKILLed many times; nothing may be lost.

Run: ``.venv/bin/python -m bench.crash [--kills 60] [--seed 1]``

Starts a private PostgreSQL and the devserver, then runs the rig of
``tests/reliability/crash.py`` (the same code as the CI test, which plans 6 kills): a real
``tablesync run`` process behind the fault proxy (delay mode, 5/20/40 ms per chunk) is
killed with SIGKILL a random moment after a push, a catch-up or a local apply began
(targets rotate), ``PRAGMA integrity_check`` runs after every kill, the engine restarts,
and while all this happens the application and a dashboard keep writing. At the end the
rig checks the queue drained, server == replica == the LWW winner of every write, and the
server's audit trail (no version stored twice, none older over newer). Prints one line
per kill and the summary that docs/reliability.md quotes. Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the rig and the fault proxy live in the test suite

from reliability.crash import CrashRig  # noqa: E402

from tablesync.devserver import postgres  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (database, marks, engine log)")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="tablesync-crash-"))
    ok = False
    try:
        pg = postgres.start(base / "pgdata")
        try:
            dsn = pg.create_database("crash")
            postgres.bootstrap(dsn)
            work = base / "work"
            work.mkdir()
            t0 = time.monotonic()
            rig = CrashRig(work, dsn, seed=args.seed,
                           log=lambda m: print(f"[{time.monotonic() - t0:7.1f}s] {m}",
                                               flush=True))
            try:
                rig.setup()
                report = rig.run(args.kills)
                ok = True
            finally:
                if not ok:
                    print(f"failed; work folder kept: {base}", flush=True)
                    _dump(rig, base)
                rig.close()
        finally:
            pg.stop()
    finally:
        if ok and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    hit = report.phase_counts()
    print(f"result: {report.summary()}")
    print("kills by open phase: " + ", ".join(f"{k}={v}" for k, v in sorted(hit.items())))
    delays = sorted(k.delay for k in report.kills)
    print(f"kill delay after the phase opened: min {delays[0] * 1000:.0f} ms, "
          f"median {delays[len(delays) // 2] * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms")
    return 0


def _dump(rig: CrashRig, base: Path) -> None:
    """Save the server's tables and audit next to the replica for a post-mortem."""
    try:
        with (base / "server.txt").open("w") as out:
            for table in ("tasks", "results", "crash_audit"):
                subprocess.run([sys.executable, "-c", (
                    "import psycopg,sys;c=psycopg.connect(sys.argv[1]);"
                    "[print(*r, sep='|') for r in c.execute(sys.argv[2])]"),
                    rig.dsn, f"SELECT * FROM {table}"], stdout=out, check=False)
    except OSError as exc:
        print(f"could not dump the server: {exc}")


if __name__ == "__main__":
    sys.exit(main())
