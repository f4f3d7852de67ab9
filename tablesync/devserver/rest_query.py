"""Parse PostgREST's query-string grammar (pure; no SQL, no I/O).

Covers ``select`` (columns, ``alias:col``, ``col::type``), horizontal filters
``col=[not.]op.value`` with eq/neq/gt/gte/lt/lte/like/ilike/in/is/isdistinct, the
logical trees ``or=(...)`` / ``and=(...)`` / ``not.or=(...)``, ``order``, ``limit``,
``offset``, ``on_conflict``, ``columns`` and the ``Prefer`` header. Anything else is a
:class:`QueryError` (the REST layer answers 400 PGRST100).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Union

OPERATORS = frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "in", "is",
                       "isdistinct"})
IS_VALUES = frozenset({"null", "not_null", "true", "false", "unknown"})
CASTS = frozenset({"text", "int", "int4", "integer", "int8", "bigint", "smallint", "numeric",
                   "float4", "float8", "real", "double precision", "boolean", "bool", "json",
                   "jsonb", "date", "timestamp", "timestamptz", "uuid", "varchar"})
RESERVED = frozenset({"select", "order", "limit", "offset", "on_conflict", "columns", "or",
                      "and", "not.or", "not.and", "apikey"})


class QueryError(ValueError):
    """The query string does not follow PostgREST's grammar."""

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class Filter:
    column: str
    op: str
    value: Union[str, tuple[str, ...]]
    negate: bool = False


@dataclass(frozen=True)
class Logic:
    op: str  # "and" | "or"
    items: tuple["Condition", ...]
    negate: bool = False


Condition = Union[Filter, Logic]


@dataclass(frozen=True)
class SelectItem:
    column: str  # "*" for all columns
    alias: str | None = None
    cast: str | None = None


@dataclass(frozen=True)
class OrderTerm:
    column: str
    desc: bool = False
    nulls: str | None = None  # "first" | "last"


@dataclass
class Query:
    """A parsed request: what to return, which rows, in which order."""

    select: list[SelectItem] = field(default_factory=lambda: [SelectItem("*")])
    where: list[Condition] = field(default_factory=list)
    order: list[OrderTerm] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0
    on_conflict: list[str] | None = None
    columns: list[str] | None = None

    def column_names(self) -> set[str]:
        """Every column the query mentions (to check against the catalog)."""
        names = {s.column for s in self.select if s.column != "*"}
        names |= {o.column for o in self.order}
        names |= set(self.on_conflict or ())
        for cond in self.where:
            names |= _condition_columns(cond)
        return names


@dataclass(frozen=True)
class Prefer:
    """The ``Prefer`` header (RFC 7240, comma separated)."""

    return_: str = "minimal"
    resolution: str | None = None
    missing: str | None = None
    count: str | None = None
    handling: str = "lenient"
    max_affected: int | None = None

    @property
    def representation(self) -> bool:
        return self.return_ == "representation"


def _condition_columns(cond: Condition) -> set[str]:
    if isinstance(cond, Filter):
        return {cond.column}
    out: set[str] = set()
    for item in cond.items:
        out |= _condition_columns(item)
    return out


def parse_query(params: Iterable[tuple[str, str]], *, allow_filters: bool = True) -> Query:
    """Build a :class:`Query` from ``(key, value)`` query-string pairs."""
    query = Query()
    for key, value in params:
        if key == "select":
            query.select = parse_select(value)
        elif key == "order":
            query.order = parse_order(value)
        elif key == "limit":
            query.limit = _non_negative(key, value)
        elif key == "offset":
            query.offset = _non_negative(key, value)
        elif key == "on_conflict":
            query.on_conflict = _name_list(value)
        elif key == "columns":
            query.columns = _name_list(value)
        elif key in ("or", "and", "not.or", "not.and"):
            query.where.append(parse_logic(key, value))
        elif key == "apikey":
            continue
        elif allow_filters:
            query.where.append(parse_filter(key, value))
    return query


def _non_negative(key: str, value: str) -> int:
    if not value.isdigit():
        raise QueryError(f'"failed to parse {key} parameter ({value})"',
                         f"{key} must be a non-negative integer")
    return int(value)


def _name_list(value: str) -> list[str]:
    names = [_unquote(n.strip()) for n in split_top(value)]
    if not names or any(not n for n in names):
        raise QueryError(f'"failed to parse columns parameter ({value})"')
    return names


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name[1:-1]
    return name


def parse_select(value: str) -> list[SelectItem]:
    """``*``, ``a,b``, ``alias:col``, ``col::text`` (no embedding)."""
    items = []
    for raw in split_top(value):
        raw = raw.strip()
        if not raw:
            continue
        if "(" in raw or ")" in raw:
            raise QueryError(f'"failed to parse select parameter ({value})"',
                             "resource embedding is not supported by the devserver")
        alias, _, rest = raw.rpartition(":") if "::" not in raw else _split_alias(raw)
        col, _, cast = rest.partition("::")
        col, cast_v = _unquote(col.strip()), cast.strip() or None
        if cast_v is not None and cast_v not in CASTS:
            raise QueryError(f'"failed to parse select parameter ({value})"',
                             f"unsupported cast {cast_v!r}")
        if not col:
            raise QueryError(f'"failed to parse select parameter ({value})"')
        items.append(SelectItem(col, _unquote(alias.strip()) or None, cast_v))
    return items or [SelectItem("*")]


