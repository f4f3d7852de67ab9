"""``Applied``: the changes ``LocalStore.apply_remote`` wrote, built lazily for bulk rows.

A catch-up writes most rows through the store's bulk path (records with no local
version). Their :class:`~tablesync.model.Change` objects are only needed by callbacks, so
the bulk path records ``(record id, op, server row)`` and the ``Change`` (with the same
:func:`~tablesync.rows.state_from_row` conversion the per-row path uses) is built when it is
first read. ``len()`` never builds anything; a listener-less catch-up builds nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Union, overload

from tablesync.model import Change, Op, TableSpec
from tablesync.rows import state_from_row

__all__ = ["Applied"]

_Item = Union[Change, tuple[str, Op, Mapping[str, Any]]]


class Applied(Sequence[Change]):
    """The changes applied to one table, in apply order (compares equal to a list)."""

    __slots__ = ("spec", "_items")

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self._items: list[_Item] = []

    @property
    def table(self) -> str:
        return self.spec.name

    def append(self, change: Change) -> None:
        self._items.append(change)

    def add_row(self, record_id: str, op: Op, row: Mapping[str, Any]) -> None:
        """A row written by the bulk path (its Change is built on first access)."""
        self._items.append((record_id, op, row))

    def add_rows(self, record_ids: Sequence[str], ops: Sequence[Op],
                 rows: Sequence[Mapping[str, Any]]) -> None:
        """:meth:`add_row` for each (record id, op, row)."""
        self._items.extend(zip(record_ids, ops, rows))

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Change: ...

    @overload
    def __getitem__(self, index: slice) -> list[Change]: ...

    def __getitem__(self, index: int | slice) -> Change | list[Change]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self._items)))]
        item = self._items[index]
        if isinstance(item, Change):
            return item
        rid, op, row = item
        change = Change(self.spec.name, rid, op, state_from_row(row, self.spec))
        self._items[index] = change
        return change

    def __iter__(self) -> Iterator[Change]:
        for i in range(len(self._items)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like list

    def __repr__(self) -> str:
        return f"Applied({self.spec.name!r}, {list(self)!r})"
