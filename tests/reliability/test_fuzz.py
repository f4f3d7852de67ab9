"""Issue 6 item 4 (fuzz): hostile sync.toml, schema SQL and remote payloads get a clear
tablesync error (or are accepted when valid), never a raw exception, never a lost row.

Entry points are the real ones: ``load_project``, the ``tablesync generate`` CLI,
``LocalStore.open``/``apply_remote``, ``validate_row``, the REST client against a loopback
HTTP server answering garbage, and the Realtime client's reader feeding the engine.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tablesync.cli import app
from tablesync.engine import Engine
from tablesync.errors import PayloadError, TablesyncError
from tablesync.project import Project, load_project
from tablesync.remote.base import TableChannel, validate_row
from tablesync.remote.realtime import RealtimeClient
from tablesync.remote.rest import RestRemote
from tablesync.store import LocalStore

from .fuzzing import (HOSTILE, JSONISH, TEXT, CannedServer, deep, examples, snapshot_db,
                      toml_dump)

ROOT = Path(__file__).resolve().parents[2]


def fuzz(n: int) -> settings:
    return settings(max_examples=examples(n), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
BASE = tomllib.loads((ROOT / "sync.toml").read_text())
TYPES = ["TEXT", "INTEGER", "REAL", "BLOB", "NUMERIC", "BOOLEAN", "JSON", "UUID", "DATE",
         "VARCHAR(10)", "DECIMAL(10,2)", "DOUBLE PRECISION", "BIGINT", "TIMESTAMPTZ",
         "INT[]", "POINT", "MONEY", "xml", "nonsense_type", "TEXT COLLATE NOCASE", ""]


def _workdir() -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="tablesync-fuzz-"))
    shutil.copytree(ROOT / "schemas", tmp / "schemas")
    return tmp


def _base_doc(tmp: Path) -> dict[str, Any]:
    doc = json.loads(json.dumps(BASE))
    doc["system"]["database"] = str(tmp / "fuzz.db")
    doc["paths"] = {"schemas": str(tmp / "schemas"), "token_store": str(tmp / "auth.json"),
                    "conflict_log": str(tmp / "conflicts.log")}
    return doc


def _load_and_generate(tmp: Path, cfg: Path) -> Project | None:
    """load_project + LocalStore.open + `tablesync generate`: typed errors only."""
    project: Project | None = None
    try:
        project = load_project(cfg)
    except TablesyncError as exc:
        assert str(exc).strip() and "Traceback" not in str(exc)
    if project is not None:
        try:
            LocalStore.open(project).close()
        except TablesyncError:
            pass
    result = CliRunner().invoke(app, ["generate", "--config", str(cfg), "--out",
                                      str(tmp / "generated"), "--no-migrate"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception                         # a crash, not a clear error
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code:
        assert result.output.strip().startswith("error:"), result.output
    if project is not None:
        assert result.exit_code == 0, result.output
    return project


# ------------------------------------------------------------------------ sync.toml


@fuzz(60)
@given(text=TEXT | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_random_sync_toml_text(text: str) -> None:
    tmp = _workdir()
    try:
        cfg = tmp / "sync.toml"
        cfg.write_text(text, encoding="utf-8", errors="replace")
        assert _load_and_generate(tmp, cfg) is None or text.strip() == ""
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _leaves(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in doc.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += _leaves(v, (*prefix, k))
    return out


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        doc = doc[k]
    if value is _DELETE:
        del doc[path[-1]]
    else:
        doc[path[-1]] = value


_DELETE = object()
MUTATION = st.one_of(st.just(_DELETE), JSONISH, HOSTILE)


@fuzz(60)
@given(data=st.data())
def test_mutated_sync_toml(data: st.DataObject) -> None:
    tmp = _workdir()
    try:
        doc = _base_doc(tmp)
        for _ in range(data.draw(st.integers(1, 3), label="mutations")):
            paths = _leaves(doc)
            if not paths:
                break
            path = data.draw(st.sampled_from(paths), label="path")
            kind = data.draw(st.sampled_from(["value", "rename", "extra"]), label="kind")
            if kind == "value":
                _set(doc, path, data.draw(MUTATION, label="value"))
            elif kind == "rename":
                parent = doc
                for k in path[:-1]:
                    parent = parent[k]
                parent[data.draw(HOSTILE, label="new name")] = parent.pop(path[-1])
            else:
                parent = doc
                for k in path[:-1]:
                    parent = parent[k]
                parent[data.draw(HOSTILE, label="extra key")] = data.draw(JSONISH)
        cfg = tmp / "sync.toml"
        cfg.write_text(toml_dump(doc), encoding="utf-8")
        _load_and_generate(tmp, cfg)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------- schema SQL

COLUMN = st.tuples(HOSTILE | st.just("c" * 5000), st.sampled_from(TYPES) | TEXT,
                   st.sampled_from(["", " NOT NULL", " PRIMARY KEY", " DEFAULT 1", " UNIQUE",
                                    " REFERENCES projects (id)", " REFERENCES nowhere (x)",
                                    " CHECK (1)", " GENERATED ALWAYS AS (1)", " DEFAULT (",
                                    " REFERENCES tasks (id)"]))


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@st.composite
def schema_sql(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(TEXT | st.sampled_from(["", ";", "CREATE TABLE", "CREATE TABLE tasks ()",
                                            "DROP TABLE tasks;", "CREATE TABLE tasks (id);"
                                            " CREATE TABLE tasks (id)", "SELECT 1",
                                            "CREATE VIEW tasks AS SELECT 1",
                                            "CREATE TABLE tasks (id TEXT PRIMARY KEY"]))
    table = draw(st.just("tasks") | HOSTILE)
    quote = draw(st.booleans())
    cols = draw(st.lists(COLUMN, max_size=6))
    body = ["id TEXT PRIMARY KEY", "system_id TEXT NOT NULL"][: draw(st.integers(0, 2))]
    for name, typ, extra in cols:
        body.append(f"{_quoted(name) if quote else name} {typ}{extra}")
    tail = draw(st.sampled_from(["", ";", "; CREATE TABLE other (x INT);", " WITHOUT ROWID",
                                 "; DROP TABLE projects;"]))
    return f"CREATE TABLE {_quoted(table) if quote else table} ({', '.join(body)}){tail}"


@fuzz(60)
@given(sql=schema_sql())
def test_garbage_schema_sql(sql: str) -> None:
    tmp = _workdir()
    try:
        (tmp / "schemas" / "tasks.sql").write_text(sql, encoding="utf-8")
        cfg = tmp / "sync.toml"
        cfg.write_text(toml_dump(_base_doc(tmp)), encoding="utf-8")
        _load_and_generate(tmp, cfg)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ remote payloads


@pytest.fixture(scope="module")
def project() -> Iterator[Project]:
    tmp = _workdir()
    cfg = tmp / "sync.toml"
    cfg.write_text(toml_dump(_base_doc(tmp)), encoding="utf-8")
    yield load_project(cfg)
    shutil.rmtree(tmp, ignore_errors=True)


def _valid_task(rid: str = "t-remote") -> dict[str, Any]:
    return {"id": rid, "system_id": "system-a", "project_id": None, "title": "from server",
            "status": "pending", "priority": 1, "payload": None, "updated_at": None,
            "_ts_hlc": 10**6 << 16, "_ts_origin": "server", "_ts_deleted": False,
            "_ts_base_hlc": 0, "_ts_base_origin": "", "_ts_seq": 7, "_ts_xid": 9}


@st.composite
def remote_row(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(JSONISH)                               # not even an object
    row: dict[str, Any] = _valid_task(draw(st.sampled_from(["t-remote", "keep", "queued"])))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "type", "unknown", "huge", "deep"]))
        key = draw(st.sampled_from(sorted(row))) if row else "id"
        if kind == "drop":
            row.pop(key, None)
        elif kind == "type":
            row[key] = draw(JSONISH)
        elif kind == "unknown":
            row[draw(HOSTILE)] = draw(JSONISH)
        elif kind == "huge":
            row[key] = draw(st.sampled_from(["x" * 1_000_000, 2**80, -2**80, 1e308, 10**30]))
        else:
            row[key] = deep(draw(st.integers(10, 500)))
    return row


def _seed(store: LocalStore, db: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT OR IGNORE INTO tasks (id, system_id, title) "
                 "VALUES ('keep', 'system-a', 'local row')")
    conn.execute("INSERT OR IGNORE INTO tasks (id, system_id, title) "
                 "VALUES ('queued', 'system-a', 'unsent edit')")
    conn.close()
    sent = [c for c in store.pending() if c.record_id == "keep"]
    store.ack(sent, [{"id": "keep", "outcome": "applied", "row": None}] * len(sent))


@fuzz(80)
@given(row=remote_row())
def test_remote_row_validation_and_apply(project: Project, row: Any) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tablesync-fuzz-db-"))
    try:
        db = tmp / "a.db"
        store = LocalStore.open(project, db, conflict_log=tmp / "c.log")
        try:
            _seed(store, db)
            before = snapshot_db(db)
            spec = project.table("tasks")
            try:
                validate_row(spec, row, where="fuzz tasks")
            except PayloadError as exc:
                assert "fuzz tasks" in str(exc)
                # what the engine does with a rejected row: nothing. The DB is unchanged.
                assert snapshot_db(db) == before
                return
            try:
                store.apply_remote("tasks", [row])
            except TablesyncError:
                assert snapshot_db(db) == before      # a refused apply changes nothing
        finally:
            store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@st.composite
def realtime_frame(draw: st.DrawFn) -> str:
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(TEXT)
    if choice == 1:
        return json.dumps(draw(JSONISH))
    if choice == 2:
        return "[" * draw(st.integers(1000, 200_000))
    data: Any = {"type": draw(st.sampled_from(["INSERT", "UPDATE", "DELETE", "insert", "X"])),
                 "table": draw(st.sampled_from(["tasks", "tasks", "projects", "nope"])),
                 "schema": "public", "commit_timestamp": "2026-01-01T00:00:00.000Z",
                 "record": draw(remote_row()), "old_record": {"id": "keep"},
                 "errors": draw(st.none() | st.lists(TEXT, max_size=2) | JSONISH)}
    if choice == 4:
        data = draw(JSONISH)
    payload = {"ids": [1], "data": data}
    return json.dumps(["1", None, "realtime:tasks", "postgres_changes", payload])


class _Frames:
    """An async iterator of text frames standing in for the socket."""

    def __init__(self, frames: list[str]) -> None:
        self._frames = iter(frames)

    def __aiter__(self) -> _Frames:
        return self

    async def __anext__(self) -> str:
        try:
            return next(self._frames)
        except StopIteration:
            raise StopAsyncIteration from None


@fuzz(60)
@given(frames=st.lists(realtime_frame(), min_size=1, max_size=3))
def test_realtime_frames_into_the_engine(project: Project, frames: list[str]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tablesync-fuzz-rt-"))
    try:
        db = tmp / "a.db"
        engine = Engine(project, store=LocalStore.open(project, db, conflict_log=tmp / "c.log"))
        try:
            _seed(engine.store, db)
            before = snapshot_db(db)
            applied: list[Any] = []

            def on_change(event: Any) -> None:
                applied.append(event)
                engine._apply_change(event)           # the engine's realtime handler

            client = RealtimeClient("http://127.0.0.1:9", "anon",
                                    [TableChannel("tasks", "system_id", "system-a")],
                                    on_change=on_change)
            for ch in client.channels.values():
                ch.join_ref = "1"
            asyncio.run(client._reader(_Frames(frames)))  # type: ignore[arg-type]
            spec = project.table("tasks")

            def acceptable(ev: Any) -> bool:
                try:                                  # the engine's documented rule
                    validate_row(spec, ev.record, partial=True)
                except PayloadError:
                    return False
                complete = all(c in ev.record for c in (*spec.column_names, "_ts_hlc"))
                return complete and ev.type != "DELETE" and not ev.errors
            if not any(acceptable(ev) for ev in applied):
                assert snapshot_db(db) == before
        finally:
            engine.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


BODY = st.one_of(
    st.binary(max_size=200),
    JSONISH.map(lambda v: json.dumps(v).encode()),
    st.lists(remote_row(), max_size=3).map(lambda v: json.dumps(v).encode()),
    st.integers(1000, 100_000).map(lambda n: b"[" * n + b"]" * n),
    st.just(b"[" + b"1," * 50_000 + b"1]"),
    st.just(b'{"x": NaN}'), st.just(b"\xff\xfe"),
)


@pytest.fixture(scope="module")
def canned() -> Iterator[CannedServer]:
    server = CannedServer()
    yield server
    server.stop()


@fuzz(60)
@given(body=BODY, status=st.sampled_from([200, 200, 200, 201, 400, 401, 403, 404, 409, 429,
                                          500, 503]),
       ctype=st.sampled_from(["application/json", "text/html"]))
def test_rest_client_on_garbage_answers(project: Project, canned: CannedServer, body: bytes,
                                        status: int, ctype: str) -> None:
    canned.status, canned.body, canned.ctype = status, body, ctype
    spec = project.table("tasks")
    with RestRemote(canned.url, "anon", tables={"tasks": spec}, timeout=5,
                    max_response=64 * 1024) as remote:
        for call in (lambda: remote.pull_page("tasks", "system_id", "system-a", 0, 0),
                     lambda: remote.apply("tasks", [_valid_task()]),
                     remote.watermark):
            try:
                result = call()
            except TablesyncError as exc:
                assert str(exc)
                continue
            if hasattr(result, "rows"):          # a pull page: only valid rows get through
                for r in result.rows:
                    validate_row(spec, r)


def test_deeply_nested_frame_is_dropped_and_the_reader_goes_on(project: Project) -> None:
    """Regression: a nested-array frame raised RecursionError out of the reader, which ended
    the Realtime client for good."""
    got: list[Any] = []
    client = RealtimeClient("http://127.0.0.1:9", "anon",
                            [TableChannel("tasks", "system_id", "system-a")],
                            on_change=got.append)
    for ch in client.channels.values():
        ch.join_ref = "1"
    good = json.dumps(["1", None, "realtime:tasks", "postgres_changes", {
        "ids": [1], "data": {"type": "INSERT", "table": "tasks", "schema": "public",
                             "record": _valid_task(), "errors": None}}])
    asyncio.run(client._reader(_Frames(["[" * 100_000, good])))  # type: ignore[arg-type]
    assert [e.record["id"] for e in got] == ["t-remote"]
    assert client.stats.malformed == 1
