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

__all__ = ["EXIT_CONFIG", "EXIT_ERROR", "announce_migration", "handle_errors", "state"]

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
