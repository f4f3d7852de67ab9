"""One running replica per system id: the engine's claim on its system id on the server.

Two SQLite files syncing as one system id would stamp versions with the same origin, so the
total order's tie-break could not separate them and each would take the other's writes for
its own echoes (docs/engine.md, "One replica per system id"). Each database has a random
replica id; the server's ``tablesync_claim`` grants the system id to one replica id at a
time, for a lease renewed while the engine runs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tablesync.errors import DuplicateReplicaError, RemoteError

log = logging.getLogger("tablesync.engine")

CLAIM_LEASE = 120    # seconds a replica's hold on its system id lasts without renewal
CLAIM_RENEW = 30.0   # renewed after a successful cycle at most this often

__all__ = ["CLAIM_LEASE", "CLAIM_RENEW", "ReplicaClaim"]


class ReplicaClaim:
    """This replica's hold on ``system_id`` through ``remote`` (any object with ``claim`` /
    ``release``; without them, e.g. the in-memory remote, claiming is a no-op)."""

    def __init__(self, remote: Any, store: Any, system_id: str) -> None:
        self.remote, self.store, self.system_id = remote, store, system_id
        self.claimed_at: float | None = None    # monotonic time of the last grant
        self.unsupported = False                # the server has no tablesync_claim (404)

    def due(self) -> bool:
        """Held, and last renewed more than ``CLAIM_RENEW`` seconds ago."""
        return (self.claimed_at is not None
                and time.monotonic() - self.claimed_at > CLAIM_RENEW)

    def claim(self, *, renew: bool = False) -> bool:
        """Claim (or renew) the system id; True when the claim is new (nobody held it, or a
        lapsed holder). Raises :class:`DuplicateReplicaError` while another replica holds
        it. A server without ``tablesync_claim`` (an older supabase.sql) is warned about
        once, then trusted; with ``renew``, a failed request is tried again next time."""
        claim = getattr(self.remote, "claim", None)
        if claim is None or self.unsupported:
            return False
        try:
            res = claim(self.store.replica_id, CLAIM_LEASE)
        except RemoteError as exc:
            if exc.status == 404:
                self.unsupported = True
                log.warning("engine: the server has no tablesync_claim (%s): apply the "
                            "current supabase.sql, or two replicas with one system id go "
                            "unnoticed", exc)
                return False
            if renew:
                return False
            raise
        if not res.get("claimed"):
            raise DuplicateReplicaError(
                f"system id {self.system_id!r} is held by another replica (replica "
                f"{str(res.get('holder'))[:8]}, last seen {res.get('seen_seconds_ago')} s "
                f"ago): two SQLite files cannot sync as one system. Stop the other engine, "
                f"or give this database its own [system] id (docs/quickstart.md). A replica "
                f"that is gone for good releases it {CLAIM_LEASE} s after it was last seen.")
        self.claimed_at = time.monotonic()
        return bool(res.get("fresh"))

    def release(self) -> None:
        """Give the system id up at once (best effort: it lapses anyway)."""
        release = getattr(self.remote, "release", None)
        if self.claimed_at is None or release is None:
            return
        self.claimed_at = None
        try:
            release(self.store.replica_id)
        except Exception as exc:  # noqa: BLE001 - shutting down; the claim lapses
            log.info("engine: could not release the system id (%s); it lapses in %d s",
                     exc, CLAIM_LEASE)
