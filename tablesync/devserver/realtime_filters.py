"""``postgres_changes`` subscription parameters, parsed as Supabase parses them (pure).

Mirrors ``Extensions.PostgresCdcRls.Subscriptions.parse_subscription_params``: event filter,
schema/table defaults, and the ``filter`` string (``col=op.value``, comma-separated AND,
``not.`` prefix, ``in.(a,b)`` lists, double-quoted values).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tablesync.devserver.errors import PayloadError

OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "like", "ilike", "is", "match",
             "imatch", "isdistinct")
ACTIONS = ("INSERT", "UPDATE", "DELETE")


class SubscriptionParamsError(PayloadError):
    """Subscription params Supabase would refuse; the message is Supabase's."""


@dataclass(frozen=True)
class Filter:
    """One condition: ``column op value`` (``negate`` for the ``not.`` prefix)."""

    column: str
    op: str
    value: str
    negate: bool = False

    def as_json(self) -> list[Any]:
        return [self.column, self.op, self.value, self.negate]


@dataclass(frozen=True)
class SubscriptionSpec:
    """What one ``postgres_changes`` entry asks for."""

    action: str  # "*" or one of ACTIONS
    schema: str  # "*" means every schema
    table: str  # "*" means every table
    filters: tuple[Filter, ...] = ()

    def wants(self, action: str) -> bool:
        return self.action == "*" or self.action == action

    def describe(self) -> str:
        """Supabase's ``params_to_log`` rendering, used in its error messages."""
        filters = ", ".join(
            "{" + ", ".join([json.dumps(f.column), json.dumps(f.op), json.dumps(f.value),
                             "true" if f.negate else "false"]) + "}"
            for f in self.filters)
        return (f"event: {self.action}, schema: {self.schema}, table: {self.table}, "
                f"filters: [{filters}], select: nil")


def action_filter(params: dict[str, Any]) -> str:
    """``*`` unless ``event`` names INSERT/UPDATE/DELETE (case-insensitive)."""
    event = params.get("event")
    if isinstance(event, str) and event.upper() in ACTIONS:
        return event.upper()
    return "*"


def parse_params(params: Any) -> SubscriptionSpec:
    """Parse one ``postgres_changes`` entry; raise :class:`SubscriptionParamsError`."""
    if not isinstance(params, dict):
        raise SubscriptionParamsError(_no_params(params))
    action = action_filter(params)
    schema, table, flt = params.get("schema"), params.get("table"), params.get("filter")
    if isinstance(schema, str) and isinstance(table, str) and isinstance(flt, str):
        return SubscriptionSpec(action, schema, table, parse_filter(flt))
    if isinstance(schema, str) and isinstance(table, str) and "filter" not in params:
        return SubscriptionSpec(action, schema, table)
    if isinstance(schema, str) and "table" not in params and "filter" not in params:
        return SubscriptionSpec(action, schema, "*")
    if isinstance(table, str) and "schema" not in params and "filter" not in params:
        return SubscriptionSpec(action, "public", table)
    raise SubscriptionParamsError(_no_params(params))


def elixir_inspect(value: Any) -> str:
    """``inspect/1`` of a decoded JSON value, as Supabase renders params in messages."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: str(kv[0]).encode())
        return "%{" + ", ".join(f"{elixir_inspect(k)} => {elixir_inspect(v)}"
                               for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(elixir_inspect(v) for v in value) + "]"
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _no_params(params: Any) -> str:
    shown = "<redacted>" if isinstance(params, dict) and (
        "user_token" in params or "auth_token" in params) else elixir_inspect(params)
    return ("No subscription params provided. Please provide at least a `schema` or `table` "
            f"to subscribe to: {shown}")


def parse_filter(text: str) -> tuple[Filter, ...]:
    """Parse a filter string; raise with ``Error parsing `filter` params: ...``."""
    trimmed = text.strip()
    if not trimmed:
        return ()
    try:
        return tuple(_parse_segment(seg) for seg in _split_top_level(trimmed))
    except ValueError as exc:
        raise SubscriptionParamsError(f"Error parsing `filter` params: {exc}") from exc


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses and double quotes."""
    parts: list[str] = []
    current: list[str] = []
    depth, quoted, prev, i = 0, False, "", 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\" and i + 1 < len(text):
                current.append(text[i:i + 2])
                i += 2
                continue
            quoted = ch != '"'
        elif ch == '"' and prev in (".", "(", ","):
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current, prev, i = [], "", i + 1
            continue
        current.append(ch)
        prev, i = ch, i + 1
    parts.append("".join(current))
    return parts


