"""Wiring: an :class:`~tablesync.engine.Engine` built from ``sync.toml`` with the real
REST and Realtime clients, the encrypted vault and a session (layer 4: orchestration).

``build_engine(project)`` is what ``tablesync run`` and embedding apps use; tests build
engines with their own remotes instead.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tablesync.engine import Engine
from tablesync.project import Project
from tablesync.remote.base import RealtimeChannel
from tablesync.remote.realtime import RealtimeClient
from tablesync.remote.rest import RestRemote
from tablesync.session import Session
from tablesync.store import LocalStore
from tablesync.vault import Secret, Vault

__all__ = ["build_engine", "control_path", "engine_api", "realtime_factory", "remove_control",
           "request_link", "request_reset", "request_sync", "running_engine", "sync_and_wait",
           "write_control"]


def realtime_factory(url: str, anon_key: str, channels: list[RealtimeChannel],
                     **kw: Any) -> RealtimeClient:
    """The default Realtime client (vsn 2.0.0, 25 s heartbeat)."""
    return RealtimeClient(url, anon_key, channels, **kw)


def build_engine(project: Project, *, store: LocalStore | None = None,
                 password: Secret | None = None) -> Engine:
    """An engine for ``project``: local-only without ``[supabase]``, else REST + Realtime
    with tokens from the vault at ``paths.token_store`` (password from the config/env)."""
    cfg = project.config
    if cfg.supabase is None:
        return Engine(project, store=store)
    sb = cfg.supabase
    remote = RestRemote(sb.url, sb.anon_key, tables={t.name: t for t in project.tables})
    if password is None and sb.password is not None:
        password = Secret(sb.password.get_secret_value())
    session = Session(remote, Vault(cfg.resolve_path(cfg.paths.token_store)), project=sb.url,
                      email=sb.email, password=password)
    remote.tokens = session
    factory = realtime_factory if cfg.sync.realtime else None
    return Engine(project, store=store, remote=remote, session=session,
                  realtime_factory=factory, own_remote=True)


# ------------------------------------------------------------ running-engine discovery

CONTROL_SUFFIX = ".engine.json"


def control_path(project: Project) -> Path:
    """Where a running engine announces its status server (next to the database)."""
    db = project.config.database_path
    return db.with_name(db.name + CONTROL_SUFFIX)


def write_control(project: Project, url: str, csrf_token: str, api_token: str = "") -> Path:
    """Announce a running engine: its URL and the API token the CLI authenticates with
    (0600: whoever reads it can use the status API and mint page links)."""
    path = control_path(project)
    data = json.dumps({"pid": os.getpid(), "url": url, "csrf_token": csrf_token,
                       "api_token": api_token}).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def remove_control(project: Project) -> None:
    control_path(project).unlink(missing_ok=True)


def running_engine(project: Project) -> dict[str, Any] | None:
    """The announced engine if its process lives and its status API answers, else None."""
    try:
        info = json.loads(control_path(project).read_text())
        pid, url = int(info["pid"]), str(info["url"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    token = str(info.get("api_token", ""))
    try:
        status = _http_json("GET", url + "/api/status", _auth(token))
    except OSError:
        return None
    return {"url": url, "csrf_token": str(info.get("csrf_token", "")), "api_token": token,
            "status": status}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def engine_api(engine: dict[str, Any], method: str, path: str, timeout: float = 5) -> Any:
    """Call the running engine's status API (``path`` like ``/api/parked``) with its API
    token; raises OSError with the engine's answer on failure."""
    return _http_json(method, engine["url"] + path, _auth(engine.get("api_token", "")),
                      timeout=timeout)


def request_link(engine: dict[str, Any]) -> str:
    """A fresh one-time link to the running engine's status page."""
    return str(engine_api(engine, "POST", "/api/link")["url"])


def request_sync(engine: dict[str, Any]) -> None:
    """Press "Sync now" on a running engine."""
    engine_api(engine, "POST", "/api/sync")


