"""Convergence: a Hypothesis state machine over 3 replicas and the in-memory server model.

The machine (not a test module): ``test_convergence.py`` runs it over ``ReplicaModel``
replicas and ``test_convergence_store.py`` subclasses it for ``LocalStore`` replicas
(``tests/property/`` is on ``sys.path`` while pytest collects that directory).

Replicas write offline and online with skewed clocks, push through a lossy network (drop,
duplicate, reorder, crash before the acknowledgement, transactions that commit late) and
pull by catch-up pages and by realtime-like deliveries (drop, duplicate, reorder). After a
full sync every replica and the server hold the same rows, every final value is the LWW
merge of all writes ever made, and every write lost to a concurrent one is in a conflict
log. See docs/correctness.md.

``ReplicaModel`` is a small pure stand-in for ``tablesync.store.LocalStore`` following the
same rules (meta versions + tombstones, a pending queue coalesced per record, a conflict log,
a pull cursor per table); the machine talks to it only through the ``Replica`` protocol.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Protocol

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from tablesync import clock, lww
from tablesync.clock import HLC, FakeClock
from tablesync.model import ZERO, Conflict, DeletePolicy, RowState, Version
from tablesync.remote.memory import (
    ApplyResult,
    MemoryServer,
    Outcome,
    ServerTable,
    Transaction,
    row_state,
    wire_row,
)

HOUR = 3_600_000
T0 = 1_800_000_000_000
SCOPE, OTHER_SCOPE = "sys-a", "sys-b"
TABLES = {
    "tasks": ServerTable("tasks", "id", "system_id", DeletePolicy.EDIT_WINS),
    "notes": ServerTable("notes", "id", "system_id", DeletePolicy.LAST_WRITE_WINS),
}
N_REPLICAS = 3
PAGE_LIMIT = 2  # tiny pages so catch-up always pages
MAX_SYNC_ROUNDS = 6

Key = tuple[str, str]  # (table, primary key text)


def policy_of(key: Key) -> DeletePolicy:
    return TABLES[key[0]].policy


def same(a: RowState | None, b: RowState | None) -> bool:
    """Equal version, tombstone, base *and* data image."""
    if a is None or b is None:
        return a is b
    return a == b and dict(a.data) == dict(b.data)


# --- the replica: protocol + pure model -------------------------------------------------------


class Replica(Protocol):
    """What the machine needs from a local store; ``LocalStore`` is driven through an
    adapter with the same methods (tests/property/test_convergence_store.py)."""

    origin: str

    def write(self, key: Key, data: dict[str, Any]) -> RowState:
        """Insert or update through the app's path; returns the write as stamped."""
    def delete(self, key: Key) -> RowState | None:
        """Delete a live row (None if there is none); returns the tombstone write."""
    def pending(self, table: str) -> list[Any]:
        """Coalesced pending changes (opaque items with a ``.state``)."""
    def acknowledge(self, batch: list[Any], results: list[dict[str, Any]]) -> None:
        """Handle the server's per-row outcomes for a batch from ``pending``."""
    def apply_remote(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Apply server rows (catch-up page, realtime payload) by the LWW rule."""
    def cursor(self, table: str) -> int: ...
    def set_cursor(self, table: str, value: int) -> None: ...
    def last_hlc(self) -> int:
        """The highest HLC this replica stamped or observed."""
    def snapshot(self) -> dict[Key, RowState]:
        """Every record's current state, tombstones included (data of live rows)."""
    def conflicts(self) -> list[Conflict]: ...


@dataclass
class _Entry:
    qid: int
    key: Key
    state: RowState


@dataclass(frozen=True)
class _Pending:
    key: Key
    state: RowState
    qids: tuple[int, ...]


@dataclass
class ReplicaModel:
    """In-memory model of the local store's sync state for one system.

    ``meta`` holds each record's current state, tombstones included (the user table would
    hold only live rows); ``queue`` the unacknowledged local writes.
    """

    origin: str
    hlc: HLC
    meta: dict[Key, RowState] = field(default_factory=dict)
    queue: list[_Entry] = field(default_factory=list)
    log: dict[tuple[Key, Version, Version], Conflict] = field(default_factory=dict)
    cursors: dict[str, int] = field(default_factory=dict)
    _qids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def live(self, key: Key) -> bool:
        s = self.meta.get(key)
        return s is not None and not s.deleted

    def write(self, key: Key, data: dict[str, Any]) -> RowState:
        """Insert or update (a re-insert after a delete has the tombstone as base)."""
        old = self.meta.get(key)
        return self._local(key, RowState(self._stamp(), False, old.version if old else ZERO, data))

    def delete(self, key: Key) -> RowState | None:
        old = self.meta.get(key)
        if old is None or old.deleted:
            return None
        return self._local(key, RowState(self._stamp(), True, old.version, dict(old.data)))

    def pending(self, table: str) -> list[_Pending]:
        """Coalesced per record: the latest state, with every queue id it covers."""
        ids: dict[Key, list[int]] = {}
        for e in self.queue:
            if e.key[0] == table:
                ids.setdefault(e.key, []).append(e.qid)
        return [_Pending(k, self.meta[k], tuple(q)) for k, q in ids.items()]

    def acknowledge(self, batch: list[_Pending], results: list[dict[str, Any]]) -> None:
        """applied/duplicate: done; superseded: apply the server's row, done; else retry."""
        for item, result in zip(batch, results, strict=True):
            if result["outcome"] == "superseded":
                self._apply(item.key, row_state(result["row"]))
            if result["outcome"] in ("applied", "duplicate", "superseded"):
                done = set(item.qids)
                self.queue = [e for e in self.queue if e.qid not in done]

    def apply_remote(self, table: str, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._apply((table, str(row["id"])), row_state(row))

    def last_hlc(self) -> int:
        return self.hlc.last

    def _apply(self, key: Key, remote: RowState) -> None:
        """The LWW rule on a remote state; logs concurrent losers; never enqueues."""
        self.hlc.observe(remote.version.hlc)
        local = self.meta.get(key)
        if local is None:
            self.meta[key] = remote
            return
        if local.version == remote.version:
            return
        policy = policy_of(key)
        if lww.beats(remote, local, policy):
            self._log(key, remote, local)
            self.meta[key] = remote
            self.queue = [e for e in self.queue if e.key != key]  # superseded everywhere
        else:
            self._log(key, local, remote)

    def cursor(self, table: str) -> int:
        return self.cursors.get(table, 0)

    def set_cursor(self, table: str, value: int) -> None:
        self.cursors[table] = value

    def snapshot(self) -> dict[Key, RowState]:
        return dict(self.meta)

    def conflicts(self) -> list[Conflict]:
        return list(self.log.values())

    def _stamp(self) -> Version:
        return Version(self.hlc.tick(), self.origin)

    def _local(self, key: Key, state: RowState) -> RowState:
        self.meta[key] = state
        self.queue.append(_Entry(next(self._qids), key, state))
        return state

    def _log(self, key: Key, winner: RowState, loser: RowState) -> None:
        if lww.is_concurrent(winner, loser):
            when = clock.to_iso(self.hlc.last)
            self.log[(key, winner.version, loser.version)] = Conflict(
                key[0], key[1], winner, loser, when, f"{loser.version.origin} write lost")


# --- the network --------------------------------------------------------------------------------


@dataclass
class Request:
    replica: int
    table: str
    batch: list[Any]  # the replica's pending items, for its acknowledgement

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [wire_row(item.state) for item in self.batch]


@dataclass
class Response:
    replica: int
    table: str
    results: list[ApplyResult]
    batch: list[Any]


@dataclass
class SlowCommit:
    txn: Transaction
    response: Response | None = None  # a push applied inside the transaction
    writes: list[tuple[Key, RowState]] = field(default_factory=list)  # dashboard writes


# --- the machine ----------------------------------------------------------------------------------

FATES = ["delivered", "delivered", "request lost", "response lost", "duplicated", "in flight",
         "slow transaction"]
replica_ids = st.integers(min_value=0, max_value=N_REPLICAS - 1)
skews = st.one_of(st.sampled_from([-HOUR, 0, HOUR]), st.integers(min_value=-HOUR, max_value=HOUR))


class ConvergenceMachine(RuleBasedStateMachine):
    """N replicas + the server model + a lossy network; full sync in teardown."""

    keys = Bundle("keys")
    foreign_keys = Bundle("foreign_keys")

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.walls = [FakeClock(T0) for _ in range(N_REPLICAS)]
        self.server_wall = FakeClock(T0)
        self.server = MemoryServer(TABLES.values(), wall=self.server_wall)
        self.replicas: list[Replica] = [self.make_replica(i) for i in range(N_REPLICAS)]
        self.online = [True] * N_REPLICAS
        self.requests: list[Request] = []
        self.responses: list[Response] = []
        self.inbox: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in range(N_REPLICAS)]
        self.slow: list[SlowCommit] = []
        self.truth: dict[Key, list[RowState]] = {}
        self.counter = itertools.count()
        self.steps = 0
        self.server.subscribe(self._realtime)

    def make_replica(self, i: int) -> Replica:
        return ReplicaModel(f"r{i}", HLC(self.walls[i]))

    # --- keys and local writes -------------------------------------------------------------

    @initialize(target=keys)
    def first_task(self) -> Key:
        return ("tasks", "k-task")

    @initialize(target=keys)
    def first_note(self) -> Key:
        return ("notes", "k-note")

    @rule(target=keys, table=st.sampled_from(sorted(TABLES)))
    def new_key(self, table: str) -> Key:
        return (table, f"k{next(self.counter)}")

    @rule(target=foreign_keys)
    def new_foreign_key(self) -> Key:
        return ("tasks", f"x{next(self.counter)}")

    def _data(self, key: Key, who: str, scope: str = SCOPE) -> dict[str, Any]:
        return {"id": key[1], "system_id": scope, "title": f"{who}#{next(self.counter)}"}

    @rule(r=replica_ids, key=keys)
    def local_write(self, r: int, key: Key) -> None:
        rep = self.replicas[r]
        self._record(key, rep.write(key, self._data(key, rep.origin)))

    @rule(r=replica_ids, key=keys)
    def local_delete(self, r: int, key: Key) -> None:
        state = self.replicas[r].delete(key)
        if state is not None:
            self._record(key, state)

    @rule(a=replica_ids, b=replica_ids, key=keys)
    def tie_writes(self, a: int, b: int, key: Key) -> None:
        """Two replicas write the same record with the very same hlc."""
        if a == b:
            return
        ra, rb = self.replicas[a], self.replicas[b]
        target = max(clock.physical_ms(ra.last_hlc()), clock.physical_ms(rb.last_hlc())) + 1
        if abs(target - self.now) > HOUR:
            return  # would need more than an hour of skew
        for i in (a, b):
            self.walls[i].skew_ms = target - self.now
        sa = ra.write(key, self._data(key, ra.origin))
        sb = rb.write(key, self._data(key, rb.origin))
        assert sa.version.hlc == sb.version.hlc
        self._record(key, sa)
        self._record(key, sb)

    def _record(self, key: Key, state: RowState) -> None:
        self.truth.setdefault(key, []).append(state)

    # --- clocks ------------------------------------------------------------------------------

    @rule(ms=st.one_of(st.integers(0, 3), st.integers(0, 10 * 60_000)))
    def advance_time(self, ms: int) -> None:
        self.now += ms
        for wall in [*self.walls, self.server_wall]:
            wall.advance(ms)

    @rule(r=replica_ids, skew=skews)
    def set_skew(self, r: int, skew: int) -> None:
        self.walls[r].skew_ms = skew

    # --- connectivity --------------------------------------------------------------------------

    @rule(r=replica_ids, online=st.booleans())
    def set_online(self, r: int, online: bool) -> None:
        """Going offline drops the websocket (no replay) and any response in flight."""
        self.online[r] = online
        if not online:
            self.inbox[r].clear()
            self.responses = [x for x in self.responses if x.replica != r]

    @rule(r=replica_ids, fate=st.sampled_from(FATES))
    def push(self, r: int, fate: str) -> None:
        """Send the coalesced pending changes (one request per table); entries stay queued
        until a response acknowledges them. ``fate`` is what the network does to it."""
        if not self.online[r]:
            return
        for table in TABLES:
            batch = self.replicas[r].pending(table)
            if not batch:
                continue
            req = Request(r, table, batch)
            event(f"push: {fate}")
            if fate == "in flight":
                self.requests.append(req)
            elif fate == "slow transaction":
                self._deliver(req, slow=True)
            elif fate != "request lost":
                self._deliver(req)
                if fate == "duplicated":
                    self._deliver(req)
                if fate == "response lost":
                    self.responses.pop()
                else:
                    for resp in self.responses[-2 if fate == "duplicated" else -1:][::-1]:
                        self._handle_response(resp)
                    del self.responses[-2 if fate == "duplicated" else -1:]

    def _deliver(self, req: Request, slow: bool = False) -> None:
        """The server applies a request; its response goes in flight (or waits for commit)."""
        txn = self.server.begin() if slow else None
        results = self.server.apply(req.table, req.rows, system_id=SCOPE, txn=txn)
        response = Response(req.replica, req.table, results, req.batch)
        if txn is not None:
            self.slow.append(SlowCommit(txn, response=response))
        else:
            self.responses.append(response)

    @rule(data=st.data(), fate=st.sampled_from(["deliver", "deliver, keep a copy", "slow", "drop"]))
    def network_request(self, data: st.DataObject, fate: str) -> None:
        """Any in-flight request (so: reordered) is delivered, duplicated, applied inside a
        transaction that commits later, or lost."""
        if not self.requests:
            return
        i = data.draw(st.integers(0, len(self.requests) - 1), label="request")
        req = self.requests[i] if fate == "deliver, keep a copy" else self.requests.pop(i)
        if fate != "drop":
            self._deliver(req, slow=fate == "slow")

    @rule(data=st.data(), fate=st.sampled_from(["deliver", "deliver, keep a copy",
                                               "crash before ack"]))
    def network_response(self, data: st.DataObject, fate: str) -> None:
        """Any in-flight response is handled (maybe twice), or the replica crashes before
        acknowledging: the server applied the batch, the entries stay queued."""
        if not self.responses:
            return
        i = data.draw(st.integers(0, len(self.responses) - 1), label="response")
        resp = self.responses[i] if fate == "deliver, keep a copy" else self.responses.pop(i)
        if fate != "crash before ack":
            self._handle_response(resp)

    def _handle_response(self, resp: Response) -> None:
        for result in resp.results:
            event(f"push outcome {result.outcome.value}")
        self.replicas[resp.replica].acknowledge(resp.batch, [r.to_json() for r in resp.results])

    # --- server-side writers and late commits -------------------------------------------------------

    @rule(key=keys, deleted=st.booleans(), long=st.booleans())
    def dashboard_write(self, key: Key, deleted: bool, long: bool) -> None:
        """A dashboard/REST write (trigger-stamped); optionally in a long transaction."""
        self._dashboard(key, SCOPE, deleted, long)

    @rule(key=foreign_keys, deleted=st.booleans(), long=st.booleans())
    def dashboard_write_other_system(self, key: Key, deleted: bool, long: bool) -> None:
        """A row of another system: it must never reach these replicas."""
        self._dashboard(key, OTHER_SCOPE, deleted, long)

    def _dashboard(self, key: Key, scope: str, deleted: bool, long: bool) -> None:
        txn = self.server.begin() if long else None
        result = self.server.write(key[0], self._data(key, "dash", scope), deleted=deleted, txn=txn)
        if result.outcome is not Outcome.APPLIED:
            assert result.outcome is Outcome.ERROR and "locked" in (result.message or "")
            event("dashboard write hit a locked row")
            if txn is not None:
                self.server.rollback(txn)
            return
        assert result.row is not None
        state = row_state(result.row)
        if txn is None:
            self._record(key, state)
        else:
            self.slow.append(SlowCommit(txn, writes=[(key, state)]))

    @rule(data=st.data(), rollback=st.booleans())
    def end_slow_transaction(self, data: st.DataObject, rollback: bool) -> None:
        if not self.slow:
            return
        slow = self.slow.pop(data.draw(st.integers(0, len(self.slow) - 1), label="txn"))
        self._end(slow, rollback)

    def _end(self, slow: SlowCommit, rollback: bool) -> None:
        event(f"slow transaction {'rolled back' if rollback else 'committed'}")
        if rollback:
            self.server.rollback(slow.txn)
            if slow.response is not None:  # the RPC failed as a whole: nothing acked
                slow.response.results = [ApplyResult(r.id, Outcome.ERROR, message="aborted")
                                         for r in slow.response.results]
        else:
            self.server.commit(slow.txn)
            for key, state in slow.writes:
                self._record(key, state)
        if slow.response is not None:
            self.responses.append(slow.response)

    # --- pull ----------------------------------------------------------------------------------

    @rule(r=replica_ids, fail_after=st.one_of(st.none(), st.integers(0, 3)))
    def catch_up(self, r: int, fail_after: int | None) -> None:
        """Catch-up pull of every table from its cursor; a connection failure after
        ``fail_after`` pages keeps the cursor where it was."""
        if self.online[r]:
            for table in TABLES:
                self._catch_up(r, table, fail_after)

    def _catch_up(self, r: int, table: str, fail_after: int | None = None) -> None:
        rep = self.replicas[r]
        mark = self.server.watermark()
        after = 0
        for page_no in range(100_000):
            if fail_after is not None and page_no >= fail_after:
                return
            page = self.server.pull(table, cursor=rep.cursor(table), after_seq=after,
                                    limit=PAGE_LIMIT, system_id=SCOPE)
            rep.apply_remote(table, page)
            if len(page) < PAGE_LIMIT:
                rep.set_cursor(table, mark)
                return
            after = page[-1]["_ts_seq"]
        raise AssertionError("catch-up did not finish")

    def _realtime(self, table: str, row: dict[str, Any]) -> None:
        """Server commit -> a message in every online replica's inbox (scope filtered)."""
        if row.get("system_id") != SCOPE:
            return
        for i in range(N_REPLICAS):
            if self.online[i]:
                self.inbox[i].append((table, row))

    @rule(r=replica_ids, data=st.data())
    def realtime(self, r: int, data: st.DataObject) -> None:
        """Deliver some inbox messages in any order, some twice, some dropped."""
        inbox = self.inbox[r]
        if not inbox:
            return
        picked = data.draw(st.lists(st.integers(0, len(inbox) - 1), unique=True), label="picked")
        msgs = [inbox[i] for i in picked]
        self.inbox[r] = [m for i, m in enumerate(inbox) if i not in set(picked)]
        if msgs:
            msgs += data.draw(st.lists(st.sampled_from(msgs), max_size=2), label="duplicates")
        for table, row in data.draw(st.permutations(msgs), label="order"):
            if data.draw(st.integers(0, 4), label="drop?"):  # 1 in 5 is lost
                self.replicas[r].apply_remote(table, [row])

    # --- invariants while running --------------------------------------------------------------

    @invariant()
    def clocks_have_observed_what_replicas_hold(self) -> None:
        self.steps += 1
        for rep in self.replicas:
            last = rep.last_hlc()
            for state in rep.snapshot().values():
                assert last >= state.version.hlc

    @invariant()
    def server_rows_are_real_writes(self) -> None:
        """The server never invents a version or mixes two writes' images."""
        by_version = {(k, s.version): s for k, ss in self.truth.items() for s in ss}
        for table in TABLES:
            for rid, row in self.server.rows(table).items():
                state = row_state(row)
                assert same(by_version.get(((table, rid), state.version)), state)

    # --- the full sync and the final checks --------------------------------------------------------

    def teardown(self) -> None:
        event(f"steps: {min(self.steps // 20 * 20, 100)}+")
        event(f"writes: {min(sum(map(len, self.truth.values())) // 10 * 10, 50)}+")
        n = sum(len(r.conflicts()) for r in self.replicas) + len(self.server.conflicts)
        event(f"conflicts before full sync: {min(n, 3)}{'+' if n >= 3 else ''}")
        self.full_sync()
        self.check_converged()
        self.check_conflicts_logged()

    def full_sync(self) -> None:
        """Everyone online, every transaction ended, then push+pull until quiescent."""
        for slow in list(self.slow):
            self._end(slow, rollback=False)
        self.slow.clear()
        self.requests.clear()
        self.responses.clear()
        for i in range(N_REPLICAS):
            self.inbox[i].clear()
            self.online[i] = True
        for _ in range(MAX_SYNC_ROUNDS):
            before = self._fingerprint()
            for i, rep in enumerate(self.replicas):
                for table in TABLES:
                    batch = rep.pending(table)
                    if batch:
                        req = Request(i, table, batch)
                        results = self.server.apply(table, req.rows, system_id=SCOPE)
                        self._handle_response(Response(i, table, results, batch))
            for i in range(N_REPLICAS):
                for table in TABLES:
                    self._catch_up(i, table)
            if self._fingerprint() == before and not any(
                    rep.pending(t) for rep in self.replicas for t in TABLES):
                return
        raise AssertionError(f"no quiescence after {MAX_SYNC_ROUNDS} sync rounds")

    def _fingerprint(self) -> tuple[Any, ...]:
        return (tuple(sorted((k, s.version) for rep in self.replicas
                             for k, s in rep.snapshot().items())),
                tuple(sorted((t, rid, r["_ts_seq"]) for t in TABLES
                             for rid, r in self.server.rows(t).items())))

    def expected(self) -> dict[Key, RowState]:
        out: dict[Key, RowState] = {}
        for key, writes in self.truth.items():
            best = lww.merge(writes, policy_of(key))
            assert best is not None
            out[key] = best
        return out

    def check_converged(self) -> None:
        expected = self.expected()
        server_rows = {(t, rid): row_state(row) for t in TABLES
                       for rid, row in self.server.rows(t).items()}
        assert server_rows.keys() == expected.keys()
        for key, want in expected.items():
            assert same(server_rows[key], want), (key, server_rows[key], want)
        mine = {k: s for k, s in expected.items() if s.data.get("system_id") == SCOPE}
        for rep in self.replicas:
            snap = rep.snapshot()
            assert snap.keys() == mine.keys(), rep.origin
            for key, want in mine.items():
                assert same(snap[key], want), (rep.origin, key, snap[key], want)

    def check_conflicts_logged(self) -> None:
        """Every overwritten write is in a conflict log, or a later writer had seen it."""
        logs = [c for rep in self.replicas for c in rep.conflicts()] + self.server.conflicts
        for c in logs:
            key = (c.table, c.record_id)
            assert lww.beats(c.winner, c.loser, policy_of(key))
            # logged: not seen by the winner's writer (a pending write overwritten by a
            # chain of server writes is logged too, lww.overwrote_pending)
            assert (lww.is_concurrent(c.winner, c.loser)
                    or lww.overwrote_pending(c.winner, c.loser))
        logged = {((c.table, c.record_id), c.loser.version) for c in logs}
        final = self.expected()
        for key, writes in self.truth.items():
            for w in writes:
                if w.version == final[key].version or (key, w.version) in logged:
                    continue
                seen_by = [s for s in writes if s.version != w.version and s.base >= w.version]
                assert seen_by, f"{key}: {w} lost without a conflict record (final {final[key]})"


ConvergenceMachine.TestCase.settings = settings(
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
