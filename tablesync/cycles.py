"""One push batch or one catch-up pull: the blocking work behind StartPush/StartCatchUp.

Push: ``LocalStore.pending(limit=chunk)`` is read in chunks and pushed in per-table
batches of ``batch_size`` through the apply RPC; outcomes go to ``LocalStore.ack``
(synced/parked/retry; server winners applied at once). A batch refused as a whole
(non-transient 4xx) is resent one record per request so a bad record is isolated; a record
with an ``error`` outcome is skipped for the rest of the drain.

Pull: ``watermark()`` first, then per table pages of ``_ts_xid >= cursor`` ordered by
``_ts_seq`` until a short page, applied with ``LocalStore.apply_remote``; the cursor becomes
the watermark only after the whole table was read.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from tablesync.errors import AuthError, PayloadError, RemoteError, TransientRemoteError
from tablesync.machine import PullResult, PushResult
from tablesync.metrics import Metrics
from tablesync.model import Change, TableSpec
from tablesync.project import Project
from tablesync.remote.base import (MAX_PAGE, ApplyOutcome, ForbiddenError, Page, Remote,
                                   encoded_rows)
from tablesync.rows import row_from_state
from tablesync.store import LocalStore

log = logging.getLogger("tablesync.engine")

PENDING_CHUNK = 5000                            # coalesced changes read per queue scan
RUN_SECONDS = 1.0                               # back-to-back batches per push_batch call

__all__ = ["Cycles", "PENDING_CHUNK", "SyncSummary"]


@dataclass
class SyncSummary:
    """What one ``sync_once()`` did."""

    pushed: int = 0
    pulled: int = 0
    applied: int = 0
    rejected: int = 0
    parked: int = 0
    errors: list[str] = field(default_factory=list)


class Cycles:
    """Push and pull for one project; called from one thread at a time.

    Args:
        project, store, remote: what to sync.
        batch_size: records per apply request.
        metrics: counters to feed.
        notify: called with remote changes applied locally (for callbacks).
        on_error: called with a one-line description of every failure.
    """

    def __init__(self, project: Project, store: LocalStore, remote: Remote, *,
                 batch_size: int, metrics: Metrics,
                 notify: Callable[[Iterable[Change]], None],
                 on_error: Callable[[str], None]) -> None:
        self.project, self.store, self.remote = project, store, remote
        self.batch_size, self.metrics = batch_size, metrics
        self._notify, self._error = notify, on_error
        self.backlog: deque[Change] = deque()
        self.chunk = max(batch_size * 20, PENDING_CHUNK)
        self._more = False                      # the store holds more than the cached chunk
        self._failed: set[tuple[str, str]] = set()   # 'error' outcomes in this drain
        self._solo = 0

    def reset(self) -> None:
        """Forget the cached chunk (re-read the queue next time)."""
        self.backlog.clear()
        self._more = False

    def push_batch(self, summary: SyncSummary | None) -> PushResult:
        """Push a run of batches (each one table, up to batch_size records) and record the
        outcomes; returns when no request is in flight.

        The run is pipelined over one connection: while batch k is in flight, batch k+1 is
        taken from the cached chunk (or the next chunk is read from the store, see
        :meth:`_prefetch`) and encoded; k+1 is sent only after k's answer came back (the
        server applies batches strictly in order, one at a time), and k is acknowledged
        locally while k+1 is in flight. The run ends after about ``RUN_SECONDS``, when the
        queue is drained, or at the first failure (the failed batch and the one prepared
        after it go back to the front of the backlog; nothing was acknowledged for them).
        """
        self._refill()
        if not self.backlog:
            return PushResult("ok", backlog=self._has_backlog())
        deadline = time.monotonic() + RUN_SECONDS
        with ThreadPoolExecutor(1, thread_name_prefix="tablesync-push") as pool:
            batch, rows = self._next_batch()
            flight = pool.submit(self.remote.apply, batch[0].table, rows)
            while True:
                prefetched, ahead = False, None
                if time.monotonic() < deadline:
                    if not self.backlog and self._more:
                        self._prefetch(batch)
                        prefetched = True
                    if self.backlog:
                        ahead = self._next_batch()
                try:
                    outcomes = flight.result()
                except BaseException as exc:
                    if prefetched:
                        self.reset()            # re-read after the failed batch instead
                        self._more = True
                    elif ahead is not None:
                        self.backlog.extendleft(reversed(ahead[0]))
                    return self._batch_failed(batch, exc, summary)
                if prefetched and any(o.outcome == "superseded" for o in outcomes):
                    self.reset()                # a winner is applied locally by the ack:
                    self._more, ahead = True, None   # read the next chunk after it
                if ahead is not None:
                    flight = pool.submit(self.remote.apply, ahead[0][0].table, ahead[1])
                try:
                    self._acknowledge(batch, outcomes, summary)
                except BaseException:
                    self.reset()                # in-flight answer dropped: re-read the queue
                    self._more = True
                    raise
                if ahead is None:
                    return PushResult("ok", backlog=self._has_backlog())
                batch, rows = ahead

    def _prefetch(self, flying: list[Change]) -> None:
        """Read the next chunk into the backlog while ``flying`` (the last batch of the
        current chunk) is in flight. Its entries are still pending in the store, so every
        record sharing a queue entry with it is left out (picked up by a later read); the
        other records' coalesced state does not depend on how ``flying`` is acknowledged
        (the caller discards the chunk if a server winner will be applied locally)."""
        ids = {q for c in flying for q in c.queue_ids}
        raw = self.store.pending(limit=self.chunk)
        fresh = [c for c in raw if ids.isdisjoint(c.queue_ids)
                 and (c.table, c.record_id) not in self._failed]
        self._more = len(raw) >= self.chunk and bool(fresh) or len(fresh) < len(raw)
        self.backlog.extend(fresh)

    def _next_batch(self) -> tuple[list[Change], list[dict[str, Any]]]:
        """The next batch and its request rows (JSON-encoded here, off the send path)."""
        batch = self._take_batch()
        return batch, encoded_rows([row_from_state(c.state) for c in batch])

    def _acknowledge(self, batch: list[Change], outcomes: list[ApplyOutcome],
                     summary: SyncSummary | None) -> None:
        winners = self.store.ack(batch, [{"outcome": o.outcome, "row": o.row,
                                          "message": o.message} for o in outcomes])
        self._note(summary, pushed=len(batch),
                   parked=sum(o.outcome == "forbidden" for o in outcomes))
        self.metrics.changes_pushed.inc(len(batch))
        self._failed.update((c.table, c.record_id) for c, o in zip(batch, outcomes)
                            if o.outcome == "error")
        self._notify(winners)

    def _batch_failed(self, batch: list[Change], exc: BaseException,
                      summary: SyncSummary | None) -> PushResult:
        """The request for ``batch`` failed as a whole (nothing of it acknowledged)."""
        if isinstance(exc, ForbiddenError):
            for ch in batch:
                self.store.park(ch.table, ch.record_id, str(exc))
            self._note(summary, parked=len(batch), error=str(exc))
            return PushResult("forbidden", backlog=self._has_backlog())
        if isinstance(exc, RemoteError) and not isinstance(
                exc, (AuthError, TransientRemoteError, PayloadError)):
            return self._batch_refused(batch, exc, summary)   # refused as a whole (4xx)
        self.backlog.extendleft(reversed(batch))
        if not isinstance(exc, RemoteError):
            raise exc                           # a bug or an interrupt: the caller logs it
        self._error(str(exc))
        if isinstance(exc, AuthError):
            return PushResult("auth")
        if isinstance(exc, TransientRemoteError):
            return PushResult("transient", retry_after=exc.retry_after)
        return PushResult("payload")

    def _refill(self) -> None:
        """Read the next chunk of pending changes (skipping records that failed in this
        drain: they are retried by the next cycle, not hammered back to back)."""
        if self.backlog:
            return
        raw = self.store.pending(limit=self.chunk)
        fresh = [c for c in raw if (c.table, c.record_id) not in self._failed]
        self._more = len(raw) >= self.chunk and bool(fresh)
        self.backlog.extend(fresh)

    def _has_backlog(self) -> bool:
        more = bool(self.backlog) or self._more
        if not more:
            self._failed.clear()                # the drain is over
        return more

    def _take_batch(self) -> list[Change]:
        size = 1 if self._solo > 0 else self.batch_size
        first = self.backlog.popleft()
        batch = [first]
        while self.backlog and len(batch) < size and self.backlog[0].table == first.table:
            batch.append(self.backlog.popleft())
        self._solo = max(0, self._solo - len(batch))
        return batch

    def _batch_refused(self, batch: list[Change], exc: RemoteError,
                       summary: SyncSummary | None) -> PushResult:
        self._error(str(exc))
        if len(batch) > 1:                      # isolate the bad record: one per request
            self.backlog.extendleft(reversed(batch))
            self._solo = len(batch)
            return PushResult("ok", backlog=True)
        self.store.ack(batch, [{"outcome": "error", "row": None, "message": str(exc)}])
        self._failed.add((batch[0].table, batch[0].record_id))
        self._note(summary, error=str(exc))
        return PushResult("ok", backlog=self._has_backlog())

    def catch_up(self, summary: SyncSummary | None) -> PullResult:
        """Pull every table from its cursor to the watermark taken first."""
        try:
            mark = self.remote.watermark()
            for spec in self.project.tables:
                self._catch_up_table(spec, mark, summary)
        except AuthError as exc:
            self._error(str(exc))
            return PullResult("auth")
        except TransientRemoteError as exc:
            self._error(str(exc))
            return PullResult("transient", exc.retry_after)
        except RemoteError as exc:              # PayloadError, 4xx
            self._error(str(exc))
            return PullResult("payload")
        return PullResult("ok")

    def _catch_up_table(self, spec: TableSpec, mark: int, summary: SyncSummary | None) -> None:
        """Page through ``spec``'s changes; the next page is fetched (in a helper thread,
        joined before returning) while the current one is applied locally."""
        cursor, _ = self.store.get_cursor(spec.name)
        system = self.project.config.system.id

        def fetch(after: int) -> Page:
            return self.remote.pull_page(spec.name, spec.scope, system, cursor, after,
                                         MAX_PAGE)

        with ThreadPoolExecutor(1, thread_name_prefix="tablesync-pull") as pool:
            ahead = pool.submit(fetch, 0)
            after = 0
            for _ in range(10**7):              # bounded: a page always advances `after`
                page = ahead.result()
                more = not (page.size < MAX_PAGE or page.last_seq is None
                            or page.last_seq <= after)
                if more:
                    ahead = pool.submit(fetch, page.last_seq)
                self._apply_page(spec, page, summary)
                if not more:
                    break
                after = page.last_seq
        self.store.set_cursor(spec.name, mark, 0)

    def _apply_page(self, spec: TableSpec, page: Page, summary: SyncSummary | None) -> None:
        for bad in page.rejected:
            log.error("engine: rejected a remote row: %s", bad)
        applied = self.store.apply_remote(spec.name, page.rows) if page.rows else []
        self.metrics.changes_pulled.inc(len(applied))
        self._note(summary, pulled=len(page.rows), applied=len(applied),
                   rejected=len(page.rejected))
        self._notify(applied)

    @staticmethod
    def _note(summary: SyncSummary | None, *, pushed: int = 0, pulled: int = 0,
              applied: int = 0, rejected: int = 0, parked: int = 0, error: str = "") -> None:
        if summary is None:
            return
        summary.pushed += pushed
        summary.pulled += pulled
        summary.applied += applied
        summary.rejected += rejected
        summary.parked += parked
        if error:
            summary.errors.append(error)
