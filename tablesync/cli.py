"""The ``tablesync`` command line: parses arguments, calls the library, prints results.

With :mod:`tablesync.cli_sync` (the ``sync`` subcommands) and :mod:`tablesync.cliutil`
(error handling), the only modules that import typer. Every
:class:`~tablesync.errors.TablesyncError` is turned into one red line on stderr and a
non-zero exit; ``--debug`` shows the traceback. Global options set up logging
(:mod:`tablesync.logsetup`); ``--install-completion``/``--show-completion`` come from typer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from tablesync.cli_sync import sync_app
from tablesync.cliutil import (EXIT_ERROR, BackfillProgress, announce_migration, handle_errors,
                                state)
from tablesync.errors import TablesyncError

if TYPE_CHECKING:
    from tablesync.vault import Secret

app = typer.Typer(
    help="Offline-first sync between local SQLite databases and Supabase.",
    no_args_is_help=True, pretty_exceptions_enable=False,
)
app.add_typer(sync_app, name="sync")

# commands that log at INFO unless told otherwise (long-running: the log is their output)
INFO_COMMANDS = ("run", "demo", "devserver")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version as _v

        typer.echo(f"tablesync {_v('tablesync')}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    log_level: Optional[str] = typer.Option(
        None, "--log-level", envvar="TABLESYNC_LOG_LEVEL", metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default: INFO for run, demo and "
        "devserver, else WARNING)."),
    log_json: bool = typer.Option(False, "--log-json", envvar="TABLESYNC_LOG_JSON",
                                  help="Log one JSON object per line (ts, level, logger, "
                                  "msg)."),
    show_version: bool = typer.Option(False, "--version", callback=_print_version,
                                      is_eager=True, help="Print the version and exit."),
) -> None:
    """tablesync: declarative table sync between SQLite and Supabase."""
    from tablesync.logsetup import configure, parse_level

    state["debug"] = debug
    default = "INFO" if ctx.invoked_subcommand in INFO_COMMANDS else "WARNING"
    try:
        level = parse_level(log_level or default)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-level") from None
    ctx.call_on_close(configure(level, json_lines=log_json))


@app.command()
def version() -> None:
    """Print tablesync's version."""
    from importlib.metadata import version as _v

    typer.echo(_v("tablesync"))


@app.command()
@handle_errors
def generate(
    config: str = typer.Option("sync.toml", "--config", "-c", help="Path of sync.toml."),
    out: str = typer.Option("generated", "--out", "-o",
                            help="Output folder (relative to the current directory)."),
    supabase_dir: Optional[str] = typer.Option(
        None, "--supabase-dir",
        help="Supabase CLI folder for migrations/ and tablesync-schema.json "
             "(default: supabase/ next to sync.toml)."),
    check: bool = typer.Option(False, "--check",
                               help="Write nothing; exit 1 naming stale files or a due "
                                    "migration (for CI)."),
    migrate: bool = typer.Option(True, "--migrate/--no-migrate",
                                 help="Also migrate the local SQLite database if it exists."),
    accept_manual: bool = typer.Option(
        False, "--accept-manual",
        help="Record refused schema changes as done by hand (docs/schema-changes.md)."),
) -> None:
    """Write the migration due in supabase/migrations/, sqlite.sql, supabase.sql,
    realtime.json and schemas/sync.schema.json; migrate the local database."""
    from tablesync.generate import artifacts, stale as stale_files, write
    from tablesync.project import load_project
    from tablesync.supabase_migrations import due, plan, write_plan

    project = load_project(config)
    arts = artifacts(project, Path(out))
    sdir = Path(supabase_dir) if supabase_dir else project.config.base_dir / "supabase"
    todo = plan(project, sdir, accept=accept_manual)  # refuses before anything is touched
    if check:
        stale = stale_files(arts) + due(todo)
        if stale:
            typer.secho("error: stale generated file(s): " + ", ".join(map(str, stale))
                        + " (run `tablesync generate`)", fg=typer.colors.RED, err=True)
            raise typer.Exit(EXIT_ERROR)
        typer.echo("generated files are up to date")
        return
    db = project.config.database_path
    if migrate and db.exists():  # first: a refused migration leaves the files untouched
        from tablesync.migrations import migrate_database

        for step in migrate_database(db, project):
            typer.echo(f"changed {db}: {step}")
    for note in todo.diff.notes:
        typer.echo(f"note: {note}")
    for name in todo.diff.removed:
        typer.echo(f"table {name} is no longer synced: the server keeps its table and rows")
    changed = write(arts) + write_plan(todo)
    for path in changed:
        typer.echo(f"wrote {path}")
    if todo.migrations:
        typer.echo("next: apply the migration to the server (`supabase db push`), then "
                   "update the replicas (docs/schema-changes.md)")
    else:
        typer.echo("schema unchanged since the last migration: nothing changed")


