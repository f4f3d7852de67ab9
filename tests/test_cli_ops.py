"""The operator's command line (issue 16 items 2 and 6): ``--version``, shell completion,
``--log-level``/``--log-json`` with UTC timestamps on every line, ``sync status``'s exit
code following the indicator, and ``sync parked`` listing, retrying and dropping records
(with a 0600 backup). Local-only configs: no backend needed; the log tests run the real
``python -m tablesync`` in a subprocess."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tablesync.cli import app
from tablesync.project import load_project
from tablesync.store import LocalStore
from tablesync.vault import Secret, Tokens, Vault

from reliability.stack import write_config

ROOT = Path(__file__).resolve().parents[1]
A = "system-a"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tablesync", *args], capture_output=True,
                          text=True, env=_env(**env), timeout=60, cwd=ROOT)


def _local_config(tmp: Path) -> Path:
    cfg = write_config(tmp, None, A)
    LocalStore.open(load_project(cfg)).close()      # create and migrate the database
    return cfg


def _app(tmp: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp / f"{A}.db", isolation_level=None, timeout=30)


def test_version_and_shell_completion() -> None:
    res = _cli("--version")
    assert res.returncode == 0 and re.fullmatch(r"tablesync \d+\.\d+\.\S+\n", res.stdout)
    runner = CliRunner()
    res2 = runner.invoke(app, ["--show-completion", "bash"], prog_name="tablesync")
    assert res2.exit_code == 0
    assert "complete -o default -F _tablesync_completion tablesync" in res2.output
    # ... and the completion answers: `tablesync sy<TAB>` -> sync
    res3 = runner.invoke(app, [], prog_name="tablesync",
                         env={"_TABLESYNC_COMPLETE": "complete_bash",
                              "COMP_WORDS": "tablesync sy", "COMP_CWORD": "1"})
    assert res3.output.split() == ["sync"]


def test_log_lines_carry_utc_timestamps_and_levels_in_text_and_json(tmp_path: Path) -> None:
    cfg = _local_config(tmp_path)
    res = _cli("sync", "reset", "--yes", "--config", str(cfg))   # logs one WARNING
    assert res.returncode == 0, res.stderr
    assert re.search(rf"^{STAMP} WARNING tablesync\.store: reset: queue cleared", res.stderr,
                     re.M), res.stderr
    runner = CliRunner()
    reset = ["sync", "reset", "--yes", "--config", str(cfg)]
    res2 = runner.invoke(app, ["--log-json", *reset])
    lines = [json.loads(line) for line in res2.stderr.splitlines()]
    assert lines and all(set(d) >= {"ts", "level", "logger", "msg"} for d in lines)
    assert re.fullmatch(STAMP, lines[0]["ts"]) and lines[0]["level"] == "WARNING"
    assert lines[0]["logger"] == "tablesync.store"
    # the environment chooses too; ERROR hides the warning, DEBUG shows more
    res2 = runner.invoke(app, reset, env={"TABLESYNC_LOG_LEVEL": "ERROR"})
    assert res2.exit_code == 0 and res2.stderr == ""
    res2 = runner.invoke(app, reset, env={"TABLESYNC_LOG_JSON": "1"})
    assert json.loads(res2.stderr.splitlines()[0])["level"] == "WARNING"
    res2 = runner.invoke(app, ["--log-level", "loud", "version"])
    assert res2.exit_code == 2 and "unknown log level 'loud'" in res2.output
    # the command left the root logger as it found it
    assert not [h for h in logging.getLogger().handlers if h.get_name() == "tablesync-cli"]


def test_run_logs_info_by_default(tmp_path: Path) -> None:
    cfg = _local_config(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "tablesync", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()                   # "state: local_only (...)"
        assert line.startswith("state: local_only"), line
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert re.search(rf"^{STAMP} INFO tablesync\.engine: engine: local_only", err, re.M), err


def test_sync_status_exit_code_follows_the_indicator(tmp_path: Path) -> None:
    cfg = _local_config(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["sync", "status", "--config", str(cfg), "--json"])
    data = json.loads(res.output)
    assert (data["state"], data["indicator"], data["cause"]) == ("Stopped", "yellow", "none")
    assert res.exit_code == 1                   # no engine running: yellow
    _app(tmp_path).execute("INSERT INTO tasks (id, system_id, title) VALUES ('t1', ?, 'x')",
                           (A,))
    store = LocalStore.open(load_project(cfg))
    store.park("tasks", "t1", "403 new row violates row-level security policy")
    store.close()
    res = runner.invoke(app, ["sync", "status", "--config", str(cfg)])
    assert res.exit_code == 2 and re.search(r"^indicator\s+red$", res.output, re.M)


def test_sync_parked_lists_retries_and_drops_with_a_backup(tmp_path: Path) -> None:
    cfg = _local_config(tmp_path)
    app_db = _app(tmp_path)
    app_db.execute("INSERT INTO tasks (id, system_id, title) VALUES ('t1', ?, 'x')", (A,))
    store = LocalStore.open(load_project(cfg))
    store.park("tasks", "t1", "403 new row violates row-level security policy")
    store.refuse("tasks", "t9", "CHECK constraint failed: title",
                 {"id": "t9", "system_id": A, "title": "", "_ts_hlc": 5}, 7)
    store.close()
    runner = CliRunner()
    res = runner.invoke(app, ["sync", "parked", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "push parked  tasks 't1': 403 new row violates row-level security" in res.output
    assert "pull refused tasks 't9': CHECK constraint failed: title" in res.output
    res = runner.invoke(app, ["sync", "parked", "--config", str(cfg), "--json"])
    records = [json.loads(line) for line in res.output.splitlines()]
    assert [(r["kind"], r["table"], r["record_id"]) for r in records] == [
        ("push", "tasks", "t1"), ("pull", "tasks", "t9")]
    res = runner.invoke(app, ["sync", "parked", "--config", str(cfg), "--retry", "tasks", "t1"])
    assert res.exit_code == 0 and "released tasks 't1'" in res.output, res.output
    res = runner.invoke(app, ["sync", "parked", "--config", str(cfg), "--retry", "tasks", "zz"])
    assert res.exit_code == 1 and "no parked record tasks 'zz'" in res.output
    res = runner.invoke(app, ["sync", "parked", "--config", str(cfg), "--drop", "tasks", "t9",
                              "--backup-dir", str(tmp_path / "backups")])
    assert res.exit_code == 0, res.output
    backup = Path(res.output.strip().rsplit("backup in ", 1)[1])
    assert backup.parent == tmp_path / "backups"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert json.loads(backup.read_text())["record_id"] == "t9"
    res = runner.invoke(app, ["sync", "parked", "--config", str(cfg)])
    assert res.output.strip() == "nothing parked"


def test_tokens_of_another_project_url_are_named(tmp_path: Path) -> None:
    cfg = tmp_path / "sync.toml"
    cfg.write_text(write_config(tmp_path, None, A).read_text().replace(
        "[sync]", '[supabase]\nurl = "http://127.0.0.1:9"\nanon_key = "k"\n'
        'email = "a@example.com"\n[sync]'))
    Vault(tmp_path / f"{A}-auth.json").save(Tokens(Secret("x"), Secret("y"), 4e9, "u",
                                                  "https://old.example.supabase.co"))
    res = CliRunner().invoke(app, ["sync", "now", "--config", str(cfg)])
    assert res.exit_code == 1
    assert ("stored tokens belong to https://old.example.supabase.co, this config points at "
            "http://127.0.0.1:9; run `tablesync login`") in res.output