def _split_alias(raw: str) -> tuple[str, str, str]:
    head, sep, tail = raw.partition("::")
    alias, colon, col = head.rpartition(":")
    return alias, colon, col + sep + tail


def parse_order(value: str) -> list[OrderTerm]:
    """``col[.asc|.desc][.nullsfirst|.nullslast]`` terms, comma separated."""
    terms = []
    for raw in split_top(value):
        parts = raw.strip().split(".")
        col, mods = _unquote(parts[0]), parts[1:]
        desc, nulls = False, None
        for mod in mods:
            if mod in ("asc", "desc"):
                desc = mod == "desc"
            elif mod in ("nullsfirst", "nullslast"):
                nulls = mod[5:]
            else:
                raise QueryError(f'"failed to parse order ({value})"',
                                 f'unexpected "{mod}" expecting "asc", "desc", '
                                 '"nullsfirst" or "nullslast"')
        if not col:
            raise QueryError(f'"failed to parse order ({value})"')
        terms.append(OrderTerm(col, desc, nulls))
    return terms


def parse_filter(column: str, expr: str) -> Filter:
    """``col`` plus ``[not.]op.value``."""
    negate = expr.startswith("not.")
    rest = expr[4:] if negate else expr
    op, dot, value = rest.partition(".")
    if not dot or op not in OPERATORS:
        raise QueryError(f'"failed to parse filter ({expr})"',
                         f'unexpected "{op}" expecting an operator such as "eq"')
    col = _unquote(column)
    if not col:
        raise QueryError(f'"failed to parse filter ({expr})"', "empty column name")
    if op == "in":
        return Filter(col, op, parse_in_list(value, expr), negate)
    if op == "is" and value not in IS_VALUES:
        raise QueryError(f'"failed to parse filter ({expr})"',
                         'unexpected value, expecting null, not_null, true, false or unknown')
    if op in ("like", "ilike"):
        value = value.replace("*", "%")
    return Filter(col, op, value, negate)


def parse_in_list(value: str, expr: str) -> tuple[str, ...]:
    """``(a,b,"c,d")`` -> ("a", "b", "c,d")."""
    if not (value.startswith("(") and value.endswith(")")):
        raise QueryError(f'"failed to parse filter ({expr})"', "in. needs a (list)")
    inner = value[1:-1]
    if not inner:
        return ()
    return tuple(_unquote_value(v) for v in split_top(inner))


def _unquote_value(v: str) -> str:
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return v


def parse_logic(key: str, value: str) -> Logic:
    """``or=(a.eq.1,and(b.gt.2,c.is.null))`` and the ``not.`` variants."""
    negate = key.startswith("not.")
    op = key[4:] if negate else key
    if not (value.startswith("(") and value.endswith(")")):
        raise QueryError(f'"failed to parse logic tree ({value})"',
                         'expecting "(" ... ")"')
    return Logic(op, tuple(_logic_item(v.strip()) for v in split_top(value[1:-1])), negate)


def _logic_item(text: str) -> Condition:
    for prefix in ("not.and(", "not.or(", "and(", "or("):
        if text.startswith(prefix) and text.endswith(")"):
            key = prefix[:-1]
            return parse_logic(key, text[len(key):])
    col, dot, rest = text.partition(".")
    if not dot:
        raise QueryError(f'"failed to parse logic tree ({text})"')
    return parse_filter(col, rest)


def split_top(text: str) -> list[str]:
    """Split on commas outside parentheses and double quotes."""
    parts, buf, depth, quoted, escaped = [], [], 0, False, False
    for ch in text:
        if escaped:
            buf.append(ch)
            escaped = False
            continue
        if ch == "\\" and quoted:
            buf.append(ch)
            escaped = True
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    if depth != 0 or quoted:
        raise QueryError(f'"failed to parse ({text})"', "unbalanced parentheses or quotes")
    parts.append("".join(buf))
    return parts


def parse_prefer(headers: Iterable[str]) -> Prefer:
    """Merge every ``Prefer`` header value into a :class:`Prefer`."""
    values: dict[str, str] = {}
    for header in headers:
        for item in header.split(","):
            key, _, val = item.strip().partition("=")
            if key:
                values[key.strip()] = val.strip()
    max_aff = values.get("max-affected")
    return Prefer(
        return_=values.get("return", "minimal"), resolution=values.get("resolution"),
        missing=values.get("missing"), count=values.get("count"),
        handling=values.get("handling", "lenient"),
        max_affected=int(max_aff) if max_aff and max_aff.isdigit() else None)
