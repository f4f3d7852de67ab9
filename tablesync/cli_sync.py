"""``tablesync sync ...``: operate one system's sync from the shell (now, status, parked,
conflicts, reset). Each command asks a running engine (announced in
``<database>.engine.json``) when there is one, else works on the database itself.

Exit codes: ``sync status`` follows the indicator (0 green, 1 yellow, 2 red: the mapping
in docs/operations.md); the others 0 on success, 1 on an error, 2 on a config error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional, Tuple

import typer

from tablesync.cliutil import EXIT_ERROR, announce_migration, handle_errors

__all__ = ["sync_app"]

sync_app = typer.Typer(help="Operate a system's sync: now, status, parked, page, conflicts, "
                       "reset.",
                       no_args_is_help=True)

CONFIG = typer.Option("sync.toml", "--config", "-c", help="Path of sync.toml.")
STATUS_FIELDS = ("state", "indicator", "cause", "last_sync_at", "queue_depth",
                 "oldest_queued_at", "parked", "conflicts_24h", "websocket", "reauth_required",
                 "last_error")


@sync_app.command("now")
@handle_errors
def sync_now(
    config: str = CONFIG,
    as_json: bool = typer.Option(False, "--json", help="Print what was done as JSON."),
    wait: float = typer.Option(30.0, "--wait", min=0, help="With a running engine: seconds "
                               "to wait for its cycle to finish (0: just ask)."),
) -> None:
    """Push and catch up now, then print what was pushed and pulled (per table), conflicts,
    parked records and the duration. Asks the running engine, else syncs in this process."""
    from tablesync import daemon
    from tablesync.project import load_project

    project = load_project(config)
    running = daemon.running_engine(project)
    t0 = time.monotonic()
    if running is not None:
        report = daemon.sync_and_wait(running, wait)
    else:
        announce_migration(project, err=True)
        with daemon.build_engine(project) as engine:
            before = engine.store.stats()
            summary = engine.sync_once()
            after = engine.store.stats()
        report = {"by": "this process", "finished": True, "pushed": summary.pushed,
                  "pulled": summary.pulled, "applied": summary.applied,
                  "rejected": summary.rejected, "parked": summary.parked,
                  "conflicts": max(0, after.conflicts - before.conflicts),
                  "tables": summary.tables, "errors": summary.errors}
    report["duration_s"] = round(time.monotonic() - t0, 3)
    if as_json:
        typer.echo(json.dumps(report, sort_keys=True))
    else:
        _print_sync(report)
    if not report.get("finished", True):
        raise typer.Exit(EXIT_ERROR)


def _print_sync(r: dict[str, Any]) -> None:
    where = r["by"] if r["by"] == "this process" else f"the running engine ({r['by']})"
    if "pushed" not in r and r.get("finished"):
        typer.echo(f"sync requested from {where}")
        return
    if not r.get("finished", True):
        typer.echo(f"sync requested from {where}; not finished after {r['duration_s']} s"
                   + (f": {r['reason']}" if r.get("reason") else ""))
        return
    typer.echo(f"synced by {where} in {r['duration_s']:.2f} s: pushed {r['pushed']}, "
               f"pulled {r['pulled']}" + (f" (applied {r['applied']})" if "applied" in r
                                          else "")
               + f", conflicts {r['conflicts']}, parked {r['parked']}"
               + (f", rejected {r['rejected']}" if r.get("rejected") else ""))
    for table, counts in sorted(r.get("tables", {}).items()):
        applied = f", applied {counts['applied']}" if "applied" in counts else ""
        typer.echo(f"  {table}: pushed {counts['pushed']}, pulled {counts['pulled']}{applied}")
    for error in r.get("errors", []):
        typer.echo(f"  error: {error}")


@sync_app.command("page")
@handle_errors
def sync_page(
    config: str = CONFIG,
) -> None:
    """Print a fresh one-time link to the running engine's status page (open it in a
    browser; it sets the page's cookie). Reads the engine's 0600 token file."""
    from tablesync import daemon
    from tablesync.errors import TablesyncError
    from tablesync.project import load_project

    project = load_project(config)
    running = daemon.running_engine(project)
    if running is None:
        raise TablesyncError(f"no running engine with a status page for {config}",
                             hint="start one with `tablesync run` and [status] port set")
    try:
        link = daemon.request_link(running)
    except OSError as exc:
        raise TablesyncError(f"the engine at {running['url']} gave no page link: {exc}") from exc
    typer.echo(link)


@sync_app.command("status")
@handle_errors
def sync_status(
    config: str = CONFIG,
    as_json: bool = typer.Option(False, "--json", help="Print the snapshot as JSON."),
) -> None:
    """State, cause, last successful sync, queue, parked, conflicts (24 h). Exit code: 0
    green, 1 yellow, 2 red."""
    from tablesync import daemon
    from tablesync.causes import EXIT_CODES
    from tablesync.project import load_project
    from tablesync.snapshot import store_snapshot
    from tablesync.store import LocalStore

    project = load_project(config)
    running = daemon.running_engine(project)
    if running is not None:
        data = dict(running["status"])
    else:
        announce_migration(project, err=True)
        store = LocalStore.open(project)
        try:
            data = store_snapshot(store, project.config.system.id).to_dict()
        finally:
            store.close()
    if as_json:
        typer.echo(json.dumps(data, sort_keys=True))
    else:
        for key in STATUS_FIELDS:
            typer.echo(f"{key.replace('_', ' '):<18}{data.get(key)}")
    raise typer.Exit(EXIT_CODES.get(str(data.get("indicator")), EXIT_ERROR))


@sync_app.command("parked")
@handle_errors
def sync_parked(
    config: str = CONFIG,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per record."),
    retry: Optional[Tuple[str, str]] = typer.Option(
        None, "--retry", metavar="TABLE KEY",
        help="Release one record: a parked push is sent again, a refused pull applied again."),
    drop: Optional[Tuple[str, str]] = typer.Option(
        None, "--drop", metavar="TABLE KEY",
        help="Give one record up, after a 0600 JSON backup (printed)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only the push (parked) or the "
                                       "pull (refused) side of --retry/--drop."),
    backup_dir: Optional[Path] = typer.Option(None, "--backup-dir", help="Folder of --drop's "
                                              "backup (default: next to the database)."),
) -> None:
    """List parked pushes and refused pulls with their reasons; retry or drop one."""
    from tablesync import daemon
    from tablesync.errors import TablesyncError
    from tablesync.project import load_project
    from tablesync.store import LocalStore

    if retry and drop:
        raise TablesyncError("give --retry or --drop, not both")
    project = load_project(config)
    announce_migration(project, err=True)
    store = LocalStore.open(project)
    try:
        if retry:
            n = store.retry_parked(retry[0], retry[1], kind)
            typer.echo(f"released {retry[0]} {retry[1]!r} ({n} mark(s)); the next sync "
                       f"tries it again")
        elif drop:
            path = store.drop_parked(drop[0], drop[1], backup_dir, kind)
            typer.echo(f"dropped {drop[0]} {drop[1]!r}; backup in {path}")
        else:
            records = store.parked_records()
    finally:
        store.close()
    if retry or drop:
        running = daemon.running_engine(project)
        if running is not None and retry:
            daemon.request_sync(running)        # the engine picks the record up now
        return
    for rec in records:
        if as_json:
            typer.echo(json.dumps(rec.to_dict(), sort_keys=True, default=str))
        else:
            what = "push parked" if rec.kind == "push" else "pull refused"
            typer.echo(f"{rec.since}  {what:<12} {rec.table} {rec.record_id!r}: {rec.reason}")
    if not records and not as_json:
        typer.echo("nothing parked")


@sync_app.command("conflicts")
@handle_errors
def sync_conflicts(
    config: str = CONFIG,
    limit: int = typer.Option(50, "--limit", help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """List recorded conflicts (both versions), newest first."""
    from tablesync.project import load_project
    from tablesync.store import LocalStore

    project = load_project(config)
    announce_migration(project, err=True)
    store = LocalStore.open(project)
    try:
        rows = store.conflicts(limit)
    finally:
        store.close()
    for c in rows:
        if as_json:
            typer.echo(json.dumps(c, sort_keys=True, default=str))
        else:
            typer.echo(f"{c['resolved_at']}  {c['table']} {c['record_id']}: {c['reason']} "
                       f"(winner {c['winner'].get('version')}, loser {c['loser'].get('version')})")
    if not rows and not as_json:
        typer.echo("no conflicts")


@sync_app.command("reset")
@handle_errors
def sync_reset(
    config: str = CONFIG,
    discard_pending: bool = typer.Option(
        False, "--discard-pending",
        help="Drop unsynced changes (saved to a 0600 JSON lines backup file first)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Clear the queue and re-sync everything from the server (full catch-up)."""
    from tablesync import daemon
    from tablesync.project import load_project
    from tablesync.store import LocalStore

    project = load_project(config)
    if not yes:
        what = " and DISCARD unsynced changes (backed up first)" if discard_pending else ""
        typer.confirm(f"Reset sync state of {project.config.database_path}{what}?",
                      abort=True)
    running = daemon.running_engine(project)
    if running is not None:
        data = daemon.request_reset(running, discard_pending)
        discarded, backup = int(data.get("discarded", 0)), data.get("backup")
        removed = int(data.get("removed_rows", 0))
        where = f"by the running engine ({running['url']})"
    else:
        announce_migration(project, err=True)
        store = LocalStore.open(project)
        try:
            result = store.reset(discard_pending=discard_pending)
        finally:
            store.close()
        discarded, removed = result.discarded, result.removed_rows
        backup = str(result.backup) if result.backup else None
        where = "in the database (no running engine; the next sync catches up in full)"
    if backup:
        typer.echo(f"{discarded} unsynced change(s) saved to {backup}; "
                   f"{removed} never-synced row(s) removed locally")
    typer.echo(f"reset done {where}")