def request_reset(engine: dict[str, Any], discard_pending: bool) -> dict[str, Any]:
    """``sync reset`` on a running engine; raises StoreError with the engine's refusal."""
    from tablesync.errors import StoreError

    query = "?discard_pending=1" if discard_pending else ""
    try:
        return dict(engine_api(engine, "POST", "/api/reset" + query, timeout=120))
    except OSError as exc:
        raise StoreError(f"the running engine at {engine['url']} refused the reset: "
                         f"{exc}") from exc


def _http_json(method: str, url: str, headers: dict[str, str] | None = None,
               timeout: float = 5) -> Any:
    if not url.startswith("http://127.") and not url.startswith("http://[::1]"):
        raise OSError(f"refusing to contact a non-loopback engine at {url}")
    req = urllib.request.Request(url, method=method, headers=headers or {},
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read(1_000_000) or b"null")
    except urllib.error.HTTPError as exc:
        raise OSError(f"engine answered HTTP {exc.code}: {_error_text(exc)}") from exc
    except (urllib.error.URLError, ValueError) as exc:
        raise OSError(str(exc)) from exc


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read(100_000)).get("error", ""))
    except (ValueError, AttributeError, OSError):
        return ""


# ----------------------------------------------------------- `sync now` on a running engine

SYNC_POLL = 0.1                         # seconds between status reads while waiting


def sync_and_wait(engine: dict[str, Any], wait: float) -> dict[str, Any]:
    """Press "Sync now" on a running engine and wait (up to ``wait`` seconds) until its
    cycle is over: the last successful sync moved and the state is ``Connected``. What it
    pushed and pulled meanwhile comes from its ``/metrics`` counters, per table from the
    snapshot's ``tables`` (all of the engine's work in that time, whatever triggered it)."""
    url = engine["url"]
    auth = _auth(str(engine.get("api_token", "")))
    before, status = _counters(url, auth), dict(engine["status"])
    request_sync(engine)
    report: dict[str, Any] = {"by": url, "finished": wait <= 0, "requested": True}
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:          # bounded by `wait`
        time.sleep(SYNC_POLL)
        try:
            now = _http_json("GET", url + "/api/status", auth)
        except OSError as exc:
            report["reason"] = f"the engine stopped answering: {exc}"
            return report
        if now.get("state") in ("Failed", "Disconnected", "LocalOnly"):
            report["reason"] = f"{now.get('state')}: {now.get('last_error') or ''}".strip()
            status = now
            break
        if now.get("state") == "Connected" and now.get("last_sync_at") != status.get(
                "last_sync_at"):
            report["finished"] = True
            after = _counters(url, auth)
            report.update(
                pushed=int(after["pushed"] - before["pushed"]),
                pulled=int(after["pulled"] - before["pulled"]),
                conflicts=max(0, int(now.get("conflicts_24h", 0))
                              - int(status.get("conflicts_24h", 0))),
                parked=int(now.get("parked", 0)), queue_depth=int(now.get("queue_depth", 0)),
                tables=_table_deltas(status.get("tables"), now.get("tables")))
            return report
    if not report["finished"]:
        report.setdefault("reason", "timed out")
    return report


def _table_deltas(before: Any, after: Any) -> dict[str, dict[str, int]]:
    """Per table, what ``pushed``/``pulled`` grew by between two snapshots' ``tables``."""
    out: dict[str, dict[str, int]] = {}
    if not isinstance(after, dict):
        return out
    old = before if isinstance(before, dict) else {}
    for name, counts in after.items():
        was = old.get(name) or {}
        delta = {k: int(counts.get(k, 0)) - int(was.get(k, 0)) for k in ("pushed", "pulled")}
        if any(delta.values()):
            out[name] = delta
    return out


def _counters(url: str, headers: dict[str, str]) -> dict[str, float]:
    """The engine's pushed/pulled change counters from its ``/metrics``."""
    names = {"tablesync_changes_pushed_total": "pushed",
             "tablesync_changes_pulled_total": "pulled"}
    out = {"pushed": 0.0, "pulled": 0.0}
    if not url.startswith("http://127.") and not url.startswith("http://[::1]"):
        raise OSError(f"refusing to contact a non-loopback engine at {url}")
    try:
        req = urllib.request.Request(url + "/metrics", headers=headers)
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback
            text = resp.read(5_000_000).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return out
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            try:
                out[names[name]] = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return out
