"""PostgREST query-string grammar (pure parsing)."""

from __future__ import annotations

import pytest

from tablesync.devserver.rest_query import (Filter, Logic, OrderTerm, QueryError, SelectItem,
                                            parse_filter, parse_order, parse_prefer, parse_query,
                                            parse_select, split_top)


def test_select_items() -> None:
    assert parse_select("id, name:title,n::text,x:y::int") == [
        SelectItem("id"), SelectItem("title", "name"), SelectItem("n", None, "text"),
        SelectItem("y", "x", "int")]
    assert parse_select("") == [SelectItem("*")]
    with pytest.raises(QueryError):
        parse_select("id,owner(*)")
    with pytest.raises(QueryError):
        parse_select("id::text;drop")


def test_filters() -> None:
    assert parse_filter("a", "eq.1") == Filter("a", "eq", "1")
    assert parse_filter("a", "not.in.(1,\"x,y\",3)") == Filter("a", "in", ("1", "x,y", "3"), True)
    assert parse_filter("a", "in.()") == Filter("a", "in", ())
    assert parse_filter("a", "like.*b*") == Filter("a", "like", "%b%")
    assert parse_filter("a", "eq.x.y") == Filter("a", "eq", "x.y")
    for bad in ("eqq.1", "eq", "is.maybe", "in.1,2"):
        with pytest.raises(QueryError):
            parse_filter("a", bad)


def test_logic_trees_and_order() -> None:
    q = parse_query([("or", "(a.eq.1,and(b.gt.2,c.not.is.null))"), ("order", "a.desc.nullslast,b")])
    assert q.where == [Logic("or", (Filter("a", "eq", "1"), Logic("and", (
        Filter("b", "gt", "2"), Filter("c", "is", "null", True)))))]
    assert q.order == [OrderTerm("a", True, "last"), OrderTerm("b")]
    assert q.column_names() == {"a", "b", "c"}
    with pytest.raises(QueryError):
        parse_order("a.sideways")
    with pytest.raises(QueryError):
        parse_query([("or", "a.eq.1")])


def test_limits_and_reserved_names() -> None:
    q = parse_query([("limit", "10"), ("offset", "5"), ("on_conflict", "id,k"),
                     ("columns", '"id","x"'), ("apikey", "k")])
    assert (q.limit, q.offset, q.on_conflict, q.columns, q.where) == (10, 5, ["id", "k"],
                                                                      ["id", "x"], [])
    with pytest.raises(QueryError):
        parse_query([("limit", "ten")])


def test_split_top_respects_quotes_and_parens() -> None:
    assert split_top('a,"b,c",(d,e)') == ["a", '"b,c"', "(d,e)"]
    with pytest.raises(QueryError):
        split_top("(a")


def test_prefer_header() -> None:
    p = parse_prefer(["return=representation, resolution=merge-duplicates", "count=exact"])
    assert p.representation and p.resolution == "merge-duplicates" and p.count == "exact"
    assert parse_prefer([]).return_ == "minimal"
