"""The ``tablesync`` command line: parses arguments, calls the library, prints results.

The only module that imports typer. Every :class:`~tablesync.errors.TablesyncError` is
turned into one red line on stderr and a non-zero exit; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, TypeVar

import typer

from tablesync.errors import ConfigError, TablesyncError

app = typer.Typer(
    help="Offline-first sync between local SQLite databases and Supabase.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
sync_app = typer.Typer(help="Operate a system's sync: now, status, conflicts, reset.",
                       no_args_is_help=True)
app.add_typer(sync_app, name="sync")

F = TypeVar("F", bound=Callable[..., Any])
_state = {"debug": False}

EXIT_ERROR = 1
EXIT_CONFIG = 2


def handle_errors(func: F) -> F:
    """Turn TablesyncError into one line on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TablesyncError as exc:
            if _state["debug"]:
                raise
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_ERROR)
        except KeyboardInterrupt:
            raise typer.Exit(130)

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    """tablesync: declarative table sync between SQLite and Supabase."""
    _state["debug"] = debug


@app.command()
def version() -> None:
    """Print tablesync's version."""
    from importlib.metadata import version as _v

    typer.echo(_v("tablesync"))


@app.command()
@handle_errors
def devserver(
    port: int = typer.Option(54321, "--port", help="HTTP port (0 = any free port)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data directory (PostgreSQL "
                                        "cluster + JWT secret); a temporary one if omitted."),
    json_out: bool = typer.Option(False, "--json", help="Print URL and keys as one JSON line."),
    apply: List[Path] = typer.Option([], "--apply", help="SQL file to apply after the "
                                     "bootstrap (e.g. a generated supabase.sql); repeatable."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    jwt_exp: int = typer.Option(3600, "--jwt-exp", help="Access-token lifetime in seconds."),
) -> None:
    """Run the local Supabase-compatible backend (auth, REST, realtime) until Ctrl-C."""
    import signal
    import threading

    from tablesync.devserver.server import DevServer

    server = DevServer(data_dir=data, host=host, port=port, jwt_exp=jwt_exp, apply=apply)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    info = server.start()
    try:
        if json_out:
            typer.echo(json.dumps({"url": info.url, "anon_key": info.anon_key,
                                   "service_key": info.service_key}), nl=True)
        else:
            typer.echo(f"API URL:          {info.url}")
            typer.echo(f"anon key:         {info.anon_key}")
            typer.echo(f"service_role key: {info.service_key}")
            typer.echo("Press Ctrl-C to stop.")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()


def run() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
