"""Plain data types shared by every layer (stdlib only)."""

from __future__ import annotations

import functools

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping, NamedTuple


# The server's log of records that left a system's scope (see tablesync.sql.postgres).
EXITS_TABLE = "tablesync_exits"
# The version of a row that existed before its table was synced (tablesync.backfill): the
# lowest there is, so it never beats a copy the server already holds.
BACKFILL_HLC = 1


class DeletePolicy(str, Enum):
    """How a delete concurrent with an edit is resolved (``on_delete_conflict``)."""

    EDIT_WINS = "edit-wins"
    LAST_WRITE_WINS = "last-write-wins"


class Op(str, Enum):
    """The operation a ``sync_queue`` entry records."""

    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


@dataclass(frozen=True, order=True)
class Version:
    """A write's place in the total order: hybrid logical clock, then origin system id.

    ``hlc`` packs milliseconds since the Unix epoch in the high bits and a 16-bit logical
    counter in the low bits (see :mod:`tablesync.clock`).
    """

    hlc: int
    origin: str


ZERO = Version(0, "")


@dataclass(frozen=True)
class RowState:
    """One replica's (or the server's) state of one record.

    ``version`` stamps the write that produced this state. ``base`` is the version the
    writer's copy held just before it wrote (``ZERO`` for a fresh insert): for a delete
    it is the version that was deleted. ``data`` holds the column values (the last known
    full image, kept for tombstones too).
    """

    version: Version
    deleted: bool = False
    base: Version = ZERO
    data: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ColumnSpec:
    """A column as declared in ``schemas/*.sql``."""

    name: str
    type: str
    nullable: bool = True
    default: str | None = None


@dataclass(frozen=True)
class ForeignKey:
    """``columns`` reference ``ref_table(ref_columns)``."""

    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class TableSpec:
    """A synced table: its shape (from SQL) joined with its ``sync.toml`` settings."""

    name: str
    columns: tuple[ColumnSpec, ...]
    primary_key: str
    scope: str
    priority: int = 0
    on_delete_conflict: DeletePolicy = DeletePolicy.EDIT_WINS
    foreign_keys: tuple[ForeignKey, ...] = ()
    schema_file: str = ""

    @functools.cached_property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


@dataclass(frozen=True)
class Change:
    """A local change ready to push: the coalesced latest state of one record."""

    table: str
    record_id: str
    op: Op
    state: RowState
    queue_ids: tuple[int, ...] = ()


class Outcome(str, Enum):
    """The per-row result of the apply function (the server's and the memory model's)."""

    APPLIED = "applied"                 # stored
    DUPLICATE = "duplicate"             # this exact version was stored already
    SUPERSEDED = "superseded"           # a version above it is stored (returned as ``row``)
    FORBIDDEN = "forbidden"             # not visible/writable for this system (RLS)
    ERROR = "error"                     # refused for its content (``message``)


SETTLED = frozenset({Outcome.APPLIED, Outcome.DUPLICATE, Outcome.SUPERSEDED})


class ApplyOutcome(NamedTuple):
    """One element of the apply RPC's answer (same order as the pushed rows). A named
    tuple: a push builds one per row, and this is about 3x cheaper than a frozen
    dataclass."""

    id: str
    outcome: Outcome
    row: dict[str, Any] | None = None
    message: str | None = None


@dataclass(frozen=True)
class Conflict:
    """A concurrent write that lost: both versions, for the conflict log."""

    table: str
    record_id: str
    winner: RowState
    loser: RowState
    resolved_at: str
    reason: str