@app.command()
@handle_errors
def check(
    config: str = typer.Option("sync.toml", "--config", "-c", help="Path of sync.toml."),
    examples: int = typer.Option(100, "--examples", "-n", min=1,
                                 help="Hypothesis examples (each: fresh replicas, empty tables)."),
    replicas: int = typer.Option(3, "--replicas", "-r", min=1, max=26,
                                 help="Replicas per example (each its own system id)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Fixed seed (same examples again)."),
    junit: Optional[str] = typer.Option(None, "--junit", help="Write a JUnit XML report here."),
) -> None:
    """Property-test conflict resolution on your own tables against a real PostgreSQL."""
    from pathlib import Path

    from tablesync.check import run_check

    result = run_check(config, examples=examples, replicas=replicas, seed=seed)
    if junit:
        Path(junit).write_text(result.junit(), encoding="utf-8")
    typer.echo(result.report())
    if not result.ok:
        raise typer.Exit(1)


HOSTED = "Hosted behaviours (docs/devserver.md)"
HOSTED_PAIRS = "Hosted behaviours, on/off"  # own panel: its second column would squeeze HOSTED's


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
    max_rows: int = typer.Option(
        1000, "--max-rows", rich_help_panel=HOSTED,
        help="PostgREST's max-rows: every GET (tables and set-returning RPCs) returns at "
        "most N rows."),
    statement_timeout: float = typer.Option(
        8.0, "--statement-timeout", rich_help_panel=HOSTED,
        help="Seconds a REST statement of role authenticated may run (hosted: 8; 0 = no "
        "limit)."),
    anon_statement_timeout: float = typer.Option(
        3.0, "--anon-statement-timeout", rich_help_panel=HOSTED,
        help="The same for role anon (hosted: 3)."),
    toast_omission: bool = typer.Option(
        True, "--toast-omission/--no-toast-omission", rich_help_panel=HOSTED_PAIRS,
        help="Omit unchanged values over 2 KB from Realtime UPDATE records, as logical "
        "decoding does."),
    realtime_rate_limit: int = typer.Option(
        100, "--realtime-rate-limit", rich_help_panel=HOSTED,
        help="Realtime messages per second per project beyond which changes are dropped "
        "silently (hosted free plan: 100; 0 = no limit)."),
    private_only_channels: bool = typer.Option(
        False, "--private-only-channels", rich_help_panel=HOSTED,
        help="Refuse joins of public Realtime channels (hosted: 'Allow public access' off)."),
    realtime_max_payload_kb: int = typer.Option(
        256, "--realtime-max-payload-kb", rich_help_panel=HOSTED,
        help="Largest Broadcast payload in KB; larger ones are dropped (hosted free: 256)."),
    refresh_lock_timeout: float = typer.Option(
        5.0, "--refresh-lock-timeout", rich_help_panel=HOSTED,
        help="Seconds a token refresh waits for a concurrent refresh of the same token "
        "before 409 conflict (GoTrue: 5)."),
    jwt_signing: str = typer.Option("hs256", "--jwt-signing", rich_help_panel=HOSTED,
                                    help="Access-token signing: hs256 (legacy JWT secret) "
                                    "or asymmetric (ES256; public key in the JWKS of "
                                    "/auth/v1)."),
    faults: bool = typer.Option(
        False, "--faults", rich_help_panel=HOSTED,
        help="Enable fault injection and the /_devserver/ hooks (service-role key)."),
) -> None:
    """Run the local Supabase-compatible backend (auth, REST, realtime) until Ctrl-C."""
    import signal
    import threading

    from tablesync.devserver.errors import DevServerError
    from tablesync.devserver.server import DevServer

    try:
        server = DevServer(
            data_dir=data, host=host, port=port, jwt_exp=jwt_exp, apply=apply,
            enable_faults=faults, max_rows=max_rows, statement_timeout=statement_timeout,
            anon_statement_timeout=anon_statement_timeout, toast_omission=toast_omission,
            realtime_rate_limit=realtime_rate_limit,
            private_only_channels=private_only_channels,
            realtime_max_payload_kb=realtime_max_payload_kb,
            refresh_lock_timeout=refresh_lock_timeout, jwt_signing=jwt_signing)
    except DevServerError as exc:
        raise TablesyncError(exc.args[0], hint=exc.hint) from exc
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        info = server.start()
    except DevServerError as exc:  # the devserver has its own errors; one red line here too
        raise TablesyncError(exc.args[0], hint=exc.hint) from exc
    try:
        if json_out:
            typer.echo(json.dumps({"url": info.url, "anon_key": info.anon_key,
                                   "service_key": info.service_key,
                                   "publishable_key": info.publishable_key,
                                   "secret_key": info.secret_key}), nl=True)
        else:
            typer.echo(f"API URL:          {info.url}")
            typer.echo(f"anon key:         {info.anon_key}")
            typer.echo(f"service_role key: {info.service_key}")
            typer.echo(f"publishable key:  {info.publishable_key}")
            typer.echo(f"secret key:       {info.secret_key}")
            typer.echo("Press Ctrl-C to stop.")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        server.cleanup()


