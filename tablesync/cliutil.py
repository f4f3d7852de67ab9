"""What every ``tablesync`` command shares: one red line per error and the exit codes.

Every :class:`~tablesync.errors.TablesyncError` becomes ``error: <message>`` on stderr and
exit code 1 (2 for a :class:`~tablesync.errors.ConfigError`); ``--debug`` shows the
traceback instead; Ctrl-C exits 130.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import typer

from tablesync.errors import ConfigError, TablesyncError

__all__ = ["BackfillProgress", "EXIT_CONFIG", "EXIT_ERROR", "announce_migration",
           "handle_errors", "state"]

F = TypeVar("F", bound=Callable[..., Any])
state = {"debug": False}

EXIT_ERROR = 1
EXIT_CONFIG = 2


def handle_errors(func: F) -> F:
    """Turn TablesyncError into one line on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TablesyncError as exc:
            if state["debug"]:
                raise
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_ERROR)
        except KeyboardInterrupt:
            raise typer.Exit(130)

    return wrapper  # type: ignore[return-value]


def announce_migration(project: Any, err: bool = False) -> None:
    """Migrate the database before the store opens it, printing every change made (on
    stderr with ``err``, for commands whose stdout is data)."""
    from tablesync.migrations import migrate_database

    db = project.config.database_path
    db.parent.mkdir(parents=True, exist_ok=True)
    for step in migrate_database(db, project):
        typer.echo(f"changed {db}: {step}", err=err)


class BackfillProgress:
    """Prints a progress bar line per table whose pre-existing rows are being pushed
    (``read()`` gives :attr:`StatusSnapshot.backfill`), from a thread that stops with the
    ``with`` block; a line when a table's count moved, at most every ``every`` seconds."""

    def __init__(self, read: Callable[[], dict[str, dict[str, Any]]],
                 every: float = 1.0) -> None:
        import threading

        self._read, self._every = read, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tablesync-progress",
                                        daemon=True)
        self._shown: dict[str, tuple[int, bool]] = {}
        self._done_before: set[str] = set()

    def __enter__(self) -> BackfillProgress:
        self._done_before = {t for t, b in self._safe_read().items() if b.get("finished")}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.show()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.show()

    def _safe_read(self) -> dict[str, dict[str, Any]]:
        try:
            return self._read()
        except TablesyncError:
            return {}

    def show(self) -> None:
        """Print the tables whose progress changed since the last call."""
        from tablesync.status import progress_bar

        for table, b in sorted(self._safe_read().items()):
            now = (int(b.get("done", 0)), bool(b.get("finished")))
            if table in self._done_before or not b.get("total"):
                continue                        # finished before this command, or empty
            if self._shown.get(table) != now:
                self._shown[table] = now
                typer.echo(progress_bar(table, b))
