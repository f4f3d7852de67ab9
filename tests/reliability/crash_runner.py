"""`tablesync run`, plus phase markers: the process the crash tests SIGKILL.

Run as ``python crash_runner.py <marks file> <sync.toml>``. It wraps four library methods
at class level so that entering and leaving each phase appends one line to the marks file
(``+push``/``-push``: the apply RPC in flight; ``+ack``: recording the outcomes;
``+pull``: a catch-up; ``+apply``: the local apply transaction), then runs the real
``tablesync run`` command. Each line is one unbuffered ``write(2)`` with ``O_APPEND``, so
after a SIGKILL the file says exactly which phases were open. The wrappers only observe:
they call the original method with the same arguments and return (or raise) what it did.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable


def _install(fd: int) -> None:
    from tablesync.cycles import Cycles
    from tablesync.remote.rest import RestRemote
    from tablesync.store import LocalStore

    def wrap(cls: type, name: str, tag: str) -> None:
        orig: Callable[..., Any] = getattr(cls, name)

        @functools.wraps(orig)
        def marked(self: Any, *args: Any, **kw: Any) -> Any:
            os.write(fd, f"+{tag}\n".encode())
            try:
                return orig(self, *args, **kw)
            finally:
                os.write(fd, f"-{tag}\n".encode())

        setattr(cls, name, marked)

    wrap(RestRemote, "apply", "push")
    wrap(LocalStore, "ack", "ack")
    wrap(LocalStore, "apply_remote", "apply")
    wrap(Cycles, "catch_up", "pull")
    if os.environ.get("CRASH_TRACE"):
        _trace(fd, LocalStore)


def _trace(fd: int, store: type) -> None:
    """Diagnostics: one line per acknowledged change and per applied remote row."""
    ack, apply_remote = store.ack, store.apply_remote

    def traced_ack(self: Any, changes: Any, outcomes: Any) -> Any:
        lines = [f"#ack {c.table} {c.record_id} {c.state.version.hlc} {o.get('outcome')} "
                 f"q={','.join(map(str, c.queue_ids))}" for c, o in zip(changes, outcomes)]
        os.write(fd, ("\n".join(lines) + "\n").encode())
        return ack(self, changes, outcomes)

    def traced_apply(self: Any, table: str, rows: Any) -> Any:
        rows = list(rows)
        lines = [f"#rem {table} {r.get('id')} {r.get('_ts_hlc')} {r.get('_ts_origin')}"
                 for r in rows]
        os.write(fd, ("\n".join(lines) + "\n").encode())
        return apply_remote(self, table, rows)

    store.ack, store.apply_remote = traced_ack, traced_apply


def main(argv: list[str]) -> int:
    marks, config = argv
    fd = os.open(marks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"=run {os.getpid()}\n".encode())
    _install(fd)
    if os.environ.get("CRASH_TRACE"):
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(threadName)s %(name)s %(message)s")
    from tablesync.cli import app

    try:
        app(["run", "--config", config], standalone_mode=False)
    finally:
        os.write(fd, b"=stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
