"""docs/embedding.md's example, run for real: the script in its ```python block, as a user
runs it (a subprocess with a sync.toml path), against the devserver on the real PostgreSQL.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from reliability.stack import password, pg, start_backend, wait_for, write_config

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "embedding.md"
SYSTEM = "system-a"


def example_source() -> str:
    """The one ```python block of docs/embedding.md."""
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.M | re.S)
    assert len(blocks) == 1, "docs/embedding.md must have exactly one ```python block"
    return blocks[0]


def test_example_is_valid_python_using_the_public_api() -> None:
    source = example_source()
    compile(source, "embedding.md", "exec")
    assert "import tablesync\n" in source and "from tablesync" not in source


class _Lines:
    """A subprocess' stdout lines, read in a thread (so waits can time out)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: [self._queue.put(line) for line in stream],
                         daemon=True).start()

    def wait(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            while True:
                try:
                    self.seen.append(self._queue.get_nowait().rstrip("\n"))
                except queue.Empty:
                    break
            return next((m for line in self.seen if (m := re.search(pattern, line))), None)

        return wait_for(found, timeout, f"{pattern!r} in the app's output {self.seen}")


@pytest.mark.postgres
@pytest.mark.slow
def test_example_syncs_both_ways(pg_dsn: str, tmp_path: Path) -> None:
    srv = start_backend(pg_dsn, systems=(SYSTEM,))
    try:
        info = srv.info
        script = tmp_path / "app.py"
        script.write_text(example_source())
        config = write_config(tmp_path, info, SYSTEM)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
        env["TABLESYNC_SUPABASE__PASSWORD"] = password(SYSTEM)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        proc = subprocess.Popen([sys.executable, str(script), str(config)], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            out = _Lines(proc)
            task_id = out.wait(r"app: wrote task (\S+)").group(1)
            wait_for(lambda: pg(info.dsn, "SELECT title FROM tasks WHERE id = %s", task_id),
                     30, "the app's row on the server")
            out.wait(r"sync: connected")
            server_id = str(uuid.uuid4())
            pg(info.dsn, "INSERT INTO tasks (id, system_id, title) VALUES (%s, %s, %s)",
               server_id, SYSTEM, "written on the server")
            out.wait(rf"app: server \w+ task {server_id}: written on the server")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
            out.wait(r"app: stopped", 5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    finally:
        srv.stop()