def _parse_segment(segment: str) -> Filter:
    trimmed = segment.strip()
    if not trimmed:
        raise ValueError("filter must not contain empty segments (check for extra commas)")
    if "=" not in trimmed:
        raise ValueError(json.dumps([trimmed]))
    column, rest = trimmed.split("=", 1)
    negate = rest.startswith("not.")
    op_value = rest[4:] if negate else rest
    if "." not in op_value:
        raise ValueError(json.dumps([op_value]))
    op, value = op_value.split(".", 1)
    if op not in OPERATORS:
        raise ValueError(json.dumps([op, value]))
    return Filter(column, op, _format_value(op, value), negate)


def _format_value(op: str, value: str) -> str:
    if op == "in":
        if len(value) >= 2 and value[0] == "(" and value[-1] == ")":
            return "{" + value[1:-1] + "}"
        raise ValueError("`in` filter value must be wrapped by parentheses")
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


# -- exact evaluation in Python (a shortcut; PostgreSQL decides everything else) ----------
_INT_TYPES = frozenset({"int2", "int4", "int8"})
_TEXT_TYPES = frozenset({"text", "varchar"})
_TEXT_OPS = frozenset({"eq", "neq", "in"})  # ordering of text depends on the collation
_INT_OPS = frozenset({"eq", "neq", "lt", "lte", "gt", "gte", "in"})


def _array_items(literal: str) -> list[str] | None:
    """Items of a simple ``{a,b}`` literal; None when quoting/NULL would need PostgreSQL."""
    inner = literal[1:-1]
    if any(ch in inner for ch in '"\\{}'):
        return None
    items = [item.strip() for item in inner.split(",")] if inner.strip() else []
    if any(item.upper() == "NULL" or not item for item in items):
        return None
    return items


_INT_RANGES = {"int2": 15, "int4": 31, "int8": 63}
_INT_RE = re.compile(r"[ \t\n]*[+-]?[0-9]+[ \t\n]*")


def _as_int(text: str, typname: str) -> int | None:
    """The integer PostgreSQL's input function would read; None when unsure or out of range."""
    if not _INT_RE.fullmatch(text):
        return None
    number = int(text.strip())
    bits = _INT_RANGES[typname]
    return number if -(1 << bits) <= number < (1 << bits) else None


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "eq":
        return bool(left == right)
    if op == "neq":
        return bool(left != right)
    if op == "lt":
        return bool(left < right)
    if op == "lte":
        return bool(left <= right)
    if op == "gt":
        return bool(left > right)
    return bool(left >= right)


def evaluate(flt: Filter, typname: str, value: Any) -> bool | None:
    """Does ``value`` (a record's JSON value) pass ``flt``? None: ask PostgreSQL.

    Only cases whose answer cannot differ from ``realtime.tablesync_check_op`` are decided
    here: NULL values, and eq/neq/in on text, eq..gte/in on integers.
    """
    if value is None:
        if flt.op != "in":
            return False  # NULL compared is NULL; NOT NULL is NULL; both fail the filter
        items = _array_items(flt.value)
        if items is None or items:
            return None if items is None else False
        return flt.negate  # NULL = ANY('{}') is false, so NOT ... is true
    if typname in _INT_TYPES and flt.op in _INT_OPS and isinstance(value, int):
        if flt.op == "in":
            raw = _array_items(flt.value)
            nums = None if raw is None else [_as_int(item, typname) for item in raw]
            if nums is None or any(n is None for n in nums):
                return None
            result = value in nums
        else:
            right = _as_int(flt.value, typname)
            if right is None:
                return None
            result = _compare(flt.op, value, right)
    elif typname in _TEXT_TYPES and flt.op in _TEXT_OPS and isinstance(value, str):
        if flt.op == "in":
            items = _array_items(flt.value)
            if items is None:
                return None
            result = value in items
        else:
            result = _compare(flt.op, value, flt.value)
    else:
        return None
    return not result if flt.negate else result
