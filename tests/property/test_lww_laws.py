"""Hypothesis proofs of the conflict rule's laws (tablesync.lww).

A *write* is identified by its version: every origin's HLC is strictly increasing, so no two
distinct writes share ``(hlc, origin)``. The laws are stated over such sets of writes; the
data image is compared too (``RowState.__eq__`` ignores it), so a law cannot hold by
accident of equality.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from tablesync import lww
from tablesync.model import ZERO, DeletePolicy, RowState, Version

POLICIES = st.sampled_from(list(DeletePolicy))
# Few origins and a small clock range, so equal hlc values (ties) are common.
ORIGINS = st.sampled_from(["", "a", "b", "server", "sys-b"])
HLCS = st.integers(min_value=0, max_value=12)
versions = st.builds(Version, HLCS, ORIGINS)


@st.composite
def writes(draw: st.DrawFn, version: Version | None = None) -> RowState:
    """One write; ``base`` may be anything (the laws must not depend on it)."""
    v = version if version is not None else draw(versions)
    deleted = draw(st.booleans())
    base = draw(st.one_of(st.just(ZERO), versions))
    return RowState(v, deleted, base, {"v": repr(v), "d": deleted, "b": repr(base)})


def distinct_writes(min_size: int = 0, max_size: int = 8) -> st.SearchStrategy[list[RowState]]:
    """Writes with pairwise distinct versions (what real replicas produce)."""
    return st.lists(writes(), min_size=min_size, max_size=max_size, unique_by=lambda s: s.version)


def same(a: RowState | None, b: RowState | None) -> bool:
    """Equal including the data image (RowState's own equality skips data)."""
    if a is None or b is None:
        return a is b
    return a == b and dict(a.data) == dict(b.data)


# --- merge laws -------------------------------------------------------------------------


@given(distinct_writes(min_size=2, max_size=2), POLICIES)
def test_resolve_is_commutative(ws: list[RowState], policy: DeletePolicy) -> None:
    a, b = ws
    assert same(lww.resolve(a, b, policy), lww.resolve(b, a, policy))


@given(distinct_writes(min_size=3, max_size=3), POLICIES)
def test_resolve_is_associative(ws: list[RowState], policy: DeletePolicy) -> None:
    a, b, c = ws
    left = lww.resolve(lww.resolve(a, b, policy), c, policy)
    right = lww.resolve(a, lww.resolve(b, c, policy), policy)
    assert same(left, right)


@given(writes(), POLICIES)
def test_resolve_is_idempotent(a: RowState, policy: DeletePolicy) -> None:
    assert same(lww.resolve(a, a, policy), a)
    assert same(lww.merge([a, a, a], policy), a)


@given(distinct_writes(max_size=7), POLICIES, st.randoms(use_true_random=False))
def test_merge_ignores_order_and_repetition(
    ws: list[RowState], policy: DeletePolicy, rnd: Any
) -> None:
    """merge is a function of the *set* of writes: any order, any duplicates."""
    expected = lww.merge(ws, policy)
    shuffled = ws * 2
    rnd.shuffle(shuffled)
    assert same(lww.merge(shuffled, policy), expected)


@given(distinct_writes(max_size=6), distinct_writes(max_size=6), POLICIES)
def test_merge_of_merges_is_merge_of_union(
    xs: list[RowState], ys: list[RowState], policy: DeletePolicy
) -> None:
    """Replicas may merge subsets first and exchange winners: same result."""
    union = {s.version: s for s in xs}
    union.update({s.version: s for s in ys if s.version not in union})
    ys = [union[s.version] for s in ys]  # one write per version across both sides
    parts = [m for m in (lww.merge(xs, policy), lww.merge(ys, policy)) if m is not None]
    assert same(lww.merge(parts, policy), lww.merge(union.values(), policy))


def test_merge_of_nothing_is_none() -> None:
    assert lww.merge([]) is None


# --- the total order -----------------------------------------------------------------------


@given(distinct_writes(min_size=2, max_size=2), POLICIES)
def test_sort_key_separates_distinct_writes(ws: list[RowState], policy: DeletePolicy) -> None:
    """Distinct writes never compare equal, so the order is total on writes."""
    a, b = ws
    assert lww.sort_key(a, policy) != lww.sort_key(b, policy)
    assert lww.beats(a, b, policy) != lww.beats(b, a, policy)


@given(distinct_writes(min_size=1), POLICIES)
def test_merge_is_the_maximum_by_sort_key(ws: list[RowState], policy: DeletePolicy) -> None:
    best = max(ws, key=lambda s: lww.sort_key(s, policy))
    assert same(lww.merge(ws, policy), best)
    for s in ws:
        if s is not best:
            assert lww.beats(best, s, policy)


@given(distinct_writes(min_size=3, max_size=3), POLICIES)
def test_beats_is_transitive(ws: list[RowState], policy: DeletePolicy) -> None:
    for a, b, c in itertools.permutations(ws):
        if lww.beats(a, b, policy) and lww.beats(b, c, policy):
            assert lww.beats(a, c, policy)


@given(writes(), writes(), POLICIES)
def test_resolve_agrees_with_sort_key(a: RowState, b: RowState, policy: DeletePolicy) -> None:
    """resolve picks the greater key and keeps its first argument on an exact tie."""
    winner = lww.resolve(a, b, policy)
    ka, kb = lww.sort_key(a, policy), lww.sort_key(b, policy)
    assert winner is (b if kb > ka else a)


@given(st.lists(writes(), max_size=6), POLICIES)
def test_last_write_wins_orders_by_version_only(ws: list[RowState], policy: DeletePolicy) -> None:
    """Under last-write-wins (and for edits under both policies) the key is the version."""
    for s in ws:
        if policy is DeletePolicy.LAST_WRITE_WINS or not s.deleted:
            key = lww.sort_key(s, policy)
            assert (key[0], key[1]) == (s.version.hlc, s.version.origin)


# --- ties on hlc ----------------------------------------------------------------------------


@given(HLCS, ORIGINS, ORIGINS, st.booleans(), st.booleans(), POLICIES)
def test_hlc_ties_are_broken_by_origin(
    hlc: int, o1: str, o2: str, d1: bool, d2: bool, policy: DeletePolicy
) -> None:
    """Same hlc, different origins: the greater origin wins, whichever side holds it."""
    assume(o1 != o2)
    base = Version(0, "")
    a = RowState(Version(hlc + 1, o1), d1, base, {"o": o1})
    b = RowState(Version(hlc + 1, o2), d2, base, {"o": o2})
    if d1 and d2 or not (d1 or d2) or policy is DeletePolicy.LAST_WRITE_WINS:
        hi = a if o1 > o2 else b
        assert same(lww.resolve(a, b, policy), hi)
        assert same(lww.resolve(b, a, policy), hi)
    else:
        # edit vs delete under edit-wins: the delete sits at its base (below the edit)
        edit = b if d1 else a
        assert same(lww.resolve(a, b, policy), edit)
        assert same(lww.resolve(b, a, policy), edit)


def test_tie_example_is_deterministic() -> None:
    a = RowState(Version(100, "sys-a"), data={"x": 1})
    b = RowState(Version(100, "sys-b"), data={"x": 2})
    assert lww.resolve(a, b) is b and lww.resolve(b, a) is b


# --- edit-wins, as documented in lww.py -------------------------------------------------------

EW = DeletePolicy.EDIT_WINS


@given(st.lists(versions, min_size=3, max_size=3).map(sorted))
def test_delete_beats_an_edit_it_had_seen(vs: list[Version]) -> None:
    """An edit at or below the delete's base was seen by the deleter: the delete wins."""
    edit_v, base, del_v = vs
    assume(base < del_v)
    edit = RowState(edit_v, data={"e": 1})
    delete = RowState(del_v, True, base, data={"d": 1})
    assert lww.resolve(edit, delete, EW) is delete
    assert lww.resolve(delete, edit, EW) is delete
    assert not lww.is_concurrent(delete, edit)


@given(versions, versions, versions)
def test_unseen_edit_restores_the_row(base: Version, edit_v: Version, del_v: Version) -> None:
    """An edit above the delete's base (concurrent, whatever its hlc vs the delete's) wins."""
    assume(base < edit_v and base < del_v and edit_v != del_v)
    edit = RowState(edit_v, False, base, data={"e": 1})
    delete = RowState(del_v, True, base, data={"d": 1})
    assert lww.resolve(edit, delete, EW) is edit
    assert lww.resolve(delete, edit, EW) is edit
    # the deleted-then-restored write was concurrent: the restore is logged
    assert lww.is_concurrent(edit, delete)


@given(versions, versions, versions)
def test_last_write_wins_policy_lets_the_later_stamp_win(
    base: Version, edit_v: Version, del_v: Version
) -> None:
    assume(base < edit_v and base < del_v and edit_v != del_v)
    edit = RowState(edit_v, False, base)
    delete = RowState(del_v, True, base)
    later = edit if edit_v > del_v else delete
    assert lww.resolve(edit, delete, DeletePolicy.LAST_WRITE_WINS) is later
    assert lww.resolve(delete, edit, DeletePolicy.LAST_WRITE_WINS) is later


@given(st.lists(versions, min_size=3, max_size=3, unique=True).map(sorted))
def test_reinsert_after_delete_wins(vs: list[Version]) -> None:
    """A re-insert by anyone who saw the delete is stamped above it and wins."""
    base, del_v, ins_v = vs
    delete = RowState(del_v, True, base)
    reinsert = RowState(ins_v, False, del_v)
    for policy in DeletePolicy:
        assert lww.resolve(delete, reinsert, policy) is reinsert
        assert not lww.is_concurrent(reinsert, delete)


@given(versions, versions, versions, versions)
def test_deletes_order_by_base_then_stamp(b1: Version, v1: Version, b2: Version, v2: Version) -> None:
    assume(v1 != v2)
    d1, d2 = RowState(v1, True, b1), RowState(v2, True, b2)
    expected = d1 if (b1, v1) > (b2, v2) else d2
    assert lww.resolve(d1, d2, EW) is expected
    assert lww.resolve(d2, d1, EW) is expected


# --- is_concurrent ------------------------------------------------------------------------------


@given(writes(), writes())
def test_is_concurrent_means_the_winner_had_not_seen_the_loser(w: RowState, l: RowState) -> None:
    assert lww.is_concurrent(w, l) == (w.version != l.version and w.base < l.version)


@given(writes())
def test_a_write_is_never_concurrent_with_itself(w: RowState) -> None:
    assert not lww.is_concurrent(w, w)
