"""``LocalStore.apply_remote``: the bulk path for fresh records gives exactly what the
per-row LWW path gives (rows, versions, queue, conflicts, conflict log, returned changes)
on mixed pages: fresh rows, rows older/newer/equal to a local version, pending local
inserts/edits/deletes, tombstones, partial rows, repeated records, rows of our own origin.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tablesync import clock
from tablesync.applied import Applied
from tablesync.errors import StoreError
from tablesync.inbox import Inbox, _Fresh
from tablesync.model import Op
from tablesync.project import Project, load_project
from tablesync.store import LocalStore

ROOT = Path(__file__).resolve().parent.parent
ME = "system-a"
IDS = [f"t{i}" for i in range(6)]
# how a record starts locally
KINDS = ("none", "synced", "synced+edited", "synced+deleted", "local-insert",
         "local-insert-acked", "row-without-version")


@pytest.fixture(scope="module")
def project() -> Project:
    return load_project(ROOT / "sync.toml")


def _row(rid: str, hlc: int, origin: str, *, deleted: bool = False,
         base: tuple[int, str] = (0, ""), title: str = "remote",
         drop: tuple[str, ...] = ()) -> dict[str, Any]:
    row = {"id": rid, "system_id": ME, "project_id": None, "title": title,
           "status": "pending", "priority": 1, "payload": None, "updated_at": None,
           "_ts_hlc": hlc, "_ts_origin": origin, "_ts_deleted": deleted,
           "_ts_base_hlc": base[0], "_ts_base_origin": base[1], "_ts_seq": 1, "_ts_xid": 1}
    for col in drop:
        row.pop(col, None)
    return row


class _NoBulk(_Fresh):
    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.keys = frozenset({"\0 no row has this column"})


@contextmanager
def per_row_only() -> Iterator[None]:
    """Every row through ``_apply_one`` (the bulk path takes nothing)."""
    with mock.patch("tablesync.inbox._Fresh", _NoBulk):
        yield


def _setup(store: LocalStore, db: Path, kinds: dict[str, str], h0: int) -> None:
    """Local state per record (app writes through plain sqlite3 + the capture triggers)."""
    synced = [rid for rid, k in kinds.items() if k.startswith("synced")]
    if synced:
        store.apply_remote("tasks", [_row(rid, h0, "B", title="synced") for rid in synced])
    app = sqlite3.connect(db, isolation_level=None)
    for rid, kind in kinds.items():
        if kind == "synced+edited":
            app.execute("UPDATE tasks SET title = 'local edit' WHERE id = ?", (rid,))
        elif kind == "synced+deleted":
            app.execute("DELETE FROM tasks WHERE id = ?", (rid,))
        elif kind in ("local-insert", "local-insert-acked"):
            app.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, 'local')",
                        (rid, ME))
        elif kind == "row-without-version":      # e.g. a row older than tablesync
            app.execute("UPDATE _tablesync_state SET applying = 1")
            app.execute("INSERT INTO tasks (id, system_id, title) VALUES (?, ?, 'old')",
                        (rid, ME))
            app.execute("UPDATE _tablesync_state SET applying = 0")
    app.close()
    acked = [c for c in store.pending() if kinds.get(c.record_id) == "local-insert-acked"]
    store.ack(acked, [{"outcome": "applied"}] * len(acked))
    store.pending()                              # versions of pending writes are final now


def _versions(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        found = [h for (h,) in conn.execute("SELECT hlc FROM _tablesync_meta UNION "
                                            "SELECT hlc FROM sync_queue")]
    finally:
        conn.close()
    return sorted(set(found))


def _copy(src: LocalStore, dest: Path) -> None:
    out = sqlite3.connect(dest)
    with src._lock:
        src._conn.backup(out)
    out.close()


def _dump(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    try:
        q = {"tasks": "SELECT * FROM tasks ORDER BY id",
             "meta": "SELECT * FROM _tablesync_meta ORDER BY table_name, record_id",
             # synced_at as pending/closed: the two runs close entries at different times
             "queue": "SELECT id, operation, table_name, record_id, record_data, synced_at IS "
                      "NULL, last_error, hlc FROM sync_queue ORDER BY id",
             "conflicts": "SELECT table_name, record_id, winner_version, loser_version, winner, "
                          "loser, reason FROM _tablesync_conflicts ORDER BY id",
             "state": "SELECT applying, hlc FROM _tablesync_state"}
        return {k: conn.execute(sql).fetchall() for k, sql in q.items()}
    finally:
        conn.close()


def _log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        entry.pop("resolved_at")
        out.append(entry)
    return out


def _changes(applied: Any) -> list[tuple[Any, ...]]:
    return [(c.table, c.record_id, c.op, c.state, dict(c.state.data)) for c in applied]


def _apply(project: Project, db: Path, log: Path, page: list[dict[str, Any]],
           variables: int | None = None) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    store = LocalStore.open(project, db, conflict_log=log)
    if variables is not None:
        store._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)
    try:
        try:
            result: Any = _changes(store.apply_remote("tasks", page))
        except StoreError as exc:
            result = ("refused", str(exc))
    finally:
        store.close()
    return result, _dump(db), _log(log)


def _both(project: Project, kinds: dict[str, str], make_page: Any,
          variables: int | None = None) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Set up once, copy, apply the same page with and without the bulk path."""
    with tempfile.TemporaryDirectory(prefix="tablesync-bulk-") as d:
        root = Path(d)
        seed = LocalStore.open(project, root / "seed.db", conflict_log=root / "seed.log")
        try:
            _setup(seed, root / "seed.db", kinds, clock.pack(clock.SystemClock().now_ms()))
            page = make_page(_versions(root / "seed.db"))
            _copy(seed, root / "bulk.db")
            _copy(seed, root / "rule.db")
        finally:
            seed.close()
        bulk = _apply(project, root / "bulk.db", root / "bulk.log", page, variables)
        with per_row_only():
            rule = _apply(project, root / "rule.db", root / "rule.log", page)
    return bulk, rule