@app.command("run")
@handle_errors
def run_engine(
    config: str = typer.Option("sync.toml", "--config", "-c", help="Path of sync.toml."),
) -> None:
    """Run the sync engine in the foreground until Ctrl-C."""
    import signal
    import threading

    from tablesync import daemon
    from tablesync.daemon import build_engine
    from tablesync.project import load_project
    from tablesync.web.server import StatusServer

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    project = load_project(config)
    announce_migration(project)
    with build_engine(project) as engine:
        engine.on_state(lambda st: typer.echo(
            f"state: {st.state}" + (f" ({st.reason})" if st.reason else "")))
        status = StatusServer.from_config(engine, project.config.status)
        if status is not None:
            status.start()
            daemon.write_control(project, status.url, status.csrf_token, status.api_token)
            typer.echo(f"status page: {status.login_link()}  (one-time link; "
                       f"`tablesync sync page` prints a fresh one)")
        engine.start()
        try:
            with BackfillProgress(engine.store.backfill_progress):
                while not stop.wait(0.5):
                    pass
        finally:
            if status is not None:
                daemon.remove_control(project)
                status.stop()
    typer.echo("stopped")


def _password(prompt: str) -> Secret:
    import os

    from tablesync.vault import Secret

    value = os.environ.get("TABLESYNC_SUPABASE__PASSWORD") or typer.prompt(
        prompt, hide_input=True)
    return Secret(value)


@app.command()
@handle_errors
def login(
    config: str = typer.Option("sync.toml", "--config", "-c", help="Path of sync.toml."),
    email: Optional[str] = typer.Option(None, "--email", help="Overrides [supabase] email."),
) -> None:
    """Sign in (email/password) and store the tokens encrypted; clears "re-auth required"."""
    from tablesync import session
    from tablesync.config import load_config

    cfg = load_config(config)
    tokens = session.login(cfg, _password("Password"), email=email)
    typer.echo(f"signed in (user {tokens.user_id}); tokens stored in "
               f"{cfg.resolve_path(cfg.paths.token_store)}")


