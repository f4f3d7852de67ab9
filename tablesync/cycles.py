"""One push batch or one catch-up pull: the blocking work behind StartPush/StartCatchUp.

Push: ``LocalStore.pending(limit=chunk)`` is read in chunks and pushed in per-table
batches of ``batch_size`` through the apply RPC; outcomes go to ``LocalStore.ack``
(synced/parked/retry; server winners applied at once). A batch refused as a whole
(non-transient 4xx) is resent one record per request so a bad record is isolated; a record
with an ``error`` outcome is skipped for the rest of the drain.

Pull: ``watermark()`` first, then per table pages of ``_ts_xid >= cursor`` ordered by
``_ts_seq`` until an empty page, applied with ``LocalStore.apply_remote``; the cursor becomes
the watermark only after the whole table was read.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable

from tablesync.behind import ServerSchema, partial_rows
from tablesync.causes import LOCAL_CAUSES, Cause, classify
from tablesync.clock import SystemClock, WallClock, too_far_ahead
from tablesync.errors import (AuthError, PayloadError, RemoteError, StoreError,
                              TransientRemoteError)
from tablesync.machine import PullResult, PushResult, RunOutcome
from tablesync.metrics import Metrics
from tablesync.model import EXITS_TABLE, Change, Outcome, TableSpec
from tablesync.project import Project
from tablesync.remote.base import (MAX_PAGE, ApplyOutcome, ForbiddenError, Page, Remote,
                                   ResponseTooLarge, encoded_rows, unencodable)
from tablesync.rows import row_from_state
from tablesync.sql.wire import codec, key_problems
from tablesync.sender import NotSent, Sender, server_hlc
from tablesync.store import LocalStore
from tablesync.summary import SyncSummary, note

log = logging.getLogger("tablesync.engine")

STATEMENT_TIMEOUT = "57014"                     # query_canceled (statement_timeout)
PRUNE_EVERY = 600.0                             # seconds between prunes of synced entries
PENDING_CHUNK = 5000                            # coalesced changes read per queue scan
RUN_SECONDS = 1.0                               # back-to-back batches per push_batch call
PIPELINE_DEPTH = 4                              # batches queued ahead for the sender thread
PREFETCH_DEPTH = 16                             # ... near the end of a chunk, so the sender
                                                # has work while the next chunk is read

__all__ = ["Cycles", "PENDING_CHUNK", "SyncSummary"]


class Cycles:
    """Push and pull for one project; called from one thread at a time.

    Args:
        project, store, remote: what to sync.
        batch_size: records per apply request.
        metrics: counters to feed.
        notify: called with remote changes applied locally (for callbacks).
        on_error: called with a one-line description of every failure and its cause.
    """

    def __init__(self, project: Project, store: LocalStore, remote: Remote, *,
                 batch_size: int, metrics: Metrics,
                 notify: Callable[[Iterable[Change]], None],
                 on_error: Callable[[str, Cause], None]) -> None:
        self.project, self.store, self.remote = project, store, remote
        self.batch_size, self.metrics = batch_size, metrics
        self._notify, self._error, self.backlog = notify, on_error, deque[Change]()
        self.chunk = max(batch_size * 20, PENDING_CHUNK)
        self._more = False                      # the store holds more than the cached chunk
        self._failed: set[tuple[str, str]] = set()   # 'error' outcomes in this drain
        self._solo, self._uuid_keyed = 0, {t.name: t for t in project.tables if codec(t).uuid_key}
        # a statement timeout (SQLSTATE 57014: hosted Supabase stops `authenticated`
        # statements after 8 s) halves the batch size for the rest of the drain
        self._cap: int | None = None
        # records parked by _next_batch, not noted yet; the server has no tablesync_exits (404)
        self._unsendable, self._no_exits = 0, False
        # (table, record id) -> highest _ts_seq pulled by the running catch-up: an exit
        # below it is older than a return this pull saw (LocalStore.apply_exits)
        self._returned: dict[tuple[str, str], int] = {}
        self.wall: WallClock = SystemClock()    # the bound on pulled versions is against it
        self.max_skew_ms = int(project.config.sync.max_clock_skew * 1000)
        self._refused = True                    # _tablesync_refused may hold rows
        self._pruned_at: float | None = None
        # tables the server lacks (or lacks columns of): pushes held (tablesync.behind)
        self.schema = ServerSchema(project.tables, getattr(remote, "probe_columns", None),
                                   reprobe_s=project.config.sync.poll_interval)

    def prune_if_due(self) -> None:
        """Drop long-synced queue entries, at most once per ``PRUNE_EVERY`` seconds."""
        now = time.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        removed = self.store.prune(self.project.config.sync.keep_synced)
        if removed:
            log.info("engine: pruned %d synced queue entries", removed)

    def reset(self) -> None:
        """Forget the cached chunk (re-read the queue next time)."""
        self.backlog.clear()
        self._more = False

    def push_batch(self, summary: SyncSummary | None) -> PushResult:
        """Push a run of batches (each one table, up to batch_size records) and record the
        outcomes; returns when no request is in flight. Tables the server lacks are held
        (:mod:`tablesync.behind`); rows that predate sync are queued by the backfill.

        Pipelined (docs/engine.md): up to ``PIPELINE_DEPTH`` batches queued for one sender
        thread, sent strictly one after another; answered ones acknowledged in order here.
        Ends after about ``RUN_SECONDS``, when drained, or at the first failure (that batch
        and those queued after it go back to the front of the backlog, unacknowledged)."""
        self.metrics.activity.push_started()
        going_on = False                        # a failed run ends the drain's progress
        try:
            try:
                self.schema.check()
            except RemoteError as exc:          # a schema probe failed (network...)
                cause = classify(exc)
                self._error(str(exc), cause)
                t = isinstance(exc, TransientRemoteError)
                return PushResult(RunOutcome.AUTH if isinstance(exc, AuthError) else
                                  RunOutcome.TRANSIENT if t else RunOutcome.PAYLOAD,
                                  retry_after=getattr(exc, "retry_after", None),
                                  unreachable=t and exc.status is None, cause=cause.value)
            result = self._push_run(summary)
            going_on = result.backlog and result.outcome in (RunOutcome.OK,
                                                             RunOutcome.FORBIDDEN)
            return result
        finally:
            self.metrics.activity.push_finished(going_on)
            if self._unsendable:
                self._note(summary, parked=self._unsendable)
                self._unsendable = 0

    def _push_run(self, summary: SyncSummary | None) -> PushResult:
        self._refill()
        if not self.backlog:
            return PushResult(RunOutcome.OK, backlog=self._has_backlog())
        deadline = time.monotonic() + RUN_SECONDS
        sender = Sender(self.remote)
        queued: deque[tuple[list[Change], Future[list[ApplyOutcome]]]] = deque()
        with ThreadPoolExecutor(1, thread_name_prefix="tablesync-push") as pool:
            try:
                while True:
                    self._fill(queued, pool, sender, deadline)
                    if not queued:
                        return PushResult(RunOutcome.OK, backlog=self._has_backlog())
                    batch, answer = queued[0]
                    try:
                        outcomes = answer.result()
                    except BaseException as exc:
                        queued.popleft()
                        self._unsend(queued, sender)
                        return self._batch_failed(batch, exc, summary)
                    queued.popleft()
                    self._acknowledge(batch, outcomes, summary)
            except BaseException:
                sender.stopped = True           # e.g. the ack failed: send nothing more,
                for _batch, answer in queued:   # drop the answers (resent later: they
                    answer.exception()          # are idempotent) and re-read the queue
                self.reset()
                self._more = True
                raise

    def _fill(self, queued: deque[tuple[list[Change], Future[list[ApplyOutcome]]]],
              pool: ThreadPoolExecutor, sender: Sender, deadline: float) -> None:
        """Queue prepared batches for the sender up to the pipeline depth (reading the
        next chunk once when the cached one is used up)."""
        read = False
        while time.monotonic() < deadline:
            # reading a chunk takes as long as sending several batches: queue more of them
            # ahead of it, or the sender runs dry while the chunk is read
            ahead = self._more and len(self.backlog) <= PREFETCH_DEPTH * self.batch_size
            if len(queued) >= (PREFETCH_DEPTH if ahead else PIPELINE_DEPTH):
                return
            if not self.backlog:
                if read or not self._more:
                    return
                self._prefetch([c for batch, _ in queued for c in batch])
                read = True
                continue
            prepared = self._next_batch()
            if prepared is None:
                continue                        # every record of it was parked
            batch, rows = prepared
            queued.append((batch, pool.submit(sender.send, batch[0].table, rows)))

    def _unsend(self, queued: deque[tuple[list[Change], Future[list[ApplyOutcome]]]],
                sender: Sender) -> None:
        """After a failure: the batches queued behind it were not sent; back to the front
        of the backlog, in order."""
        sender.stopped = True
        for _batch, answer in queued:
            answer.exception()                  # wait: each ends unsent at once
        for batch, _answer in reversed(queued):
            self.backlog.extendleft(reversed(batch))
        queued.clear()

    def _prefetch(self, unacked: list[Change]) -> None:
        """Read the next chunk into the backlog while ``unacked`` (batches queued, in
        flight or answered but not yet acknowledged) are being sent. Their entries are
        still pending in the store, so their records are left out of the read (a later read
        picks up any newer entries). The other records' state does not depend on
        how ``unacked`` is acknowledged: an ack only writes the acknowledged records'
        queue entries and versions, and applies server winners for those records only --
        the same as for the rest of a cached chunk while its earlier batches are acked."""
        keys = {(c.table, c.record_id) for c in unacked}
        raw = self.store.pending(limit=self.chunk, skip=keys | self._failed,
                                 skip_tables=self.schema.held_tables)
        # skipped records may have entries newer than their unacknowledged batch
        self._more = (raw.more and bool(raw)) or bool(keys)
        self.backlog.extend(raw)

    def _next_batch(self) -> tuple[list[Change], list[dict[str, Any]]] | None:
        """The next batch and its request rows (JSON-encoded here, off the send path).

        A record whose row cannot be encoded (NaN/Infinity, a BLOB, invalid UTF-8: `unencodable`)
        or whose UUID key Postgres spells otherwise (`sql.wire.key_problems`) is parked alone
        with the reason; the others go. None when all were parked."""
        batch = self._take_batch()
        rows = [row_from_state(c.state) for c in batch]
        encoded = encoded_rows(rows)
        bad = key_problems(self._uuid_keyed, batch) if self._uuid_keyed else {}
        if not encoded.body:
            bad.update(unencodable(rows))
        if not bad:
            return batch, encoded               # (no body: refused by the remote in turn)
        for i, why in bad.items():
            ch = batch[i]
            reason = f"{ch.table} {ch.record_id!r} {why}; fix the row locally, then unpark it"
            self.store.park_changes([ch], reason)
            self._unsendable += 1
            log.error("engine: parked %s", reason)
            self._error(f"parked {reason}", Cause.BAD_LOCAL_ROW)
        kept = [i for i in range(len(batch)) if i not in bad]
        if not kept:
            return None
        return [batch[i] for i in kept], encoded_rows([rows[i] for i in kept])

    def _acknowledge(self, batch: list[Change], outcomes: list[ApplyOutcome],
                     summary: SyncSummary | None) -> None:
        skewed = [(c, server_hlc(o)) for c, o in zip(batch, outcomes)]
        if any(hlc is not None for _c, hlc in skewed):
            batch, outcomes = self._restamp(batch, outcomes, skewed)
        winners = self.store.ack(batch, outcomes)
        self._note(summary, table=batch[0].table if batch else "", pushed=len(batch),
                   parked=sum(o.outcome == Outcome.FORBIDDEN for o in outcomes))
        self.metrics.changes_pushed.inc(len(batch))
        for ch in batch:
            self.metrics.activity.pushed(ch.table)
        self._failed.update((c.table, c.record_id) for c, o in zip(batch, outcomes)
                            if o.outcome == Outcome.ERROR)
        self._notify(winners)

    def _restamp(self, batch: list[Change], outcomes: list[ApplyOutcome],
                 skewed: list[tuple[Change, int | None]]
                 ) -> tuple[list[Change], list[ApplyOutcome]]:
        """Records the server refused for a version too far ahead of its clock get new
        versions from the server's clock (``LocalStore.restamp``) and are pushed again by
        this drain; the rest of the batch is acknowledged as usual."""
        fixed = [(c, hlc) for c, hlc in skewed if hlc is not None]
        done = self.store.restamp(fixed)
        self._more = True                       # re-read: they are pending again
        if fixed:
            (ch, hlc), = fixed[:1]
            ahead = ((ch.state.version.hlc >> 16) - (hlc >> 16)) / 1000
            self._error(f"this machine's clock is about {ahead:.0f} s ahead of the server's "
                        f"(more than its max_clock_skew): re-stamped {done} record(s) "
                        f"against the server's clock; fix the clock", Cause.NONE)
            log.warning("engine: clock about %.0f s ahead of the server: re-stamped %d "
                        "record(s)", ahead, done)
        keep = [i for i, (_c, hlc) in enumerate(skewed) if hlc is None]
        return [batch[i] for i in keep], [outcomes[i] for i in keep]

    def _batch_failed(self, batch: list[Change], exc: BaseException,
                      summary: SyncSummary | None) -> PushResult:
        """The request for ``batch`` failed as a whole (nothing of it acknowledged)."""
        table = batch[0].table
        if self.schema.note_error(table, exc):  # the server lacks the table or a column:
            self.backlog = deque(c for c in self.backlog if c.table != table)   # held
            self._more = True
            return PushResult(RunOutcome.OK, backlog=self._has_backlog())
        if isinstance(exc, ForbiddenError):
            parked = self.store.park_changes(batch, str(exc))
            self._note(summary, parked=parked, error=str(exc))
            return PushResult(RunOutcome.FORBIDDEN, backlog=self._has_backlog())
        if isinstance(exc, RemoteError) and not isinstance(
                exc, (AuthError, TransientRemoteError, PayloadError)):
            return self._batch_refused(batch, exc, summary)   # refused as a whole (4xx)
        self.backlog.extendleft(reversed(batch))
        if not isinstance(exc, RemoteError):
            raise exc                           # a bug or an interrupt: the caller logs it
        cause = classify(exc)
        self._error(str(exc), cause)
        if isinstance(exc, AuthError):
            return PushResult(RunOutcome.AUTH, cause=cause.value)
        if isinstance(exc, TransientRemoteError) and exc.code == STATEMENT_TIMEOUT:
            return self._timed_out(batch, exc, summary)
        if isinstance(exc, TransientRemoteError):
            return PushResult(RunOutcome.TRANSIENT, retry_after=exc.retry_after,
                              unreachable=exc.status is None, cause=cause.value)
        return PushResult(RunOutcome.PAYLOAD, cause=cause.value)

    def _timed_out(self, batch: list[Change], exc: TransientRemoteError,
                   summary: SyncSummary | None) -> PushResult:
        """The server cancelled the batch's statement (timeout): resend it in halves, down
        to one record; a single record that still times out is parked with the reason
        (resending it unchanged would fail the same way for ever)."""
        if len(batch) > 1:
            self._cap = max(1, len(batch) // 2)
            log.warning("engine: the server cancelled a %d-row %s batch (statement "
                        "timeout); resending in batches of %d", len(batch), batch[0].table,
                        self._cap)
            return PushResult(RunOutcome.OK, backlog=True)   # the batch is back in front
        reason = (f"the server cancelled applying this record (statement timeout, "
                  f"SQLSTATE {STATEMENT_TIMEOUT}) even alone: {exc}")
        self.backlog.popleft()                  # parked: not resent in this drain
        parked = self.store.park_changes(batch, reason)
        self._error(reason, Cause.SERVER_REFUSED)
        self._note(summary, parked=parked, error=reason)
        return PushResult(RunOutcome.OK, backlog=self._has_backlog())

    def _refill(self) -> None:
        """Read the next chunk of pending changes (skipping records that failed in this
        drain: they are retried by the next cycle, not hammered back to back)."""
        if self.backlog:
            return
        # a short first read, so the sender starts at once; the next (full) chunk is then
        # read while these batches are being sent
        first = min(self.chunk, PREFETCH_DEPTH * self.batch_size)
        raw = self.store.pending(limit=first, skip=self._failed,
                                 skip_tables=self.schema.held_tables)
        self._more = raw.more and bool(raw)     # a chunk of vanished rows only: stop here
        self.backlog.extend(raw)

    def _has_backlog(self) -> bool:
        more = bool(self.backlog) or self._more
        if not more and self.store.backfilling:     # rows that predate sync: next chunk
            more = self.store.backfill_step(skip_tables=self.schema.held_tables) > 0
        if not more:
            self._failed.clear()                # the drain is over
            self._cap = None
        return more

    def _take_batch(self) -> list[Change]:
        size = 1 if self._solo > 0 else min(self.batch_size, self._cap or self.batch_size)
        first = self.backlog.popleft()
        batch = [first]
        while self.backlog and len(batch) < size and self.backlog[0].table == first.table:
            batch.append(self.backlog.popleft())
        self._solo = max(0, self._solo - len(batch))
        return batch

    def _batch_refused(self, batch: list[Change], exc: RemoteError,
                       summary: SyncSummary | None) -> PushResult:
        self._error(str(exc), classify(exc))
        if len(batch) > 1:                      # isolate the bad record: one per request
            self.backlog.extendleft(reversed(batch))
            self._solo = len(batch)
            return PushResult(RunOutcome.OK, backlog=True)
        self.store.ack(batch, [{"outcome": "error", "row": None, "message": str(exc)}])
        self._failed.add((batch[0].table, batch[0].record_id))
        self._note(summary, error=str(exc))
        return PushResult(RunOutcome.OK, backlog=self._has_backlog())

    def catch_up(self, summary: SyncSummary | None) -> PullResult:
        """Pull every table from its cursor to the watermark taken first."""
        self.metrics.activity.pull_started()
        try:
            return self._catch_up(summary)
        finally:
            self._returned = {}
            self.metrics.activity.pull_finished()

    def _catch_up(self, summary: SyncSummary | None) -> PullResult:
        try:
            self.schema.check()
            mark = self.remote.watermark()
            self._retry_refused(summary)
            for spec in self.project.tables:
                behind = self.schema.held.get(spec.name)
                if behind is not None and behind.missing_table:
                    continue                    # nothing to pull: the server has no table
                try:
                    self._catch_up_table(spec, mark, summary)
                except RemoteError as exc:
                    if not self.schema.note_error(spec.name, exc):
                        raise
            self._catch_up_exits(mark, summary)
        except (RemoteError, StoreError) as exc:
            cause = classify(exc)
            self._error(str(exc), cause)
            if isinstance(exc, AuthError):
                return PullResult(RunOutcome.AUTH, cause=cause.value)
            if isinstance(exc, TransientRemoteError):
                return PullResult(RunOutcome.TRANSIENT, exc.retry_after,
                                  unreachable=exc.status is None, cause=cause.value)
            if isinstance(exc, StoreError):     # locked or full here: the cursor stays,
                return PullResult(RunOutcome.TRANSIENT, cause=cause.value)   # retried
            return PullResult(RunOutcome.PAYLOAD, cause=cause.value)   # PayloadError, 4xx
        return PullResult(RunOutcome.OK)

    def _catch_up_table(self, spec: TableSpec, mark: int, summary: SyncSummary | None) -> None:
        """Page through ``spec``'s changes (see :meth:`_page_through`)."""
        self._page_through(spec.name, spec.scope, mark,
                           lambda page: self._apply_page(spec, page, summary))

    def _catch_up_exits(self, mark: int, summary: SyncSummary | None) -> None:
        """Page through ``tablesync_exits`` (records that left this system's scope on the
        server) like a table, after the tables: a record that left and came back within
        the window was pulled with a newer version, which the exit does not undo. A server
        without the exits table (its ``supabase.sql`` predates it) answers 404: warned
        about once, and the catch-up goes on without it."""
        if self._no_exits:
            return
        try:
            self._page_through(EXITS_TABLE, "scope", mark,
                               lambda page: self.apply_exits(page.rows, page.rejected, summary,
                                                             returned=self._returned))
        except RemoteError as exc:
            if exc.status != 404:
                raise
            self._no_exits = True
            log.warning("engine: the server has no public.%s (%s): apply the current "
                        "supabase.sql, or records moved to another system on the server "
                        "stay here as stale copies", EXITS_TABLE, exc)

    def _page_through(self, table: str, scope: str, mark: int,
                      apply: Callable[[Page], None]) -> None:
        """Pull ``table``'s pages for this system from its cursor until a short page and
        ``apply`` each; the next page is fetched (in a helper thread, joined before
        returning) while the current one is applied. The cursor becomes ``mark`` (the
        watermark taken before the first page) only after the whole table was read."""
        cursor, _ = self.store.get_cursor(table)
        system = self.project.config.system.id

        def fetch(after: int, limit: int) -> Page:
            return self.remote.pull_page(table, scope, system, cursor, after, limit)

        with ThreadPoolExecutor(1, thread_name_prefix="tablesync-pull") as pool:
            limit = MAX_PAGE
            ahead = pool.submit(fetch, 0, limit)
            after = 0
            # bounded: a page always advances `after`; a refused one halves `limit` (at most
            # 10 times in a row: a single row over the cap comes back as a rejected row)
            for _ in range(10**7):
                try:
                    page = ahead.result()
                except ResponseTooLarge as exc:
                    if limit <= 1:
                        raise
                    limit = max(1, limit // 2)  # bounded by bytes too: ask for fewer rows
                    log.warning("engine: %s; asking for %d rows", exc, limit)
                    ahead = pool.submit(fetch, after, limit)
                    continue
                last = page.last_seq
                # only an empty page is the last: PostgREST cuts every response to the
                # project's max_rows (often below MAX_PAGE), so a short page proves nothing
                nxt = last if (last is not None and page.size > 0
                               and last > after) else None   # None: the last page
                if nxt is not None:
                    limit = min(MAX_PAGE, limit * 2)   # back towards full pages
                    ahead = pool.submit(fetch, nxt, limit)
                apply(page)
                if nxt is None:
                    break
                after = nxt
        self.store.set_cursor(table, mark, 0)

    def complete(self, spec: TableSpec, row: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The current server row of a partial Realtime record (fetched by primary key:
        hosted Realtime leaves unchanged TOASTed values out of UPDATE records); [] when
        this system cannot see it any more; None when it cannot be fetched (the caller
        falls back to a catch-up). Touches no cycle state (called from the Realtime
        thread)."""
        fetch = getattr(self.remote, "fetch", None)
        rid = row.get(spec.primary_key)
        if fetch is None or rid is None:
            return None
        try:
            page = fetch(spec.name, spec.scope, self.project.config.system.id,
                         spec.primary_key, [str(rid)])
        except RemoteError as exc:
            log.warning("engine: cannot complete a partial realtime %s record: %s",
                        spec.name, exc)
            return None
        return list(page.rows)

    def apply_exits(self, rows: list[dict[str, Any]], rejected: Iterable[PayloadError] = (),
                    summary: SyncSummary | None = None,
                    returned: dict[tuple[str, str], int] | None = None) -> None:
        """Apply exit rows (catch-up page or Realtime event); log the malformed ones. Touches
        no cycle state, so the engine calls it from its Realtime thread too."""
        bad = [str(r) for r in rejected]
        removed: list[Change] = []
        if rows:
            removed, more_bad = self.store.apply_exits(rows, returned)
            bad += more_bad
        for msg in bad:
            log.error("engine: rejected a remote row: %s", msg)
        self.metrics.changes_pulled.inc(len(removed))
        self._note(summary, pulled=len(rows), applied=len(removed), rejected=len(bad))
        self._notify(removed)

    def _apply_page(self, spec: TableSpec, page: Page, summary: SyncSummary | None) -> None:
        raw = page.rejected_rows if len(page.rejected_rows) == len(page.rejected) else []
        # rows without columns the server lacks: applied without them, not refused
        partial, taken = partial_rows(self.schema, spec, raw)
        for i, bad in enumerate(page.rejected):
            if i in taken:
                continue
            log.error("engine: rejected a remote row: %s", bad)
            row = raw[i] if raw else None
            if isinstance(row, dict) and row.get(spec.primary_key) is not None:
                # recorded (not retried: the same bytes would be refused again)
                self._refuse(spec, str(row[spec.primary_key]), str(bad), None,
                             row.get("_ts_seq"))
        rows = self.admit(spec, [*page.rows, *partial] if partial else page.rows)
        applied = self._apply_rows(spec, rows)
        seen, name, pk = self._returned, spec.name, spec.primary_key
        for row in rows:
            seq = row.get("_ts_seq")
            if type(seq) is int:
                key = (name, str(row.get(pk)))
                if seq > seen.get(key, -1):
                    seen[key] = seq
        self.metrics.changes_pulled.inc(len(applied))
        pulled = len(page.rows) + len(partial)
        self.metrics.activity.pulled(spec.name, pulled)
        self._note(summary, table=spec.name, pulled=pulled, applied=len(applied),
                   rejected=len(page.rejected) - len(partial))
        self._notify(applied)

    def admit(self, spec: TableSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` without those whose version is beyond the clock bound (recorded as
        refused: a replica never adopts such a version; retried by later catch-ups, so the
        row applies once it is within the bound)."""
        now = self.wall.now_ms()
        skew = self.max_skew_ms
        out = []
        for row in rows:
            hlc = row.get("_ts_hlc")
            if type(hlc) is int and too_far_ahead(hlc, now, skew):
                ahead = ((hlc >> 16) - now) / 1000 if 0 <= hlc else 0.0
                self._refuse(spec, str(row.get(spec.primary_key)),
                             f"version {hlc} is {ahead:.0f} s ahead of this machine's clock "
                             f"(max_clock_skew {skew / 1000:.0f} s)", row, row.get("_ts_seq"))
                continue
            out.append(row)
        return out

    def _apply_rows(self, spec: TableSpec, rows: list[dict[str, Any]]) -> list[Change]:
        """Apply ``rows``; when the local database refuses them, halves are applied apart
        until the refused rows are alone, and those are recorded (``_tablesync_refused``)
        while the others apply. Rows applied settle earlier refusals of their records."""
        if not rows:
            return []
        try:
            applied = list(self.store.apply_remote(spec.name, rows))
        except StoreError as exc:
            if classify(exc) in LOCAL_CAUSES:
                raise                           # not the rows: the catch-up is retried
            if len(rows) == 1:
                row = rows[0]
                self._refuse(spec, str(row.get(spec.primary_key)), str(exc), row,
                             row.get("_ts_seq"))
                return []
            half = len(rows) // 2
            return self._apply_rows(spec, rows[:half]) + self._apply_rows(spec, rows[half:])
        if self._refused:
            self.store.settle_refused(spec.name, [str(r.get(spec.primary_key)) for r in rows])
        return applied

    def _refuse(self, spec: TableSpec, rid: str, reason: str, row: dict[str, Any] | None,
                seq: Any) -> None:
        self.store.refuse(spec.name, rid, reason, row, seq if type(seq) is int else None)
        self._refused = True
        msg = f"refused remote row {spec.name} {rid!r}: {reason}"
        log.error("engine: %s", msg)
        self._error(msg, Cause.BAD_LOCAL_ROW)

    def _retry_refused(self, summary: SyncSummary | None) -> None:
        """Apply again the refused rows kept with their image (first thing in a catch-up:
        a newer row of the record pulled later still wins by the LWW rule)."""
        if not self._refused:
            return
        entries = self.store.refused()
        self._refused = bool(entries)
        specs = {t.name: t for t in self.project.tables}
        for e in entries:
            spec, row = specs.get(e["table"]), e["row"]
            if spec is None or not isinstance(row, dict):
                continue
            applied = self._apply_rows(spec, self.admit(spec, [row]))
            self._note(summary, table=spec.name, applied=len(applied))
            self._notify(applied)

    _note = staticmethod(note)