def test_mixed_page_bulk_and_per_row_agree(project: Project) -> None:
    kinds = dict(zip(IDS, KINDS[1:]))            # t0..t5: every kind but "none"

    def page(versions: list[int]) -> list[dict[str, Any]]:
        low, high = versions[0], versions[-1]
        return [_row("n1", high + 5, "B", title="fresh"),                 # fresh
                _row("n2", low - 5, "C", title="fresh, old version"),      # fresh
                _row("n3", high + 1, "B", deleted=True),                   # fresh tombstone
                _row("n4", high + 2, "B", drop=("payload",)),              # partial
                _row("t0", low - 1, "C", title="older than synced"),
                _row("t1", high + 9, "C", title="beats the local edit"),
                _row("t2", low - 3, "C", title="loses to the local delete"),
                _row("t3", high + 3, ME, title="own origin, newer"),
                _row("t4", high + 4, "B", title="newer than acked"),
                _row("t5", high + 6, "B", title="over a row without version"),
                _row("n1", high + 7, "C", title="fresh again, newer"),     # repeat
                _row("n5", high + 8, "B", title="fresh, last")]

    bulk, rule = _both(project, kinds, page)
    assert bulk == rule
    changes, dump, log = bulk
    ops = {rid: op for _, rid, op, _, _ in changes}
    assert ops["n1"] is Op.UPDATE and ops["n2"] is Op.INSERT and ops["t5"] is Op.UPDATE
    assert "t0" not in ops and "t2" not in ops                       # the rule kept local
    titles = dict((r[0], r[3]) for r in dump["tasks"])
    assert titles["n1"] == "fresh again, newer" and "n3" not in titles
    assert [r for r in dump["queue"] if r[5] and r[3] == "t1"] == []  # superseded: closed
    assert "t1" in {e["record_id"] for e in log}                    # a logged conflict


@pytest.mark.parametrize("variables", [None, 600])
def test_long_mixed_page_bulk_and_per_row_agree(project: Project, variables: Any) -> None:
    """Runs of fresh rows longer than one multi-row INSERT, broken by rows for the rule;
    with 600 SQL variables a multi-row INSERT holds 75 task rows, not 100."""
    kinds = dict(zip(IDS, KINDS[1:]))

    def page(versions: list[int]) -> list[dict[str, Any]]:
        high = versions[-1]
        out = [_row(f"f{i}", high + i, "B", title=f"v{i}") for i in range(340)]
        for i in (17, 150, 151, 299):
            out.insert(i, _row(IDS[i % 6], high + 1000 + i, "C", title="rule"))
        out += [_row("f3", high + 5000, "C", title="again"), _row("f4", 1, "C", deleted=True)]
        return out

    bulk, rule = _both(project, kinds, page, variables)
    assert bulk == rule
    changes, dump, _ = bulk
    assert len(changes) == 345 and len(dump["tasks"]) == 340 + 5   # t2: deleted locally