@app.command()
@handle_errors
def provision(
    system_id: str = typer.Option(..., "--system-id", help="The system id to put in "
                                  "app_metadata.system_id."),
    email: str = typer.Option(..., "--email", help="The new user's email."),
    config: str = typer.Option("sync.toml", "--config", "-c", help="Path of sync.toml."),
) -> None:
    """Create a system's user through the admin API (needs TABLESYNC_SUPABASE__SERVICE_KEY)."""
    from tablesync import session
    from tablesync.config import load_config

    user = session.provision(load_config(config), system_id=system_id, email=email,
                             password=_password("New user's password"))
    typer.echo(f"created user {user['id']} ({email}) for system {system_id}")


@app.command()
@handle_errors
def docs(
    out: Path = typer.Option(Path("docs"), "--out", "-o", help="Folder of the docs."),
    check: bool = typer.Option(False, "--check",
                               help="Write nothing; exit 1 naming stale files (for CI)."),
) -> None:
    """Write the generated references docs/sync-toml.md and docs/cli.md."""
    from tablesync import docgen

    refs = docgen.references(app, out)
    stale = docgen.stale(refs)
    if check and stale:
        typer.secho("error: stale reference(s): " + ", ".join(map(str, stale))
                    + " (run `tablesync docs`)", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_ERROR)
    for path in [] if check else stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(refs[path], encoding="utf-8")
        typer.echo(f"wrote {path}")
    if not stale:
        typer.echo("references are up to date")


def _command_name() -> str:
    """How the user can call this tablesync again: ``tablesync`` when it is on PATH."""
    import os
    import shutil

    exe = os.path.abspath(sys.argv[0])
    found = shutil.which("tablesync")
    if found and os.path.abspath(found) == exe or not os.path.basename(exe).startswith(
            "tablesync"):
        return "tablesync"
    rel = os.path.relpath(exe)
    return rel if not rel.startswith("..") else exe


DEMO_SHUTDOWN_LIMIT = 45.0  # seconds; past it the demo exits hard (exit code 3)


@app.command()
@handle_errors
def demo(
    config: str = typer.Option("sync.toml", "--config", "-c", help="Path of sync.toml "
                               "(the tables of the demo)."),
    directory: Path = typer.Option(Path("data/demo"), "--dir", help="Demo folder: backend "
                                   "data, the two SQLite files, per-system configs."),
    port: int = typer.Option(54321, "--port", help="Backend HTTP port (0 = any free port)."),
    status_port: int = typer.Option(8787, "--status-port", help="system-a's status page "
                                    "port; system-b uses the next one (0 = free ports)."),
    duration: Optional[float] = typer.Option(None, "--duration", min=0, help="Stop after "
                                             "this many seconds (default: until Ctrl-C)."),
    reset: bool = typer.Option(False, "--reset", help="Delete the demo folder first "
                               "(only one an earlier demo created)."),
    json_out: bool = typer.Option(False, "--json", help="Print URLs, keys and paths as one "
                                  "JSON line instead of the instructions."),
) -> None:
    """Local demo: backend, two provisioned systems, two engines and status pages."""
    import os
    import signal
    import threading
    import time

    from tablesync.demo import Demo, instructions

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def on_state(system_id: str, state: str) -> None:
        if not json_out:
            typer.echo(f"{system_id}: {state}")

    demo_ = Demo(config, directory, port=port, status_port=status_port, reset=reset,
                 on_state=on_state)
    if not json_out:
        typer.echo(f"starting the local backend and two engines (files in {directory}) ...")
    info = demo_.start()
    try:
        if not demo_.connected:
            typer.secho("warning: the engines are not connected yet; their status pages "
                        "say why", fg=typer.colors.YELLOW, err=True)
        if json_out:
            typer.echo(json.dumps(info.to_dict(), sort_keys=True))
        else:
            typer.echo("\n" + instructions(info, _command_name()) + "\n")
        sys.stdout.flush()
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                break
    finally:
        if not json_out:
            typer.echo("stopping ...")
        def _give_up() -> None:
            typer.secho("error: shutdown took too long; exiting", fg=typer.colors.RED,
                        err=True)
            os._exit(3)

        watchdog = threading.Timer(DEMO_SHUTDOWN_LIMIT, _give_up)
        watchdog.daemon = True
        watchdog.start()
        demo_.stop()
        watchdog.cancel()
    typer.echo("stopped" if not json_out else json.dumps({"stopped": True}))


def run() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
