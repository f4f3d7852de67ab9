"""The conflict rule: one pure function, mirrored by the generated Postgres apply function.

Every write to a record is a :class:`~tablesync.model.RowState`. The winner of any set of
writes is the maximum under one total order, so merging is commutative, associative and
idempotent by construction, and every replica that has seen the same writes holds the same
row.

``last-write-wins``: the key is ``(hlc, origin)``: a later stamp wins; equal stamps are
ordered by the origin system id (never "keep local", which lets replicas disagree forever).

``edit-wins`` (default for deletes): a delete is placed in the order at the version it
*deleted* (its ``base``), just above that version. So an edit the deleter had seen
(``edit.version <= delete.base``) loses to the delete, and an edit the deleter had not
seen (concurrent, or a re-insert after the delete) is above it and wins, restoring the row.
Between themselves deletes order by base, then by their own stamp.

The key is a 5-tuple so that both policies share one comparison (and one SQL row
comparison on the server): ``(pos.hlc, pos.origin, is_delete, version.hlc, version.origin)``
where ``pos`` is the version itself, or a delete's base under ``edit-wins``.
"""

from __future__ import annotations

from typing import Iterable

from tablesync.model import DeletePolicy, RowState

SortKey = tuple[int, str, int, int, str]


def sort_key(state: RowState, policy: DeletePolicy = DeletePolicy.EDIT_WINS) -> SortKey:
    """The state's position in the total order under ``policy``."""
    v = state.version
    if policy is DeletePolicy.EDIT_WINS and state.deleted:
        return (state.base.hlc, state.base.origin, 1, v.hlc, v.origin)
    return (v.hlc, v.origin, int(state.deleted), v.hlc, v.origin)


def resolve(
    a: RowState, b: RowState, policy: DeletePolicy = DeletePolicy.EDIT_WINS
) -> RowState:
    """Return the winner of two writes to the same record (``a`` on an exact tie)."""
    return b if sort_key(b, policy) > sort_key(a, policy) else a


def merge(
    states: Iterable[RowState], policy: DeletePolicy = DeletePolicy.EDIT_WINS
) -> RowState | None:
    """The winner among any number of writes, or None for none."""
    best: RowState | None = None
    for s in states:
        best = s if best is None else resolve(best, s, policy)
    return best


def beats(a: RowState, b: RowState, policy: DeletePolicy = DeletePolicy.EDIT_WINS) -> bool:
    """True when ``a`` is strictly later than ``b`` in the total order."""
    return sort_key(a, policy) > sort_key(b, policy)


def is_concurrent(winner: RowState, loser: RowState) -> bool:
    """True when the winner's writer had not seen the loser: a conflict to log.

    "Seen" is judged by versions: a writer whose copy held a version at or above the
    loser's is taken to have seen it (HLC order includes causality).
    """
    return winner.version != loser.version and winner.base < loser.version


def overwrote_pending(winner: RowState, pending: RowState) -> bool:
    """True when ``winner`` overwrote a local write that was still pending (never
    acknowledged), unless the winner was written on top of exactly that version.

    :func:`is_concurrent` takes "my copy held a version at or above the loser's" as having
    seen it; that holds for stored versions, not for a write the server never acknowledged:
    a chain of later server writes (a dashboard edit, then a move; base above the local
    write's stamp) never saw it. Only a writer whose base *is* the pending version can
    have read it (it reached the server, and the acknowledgement was lost)."""
    return winner.version != pending.version and winner.base != pending.version