def test_fresh_page_goes_through_the_bulk_path_lazily(project: Project,
                                                      tmp_path: Path) -> None:
    store = LocalStore.open(project, tmp_path / "a.db", conflict_log=tmp_path / "c.log")
    try:
        hlc = clock.pack(clock.SystemClock().now_ms())
        rows = [_row(f"r{i}", hlc + i, "B", title=f"n{i}") for i in range(1234)]
        with mock.patch.object(Inbox, "_apply_one", side_effect=AssertionError):
            applied = store.apply_remote("tasks", rows)
        assert isinstance(applied, Applied) and len(applied) == 1234
        assert all(isinstance(item, tuple) for item in applied._items)  # nothing built yet
        assert applied[1233].state.data["title"] == "n1233"
        assert applied[1233].op is Op.INSERT and applied[1233].record_id == "r1233"
        conn = sqlite3.connect(tmp_path / "a.db")
        assert conn.execute("SELECT count(*) FROM sync_queue").fetchone() == (0,)  # no echo
        assert conn.execute("SELECT count(*), max(hlc) FROM _tablesync_meta").fetchone() == (
            1234, hlc + 1233)
        assert conn.execute("SELECT title FROM tasks WHERE id = 'r1233'").fetchone() == (
            "n1233",)                                # the remainder after 12 x 100 rows
        conn.close()
        assert store.clock >= hlc + 1233
        # the same rows again are duplicates for the rule: nothing applied
        assert store.apply_remote("tasks", rows) == []
    finally:
        store.close()


def test_bulk_path_refusal_rolls_back_everything(project: Project, tmp_path: Path) -> None:
    store = LocalStore.open(project, tmp_path / "a.db", conflict_log=tmp_path / "c.log")
    try:
        rows = [_row("ok", 5, "B"), _row("huge", 2**70, "B")]
        with pytest.raises(StoreError, match="apply_remote tasks"):
            store.apply_remote("tasks", rows)
        with pytest.raises(StoreError, match="malformed version"):
            store.apply_remote("tasks", [_row("bad", 5, "B") | {"_ts_hlc": "x"}])
        conn = sqlite3.connect(tmp_path / "a.db")
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM _tablesync_meta").fetchone() == (0,)
        assert conn.execute("SELECT applying FROM _tablesync_state").fetchone() == (0,)
        conn.close()
    finally:
        store.close()


@st.composite
def scenario(draw: st.DrawFn) -> tuple[dict[str, str], list[tuple[Any, ...]]]:
    ids = IDS[:4]
    kinds = {rid: draw(st.sampled_from(KINDS)) for rid in ids}
    specs = draw(st.lists(st.tuples(
        st.sampled_from(ids + ["n0", "n1"]),             # record (n*: never local)
        st.integers(0, 1000),                            # which known version (mod)
        st.integers(-2, 2),                              # offset from it
        st.sampled_from(["B", "C", ME]),                 # origin
        st.booleans() | st.just(False),                  # tombstone (less often)
        st.integers(0, 2),                               # base: zero / a known version / own
        st.booleans() | st.just(False) | st.just(False),  # partial row
        st.integers(0, 9),                               # title
    ), min_size=1, max_size=10))
    return kinds, specs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=scenario())
def test_bulk_and_per_row_agree_on_any_page(project: Project,
                                           case: tuple[dict[str, str], list[Any]]) -> None:
    kinds, specs = case

    def page(versions: list[int]) -> list[dict[str, Any]]:
        known = versions or [clock.pack(clock.SystemClock().now_ms())]
        out = []
        for rid, which, off, origin, deleted, base, partial, title in specs:
            v = known[which % len(known)]
            b = [(0, ""), (known[(which + 1) % len(known)], "B"), (v, ME)][base]
            out.append(_row(rid, v + off, origin, deleted=deleted, base=b,
                            title=f"v{title}", drop=("payload",) if partial else ()))
        return out

    bulk, rule = _both(project, kinds, page)
    assert bulk == rule
