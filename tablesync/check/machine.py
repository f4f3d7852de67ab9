"""The Hypothesis state machine over a project's own tables (one class per run).

Rules: app inserts, updates, deletes and re-inserts on each replica (values from
:mod:`.values`, foreign keys pointing at rows the replica holds, NOT NULL respected),
dashboard inserts, updates and deletes on the server, records moved to another
replica's scope, syncs in any order, pushes applied whose answer is lost (a crash
between the send and the ack), offline periods, clock ticks; each replica's clock is
skewed from the start, and frozen clocks make equal milliseconds (ties) common. After
every example all replicas sync until quiet and :mod:`.invariants` are checked.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import psycopg

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from tablesync.check import invariants as inv
from tablesync.check.cluster import SCRATCH, Cluster
from tablesync.check.remote_pg import PgRemote
from tablesync.check.replicas import Replica, WallClock
from tablesync.check.script import Script, row_text, short
from tablesync.check.values import column_values, key_value
from tablesync.config import Project
from tablesync.model import ApplyOutcome, RowState, TableSpec, Version
from tablesync.rows import state_from_row
from tablesync.sql.base import ident, qualified
from tablesync.sql.wire import codec

__all__ = ["Stats", "machine_for"]

KEYS_PER_WRITER = 6                 # a small key space: re-inserts and collisions happen
PICK = st.integers(min_value=0, max_value=10**6)
SKEWS = st.sampled_from([0, 0, 1, -45_000, 90_000])   # ms; within max_clock_skew (300 s)
TICKS = st.sampled_from([0, 1, 1000])
KEYS = st.integers(0, KEYS_PER_WRITER - 1)
APP_KINDS = st.sampled_from(["insert", "insert", "update", "update", "delete"])
DASHBOARD_KINDS = st.sampled_from(["insert", "update", "delete", "move"])
FINAL_ROUNDS = 3
ACCEPTED = ("applied", "duplicate", "superseded")
P = "postgres"


class Stats:
    """Counts over a whole run (for the one-line summary)."""

    def __init__(self) -> None:
        self.examples = 0
        self.steps = 0
        self.conflicts = 0          # conflict-log entries seen at the end of examples
        self.superseded = 0         # pushes that lost to a newer server version
        self.refused_by_app = 0     # writes SQLite or PostgreSQL refused (CHECK, UNIQUE...)
        self.script = Script()      # the last example's steps (the shrunk one on failure)


def _name(i: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[i] if i < 26 else f"r{i}"


def machine_for(project: Project, cluster: Cluster, replicas: int,
                stats: Stats) -> type[RuleBasedStateMachine]:
    """A state machine class for ``project`` on ``cluster`` with ``replicas`` replicas."""
    specs = {t.name: t for t in project.tables}
    tables = st.sampled_from([t.name for t in project.tables])
    who = st.integers(0, replicas - 1)
    dashboard = replicas                # the dashboard's key space
    remotes = [PgRemote(cluster.dsn, f"check-{_name(i)}", specs) for i in range(replicas)]
    cluster.on_close.extend(r.close for r in remotes)
    templates = Path(tempfile.mkdtemp(prefix="tablesync-check-templates-", dir=SCRATCH))
    cluster.on_close.append(lambda: shutil.rmtree(templates, ignore_errors=True))
    projects = [Replica.project_for(project, r.system_id, templates / f"{r.system_id}.db")
                for r in remotes]

    class CheckMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            cluster.reset()
            stats.examples += 1
            self.script = stats.script = Script()
            self.tmp = Path(tempfile.mkdtemp(prefix="tablesync-check-", dir=SCRATCH))
            base = time.time_ns() // 1_000_000
            self.clocks = [WallClock(base, 0) for _ in range(replicas)]
            self.writes: list[inv.LocalWrite] = []
            self.seen: set[tuple[str, str, Version]] = set()
            self.accepted: dict[tuple[str, str], list[RowState]] = defaultdict(list)
            for remote in remotes:
                remote.on_apply, remote.down = self._on_apply, False
            self.reps = [Replica(projects[i], self.tmp, templates / f"{r.system_id}.db", r,
                                 self.clocks[i]) for i, r in enumerate(remotes)]

        # -- bookkeeping -------------------------------------------------------------
        def _on_apply(self, table: str, rows: Sequence[Mapping[str, Any]],
                      outcomes: list[ApplyOutcome]) -> None:
            spec = specs[table]
            for row, out in zip(rows, outcomes):
                if out.outcome.value in ACCEPTED:
                    self.accepted[(table, str(row[spec.primary_key]))].append(
                        state_from_row(row, spec))
                stats.superseded += out.outcome.value == "superseded"

        def _say(self, who: str, what: str) -> None:
            self.script.add(who, what)
            stats.steps += 1

        def _server_state(self, spec: TableSpec, rid: str) -> RowState | None:
            q = (f"SELECT row_to_json(_t)::text FROM {qualified('public', spec.name, P)} AS _t"
                 f" WHERE {ident(spec.primary_key, P)}::text = %s")
            found = cluster.execute(q, (rid,))
            return state_from_row(json.loads(found[0][0]), spec) if found else None

        def _server_values(self, spec: TableSpec, column: str, scope: str | None) -> list[Any]:
            where = f" AND {ident(spec.scope, P)} = %s" if scope is not None else ""
            q = (f"SELECT coalesce(json_agg(v ORDER BY v::text), '[]')::text FROM (SELECT "
                 f"{ident(column, P)} AS v FROM {qualified('public', spec.name, P)} WHERE NOT "
                 f"_ts_deleted{where}) AS _s")
            return list(json.loads(cluster.execute(q, (scope,) if scope else ())[0][0]))

        def _values(self, data: Any, spec: TableSpec, fk: Callable[[str, str], list[Any]],
                    *, update: bool) -> dict[str, Any] | None:
            """Drawn values for the columns an app write sets (None: a NOT NULL foreign
            key with nothing to point at, so the app could not write it)."""
            refs = {fkey.columns[0]: fkey for fkey in spec.foreign_keys
                    if len(fkey.columns) == 1}
            out: dict[str, Any] = {}
            cols = [c for c in spec.columns if c.name not in (spec.primary_key, spec.scope)]
            if not cols:
                return None if update else out
            # an update sets one column for sure, others at random
            first = data.draw(st.integers(0, len(cols) - 1), label="column") if update else -1
            for n, col in enumerate(cols):
                if update and n != first and not data.draw(st.booleans(),
                                                           label=f"set {col.name}"):
                    continue
                if not update and col.default is not None and data.draw(
                        st.booleans(), label=f"default {col.name}"):
                    continue
                ref = refs.get(col.name)
                if ref is not None:
                    options = fk(ref.ref_table, ref.ref_columns[0])
                    pick = data.draw(PICK, label=f"ref {col.name}")
                    if options and not (col.nullable and pick % 4 == 0):
                        out[col.name] = options[pick % len(options)]
                    elif col.nullable:
                        out[col.name] = None
                    else:
                        return None
                    continue
                out[col.name] = data.draw(column_values(col), label=col.name)
            return out

        # -- the app ------------------------------------------------------------------
        def _local_fk(self, i: int) -> Callable[[str, str], list[Any]]:
            app = self.reps[i].app

            def values(table: str, column: str) -> list[Any]:
                return [r[0] for r in app.execute(
                    f"SELECT {ident(column, 'sqlite')} FROM {ident(table, 'sqlite')} "
                    f"ORDER BY 1")]
            return values

        def _app_write(self, i: int, spec: TableSpec, rid: Any, values: dict[str, Any],
                       verb: str, delete: bool = False) -> None:
            rep, name = self.reps[i], _name(i)
            t, pk = ident(spec.name, "sqlite"), ident(spec.primary_key, "sqlite")
            rid_text = str(rid)
            rep.app.execute("BEGIN IMMEDIATE")
            try:
                exists = rep.app.execute(f"SELECT 1 FROM {t} WHERE {pk} = ?",
                                         (rid,)).fetchone() is not None
                held = rep.held(spec.name, rid_text)
                if delete:
                    rep.app.execute(f"DELETE FROM {t} WHERE {pk} = ?", (rid,))
                elif exists:
                    if values:
                        sets = ", ".join(f"{ident(c, 'sqlite')} = ?" for c in values)
                        rep.app.execute(f"UPDATE {t} SET {sets} WHERE {pk} = ?",
                                        (*values.values(), rid))
                    verb = "update"
                else:
                    row = {spec.primary_key: rid, spec.scope: rep.system_id, **values}
                    cols = ", ".join(ident(c, "sqlite") for c in row)
                    marks = ", ".join("?" for _ in row)
                    rep.app.execute(f"INSERT INTO {t} ({cols}) VALUES ({marks})",
                                    tuple(row.values()))
                    verb = "re-insert" if held != Version(0, "") else "insert"
                rep.app.execute("COMMIT")
            except Exception as exc:
                rep.app.execute("ROLLBACK")
                if type(exc).__name__ not in ("IntegrityError",):
                    raise
                stats.refused_by_app += 1
                self._say(f"replica {name}", f"{verb} {spec.name} {rid_text!r} refused by "
                          f"SQLite ({exc})")
                return
            if not exists and delete:
                return
            version = rep.stamped(spec.name, rid_text)
            if held != Version(0, ""):
                self.seen.add((spec.name, rid_text, held))
            self.writes.append(inv.LocalWrite(name, spec.name, rid_text, version, delete,
                                              len(self.script) + 1))
            what = f"{verb} {spec.name} {rid_text!r}"
            self._say(f"replica {name}", what + (f" ({row_text(values)})" if values else ""))

        @initialize(skews=st.lists(SKEWS, min_size=replicas, max_size=replicas))
        def skew_clocks(self, skews: list[int]) -> None:
            for i, ms in enumerate(skews):
                self.clocks[i].skew_ms = ms
                if ms:
                    self._say(f"replica {_name(i)}", f"clock skew {ms:+d} ms")

        def _local_pick(self, i: int, spec: TableSpec, pick: int) -> Any:
            ids = self._local_fk(i)(spec.name, spec.primary_key)
            return ids[pick % len(ids)] if ids else None

        def _app(self, i: int, table: str, kind: str, n: int, pick: int, data: Any) -> None:
            spec = specs[table]
            if kind == "insert":
                values = self._values(data, spec, self._local_fk(i), update=False)
                if values is not None:
                    rid = key_value(spec.column(spec.primary_key), i, n)
                    self._app_write(i, spec, rid, values, "insert")
                return
            rid = self._local_pick(i, spec, pick)
            if rid is None:
                return
            if kind == "delete":
                self._app_write(i, spec, rid, {}, "delete", delete=True)
                return
            values = self._values(data, spec, self._local_fk(i), update=True)
            if values is not None:
                self._app_write(i, spec, rid, values, "update")

        # two rules with the same body: Hypothesis switches rules off at random per
        # example (swarm testing); app writes are what everything else acts on
        @rule(i=who, table=tables, kind=APP_KINDS, n=KEYS, pick=PICK, data=st.data())
        def app_write(self, i: int, table: str, kind: str, n: int, pick: int, data: Any) -> None:
            self._app(i, table, kind, n, pick, data)

        @rule(i=who, table=tables, kind=APP_KINDS, n=KEYS, pick=PICK, data=st.data())
        def app_write_then_sync(self, i: int, table: str, kind: str, n: int, pick: int,
                                data: Any) -> None:
            self._app(i, table, kind, n, pick, data)
            self._sync(i)

        # -- the dashboard (SQL as the superuser; the stamp, soft-delete, exit and
        #    conflict triggers run as for a service-role REST write) ------------------
        def _record(self, spec: TableSpec, rid: str) -> None:
            state = self._server_state(spec, rid)
            if state is not None:
                self.accepted[(spec.name, rid)].append(state)

        def _seen_on_server(self, spec: TableSpec, rid: str) -> RowState | None:
            state = self._server_state(spec, rid)
            if state is not None:
                self.seen.add((spec.name, rid, state.version))
            return state

        def _wire(self, spec: TableSpec, values: dict[str, Any]) -> str:
            wire = codec(spec).to_wire(values)
            for c in codec(spec).jsonb:
                if isinstance(wire.get(c), str):
                    wire[c] = json.loads(wire[c])
            return json.dumps(wire, ensure_ascii=False)

        @rule(table=tables, kind=DASHBOARD_KINDS, i=who, n=KEYS, pick=PICK, data=st.data())
        def dashboard(self, table: str, kind: str, i: int, n: int, pick: int,
                      data: Any) -> None:
            """A write on the dashboard: insert into replica ``i``'s scope, update,
            delete, or move a record to replica ``i``'s scope (its owner may have pending
            edits of it)."""
            with self._refusable(f"{kind} {table}"):
                if kind == "insert":
                    self._dashboard_insert(table, i, n, data)
                elif kind == "update":
                    self._dashboard_update(table, pick, data)
                elif kind == "delete":
                    self._dashboard_delete(table, pick)
                else:
                    self._dashboard_move(table, pick, i)

        @contextmanager
        def _refusable(self, what: str) -> Iterator[None]:
            """A dashboard write PostgreSQL refuses (a CHECK, UNIQUE or foreign key
            constraint, a value out of range: SQLSTATE classes 22 and 23) is recorded as
            refused, as the dashboard user would see it; anything else is a finding."""
            try:
                yield
            except psycopg.Error as exc:
                if (exc.sqlstate or "")[:2] not in ("22", "23"):
                    raise
                stats.refused_by_app += 1
                reason = (exc.diag.message_primary or str(exc)).strip()
                self._say("dashboard", f"{what} refused by PostgreSQL ({reason})")

        def _dashboard_insert(self, table: str, scope: int, n: int, data: Any) -> None:
            spec = specs[table]
            sid = self.reps[scope].system_id
            rid = key_value(spec.column(spec.primary_key), dashboard, n)
            if self._server_state(spec, str(rid)) is not None:
                return
            values = self._values(data, spec, lambda t, c: self._server_values(specs[t], c, sid),
                                  update=False)
            if values is None:
                return
            row = {spec.primary_key: rid, spec.scope: sid, **values}
            cols = ", ".join(ident(c, P) for c in row)
            t = qualified("public", spec.name, P)
            cluster.execute(f"INSERT INTO {t} ({cols}) SELECT {cols} FROM "
                            f"jsonb_populate_record(NULL::{t}, %s::jsonb)", (self._wire(spec, row),))
            self._record(spec, str(rid))
            self._say("dashboard", f"insert {spec.name} {str(rid)!r} into {_name(scope)}'s scope"
                      f" ({row_text(values)})")

        def _server_pick(self, spec: TableSpec, pick: int) -> tuple[str, str] | None:
            q = (f"SELECT {ident(spec.primary_key, P)}::text, {ident(spec.scope, P)}::text FROM "
                 f"{qualified('public', spec.name, P)} WHERE NOT _ts_deleted ORDER BY 1")
            rows = cluster.execute(q)
            return (str(rows[pick % len(rows)][0]), str(rows[pick % len(rows)][1])) \
                if rows else None

        def _server_pick_id(self, spec: TableSpec, rid: str) -> tuple[str, str] | None:
            q = (f"SELECT {ident(spec.primary_key, P)}::text, {ident(spec.scope, P)}::text FROM "
                 f"{qualified('public', spec.name, P)} WHERE NOT _ts_deleted AND "
                 f"{ident(spec.primary_key, P)}::text = %s")
            rows = cluster.execute(q, (rid,))
            return (str(rows[0][0]), str(rows[0][1])) if rows else None

        def _dashboard_update(self, table: str, pick: int, data: Any) -> None:
            spec = specs[table]
            found = self._server_pick(spec, pick)
            if found is not None:
                self._dashboard_update_id(spec, found[0], found[1], data)

        def _dashboard_update_id(self, spec: TableSpec, rid: str, scope: str,
                                 data: Any) -> None:
            values = self._values(data, spec, lambda t, c: self._server_values(specs[t], c, scope),
                                  update=True)
            if not values:
                return
            t = qualified("public", spec.name, P)
            cols = ", ".join(ident(c, P) for c in values)
            with cluster.conn.transaction():
                self._seen_on_server(spec, rid)
                cluster.execute(f"UPDATE {t} SET ({cols}) = (SELECT {cols} FROM "
                                f"jsonb_populate_record(NULL::{t}, %s::jsonb)) WHERE "
                                f"{ident(spec.primary_key, P)}::text = %s",
                                (self._wire(spec, values), rid))
            self._record(spec, rid)
            self._say("dashboard", f"update {spec.name} {rid!r} ({row_text(values)})")

        def _dashboard_delete(self, table: str, pick: int) -> None:
            spec = specs[table]
            found = self._server_pick(spec, pick)
            if found is not None:
                self._dashboard_delete_id(spec, found[0])

        def _dashboard_delete_id(self, spec: TableSpec, rid: str) -> None:
            with cluster.conn.transaction():
                self._seen_on_server(spec, rid)
                cluster.execute(f"DELETE FROM {qualified('public', spec.name, P)} WHERE "
                                f"{ident(spec.primary_key, P)}::text = %s", (rid,))
            self._record(spec, rid)
            self._say("dashboard", f"delete {spec.name} {rid!r}")

        def _dashboard_move(self, table: str, pick: int, to: int) -> None:
            spec = specs[table]
            found = self._server_pick(spec, pick)
            if found is not None:
                self._dashboard_move_id(spec, found[0], found[1], to)

        def _dashboard_move_id(self, spec: TableSpec, rid: str, scope: str, to: int) -> None:
            target = self.reps[to].system_id
            if scope == target:
                target = self.reps[(to + 1) % len(self.reps)].system_id
                if scope == target:
                    return
            with cluster.conn.transaction():
                self._seen_on_server(spec, rid)
                cluster.execute(f"UPDATE {qualified('public', spec.name, P)} SET "
                                f"{ident(spec.scope, P)} = %s WHERE "
                                f"{ident(spec.primary_key, P)}::text = %s", (target, rid))
            self._record(spec, rid)
            self._say("dashboard", f"move {spec.name} {rid!r} from {scope!r} to {target!r}")

        @rule(i=who, table=tables, kind=DASHBOARD_KINDS, to=who, pick=PICK, data=st.data())
        def concurrent_edit(self, i: int, table: str, kind: str, to: int, pick: int,
                            data: Any) -> None:
            """Replica ``i`` edits (or deletes) a record it synced, and before it syncs
            the dashboard updates, deletes or moves that same record."""
            spec = specs[table]
            meta = self.reps[i].meta()
            ids = sorted(rid for (t, rid), (_, deleted) in meta.items()
                         if t == table and not deleted)
            live = set(map(str, self._local_fk(i)(spec.name, spec.primary_key)))
            ids = [rid for rid in ids if rid in live]
            if not ids:
                return
            rid_text = ids[pick % len(ids)]
            rid = next(r for r in self._local_fk(i)(spec.name, spec.primary_key)
                       if str(r) == rid_text)
            if data.draw(st.integers(0, 3), label="local delete") == 0:
                self._app_write(i, spec, rid, {}, "delete", delete=True)
            else:
                values = self._values(data, spec, self._local_fk(i), update=True)
                if values is None:
                    return
                self._app_write(i, spec, rid, values, "update")
            server = self._server_pick_id(spec, rid_text)
            if server is None:
                return
            with self._refusable(f"{kind} {table}"):
                if kind in ("insert", "update"):
                    self._dashboard_update_id(spec, rid_text, server[1], data)
                elif kind == "delete":
                    self._dashboard_delete_id(spec, rid_text)
                else:
                    self._dashboard_move_id(spec, rid_text, server[1], to)

        # -- syncing, faults, time ----------------------------------------------------
        @rule(i=who)
        def sync(self, i: int) -> None:
            self._sync(i)

        @rule()
        def sync_all(self) -> None:
            for rep in self.reps:
                rep.sync()
            self._say("every replica", "syncs, in turn")

        def _sync(self, i: int) -> None:
            rep = self.reps[i]
            ok = rep.sync()
            self._say(f"replica {_name(i)}", "sync" + ("" if ok or rep.remote.down else
                                                        f" (failed: {short(rep.errors[-1:], 80)})"))

        @rule(i=who)
        def crash_between_push_and_ack(self, i: int) -> None:
            sent = self.reps[i].push_without_ack()
            if sent:
                self._say(f"replica {_name(i)}", f"pushes {sent} record(s); the server applies "
                          "them, the replica dies before the ack and restarts")

        @rule(i=who, down=st.booleans())
        def offline(self, i: int, down: bool) -> None:
            rep = self.reps[i]
            if rep.remote.down != down:
                rep.remote.down = down
                self._say(f"replica {_name(i)}", "goes offline" if down else "comes online")

        @rule(i=st.one_of(st.none(), who), ms=TICKS)
        def tick(self, i: int | None, ms: int) -> None:
            if not ms:
                return
            for c in (self.clocks if i is None else [self.clocks[i]]):
                c.ticks += ms
            self._say("clock" if i is None else f"replica {_name(i)}",
                      f"clock +{ms} ms" + (" (every replica)" if i is None else ""))

        # -- the end of an example ----------------------------------------------------
        def teardown(self) -> None:
            try:
                self._say("all replicas", f"come online and sync {FINAL_ROUNDS} times in turn")
                for rep in self.reps:
                    rep.remote.down = False
                for _ in range(FINAL_ROUNDS):
                    for rep in self.reps:
                        rep.sync()
                self.check()
            finally:
                for rep in self.reps:
                    rep.close()
                shutil.rmtree(self.tmp, ignore_errors=True)

        def check(self) -> None:
            problems: list[str] = []
            server = {t: cluster.rows(t) for t in specs}
            final: dict[tuple[str, str], RowState] = {}
            for t, rows in server.items():
                for row in rows:
                    final[(t, str(row[specs[t].primary_key]))] = state_from_row(row, specs[t])
            parked: set[tuple[str, str, str]] = set()
            logged: set[tuple[str, str, Version]] = set()
            entries = list(cluster.conflicts())
            for i, rep in enumerate(self.reps):
                name = _name(i)
                for p in rep.store.parked():
                    if not p.get("reason"):
                        problems.append(f"replica {name}: {p['table']} {p['record_id']!r} "
                                        "parked without a reason")
                    parked.add((name, p["table"], p["record_id"]))
                for r in rep.store.refused():
                    if not r.get("reason"):
                        problems.append(f"replica {name}: server row {r['table']} "
                                        f"{r['record_id']!r} refused without a reason")
                depth = rep.store.stats().depth
                if depth:
                    problems.append(f"replica {name}: {depth} change(s) still pending after "
                                    f"the final syncs ({short(rep.errors[-3:], 300)})")
                entries += rep.store.conflicts(limit=1_000_000)
                problems += self._compare(name, rep, server, parked)
            for e in entries:
                v = inv.loser_version(e)
                if v is not None:
                    logged.add((str(e.get("table") or e.get("table_name")),
                                str(e["record_id"]), v))
            stats.conflicts += len(entries)
            finals = {k: s.version for k, s in final.items()}
            for w in inv.lost_writes(self.writes, finals, self.seen, logged, parked):
                problems.append(f"step {w.step}: replica {w.who}'s "
                                f"{'delete' if w.deleted else 'write'} of {w.table} {w.rid!r} "
                                "was overwritten, yet no conflict log holds it and no later "
                                "write saw it")
            problems += inv.wrong_winners(specs, self.accepted, final)
            assert not problems, "\n".join(problems)

        def _compare(self, name: str, rep: Replica, server: dict[str, list[dict[str, Any]]],
                     parked: set[tuple[str, str, str]]) -> list[str]:
            out = []
            meta = rep.meta()
            for t, spec in specs.items():
                mine = {str(r[spec.primary_key]): r for r in server[t]
                        if str(r[spec.scope]) == rep.system_id and not r["_ts_deleted"]}
                local = {str(r[spec.primary_key]): codec(spec).to_wire(r)
                         for r in rep.rows(spec)}
                for rid in sorted(set(mine) | set(local), key=str):
                    if (name, t, str(rid)) in parked:
                        continue
                    where = f"replica {name}: {t} {rid!r}"
                    if rid not in local:
                        out.append(f"{where} is on the server (in its scope) but not on the "
                                   "replica")
                    elif rid not in mine:
                        out.append(f"{where} is on the replica but not on the server in its "
                                   "scope")
                    else:
                        srv = mine[rid]
                        diff = inv.row_differences(spec, local[rid], srv, codec(spec).jsonb)
                        held = meta.get((t, str(rid)))
                        want = Version(int(srv["_ts_hlc"]), str(srv["_ts_origin"]))
                        if held is not None and held[0] != want:
                            diff.append(f"version: replica {held[0]} != server {want}")
                        if diff:
                            out.append(f"{where} differs: " + "; ".join(diff))
            return out

    return CheckMachine

