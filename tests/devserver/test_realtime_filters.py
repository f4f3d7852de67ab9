"""Subscription params and filter strings, parsed as Supabase parses them (pure)."""

from __future__ import annotations

import pytest

from tablesync.devserver.realtime_filters import (
    Filter, SubscriptionParamsError, SubscriptionSpec, parse_filter, parse_params)


def test_defaults_like_supabase() -> None:
    assert parse_params({"schema": "public"}) == SubscriptionSpec("*", "public", "*")
    assert parse_params({"table": "todos"}) == SubscriptionSpec("*", "public", "todos")
    assert parse_params({"event": "insert", "schema": "s", "table": "t"}).action == "INSERT"
    assert parse_params({"event": "TRUNCATE", "schema": "s", "table": "t"}).action == "*"
    with pytest.raises(SubscriptionParamsError, match="No subscription params provided"):
        parse_params({"event": "*"})


@pytest.mark.parametrize("text, expected", [
    ("subject=eq.hey", (Filter("subject", "eq", "hey"),)),
    ("subject=in.(hidee,ho)", (Filter("subject", "in", "{hidee,ho}"),)),
    ("id=gt.0,id=lt.100", (Filter("id", "gt", "0"), Filter("id", "lt", "100"))),
    ("status=not.in.(a,b)", (Filter("status", "in", "{a,b}", True),)),
    ('name=eq."a,b"', (Filter("name", "eq", "a,b"),)),
    ("   ", ()),
    ("x=eq.a.b", (Filter("x", "eq", "a.b"),)),
])
def test_parse_filter(text: str, expected: tuple[Filter, ...]) -> None:
    assert parse_filter(text) == expected


@pytest.mark.parametrize("text, message", [
    ("subject=foo.hey", 'Error parsing `filter` params: ["foo", "hey"]'),
    ("undefined", 'Error parsing `filter` params: ["undefined"]'),
    ("id=in.1,2", "Error parsing `filter` params: `in` filter value must be wrapped by"
                  " parentheses"),
    ("id=eq.1,,id=eq.2", "Error parsing `filter` params: filter must not contain empty"
                         " segments (check for extra commas)"),
])
def test_filter_errors(text: str, message: str) -> None:
    with pytest.raises(SubscriptionParamsError) as info:
        parse_filter(text)
    assert str(info.value) == message


def test_describe_matches_supabase_log_format() -> None:
    spec = parse_params({"event": "*", "schema": "public", "table": "test",
                         "filter": "notacolumn=eq.123"})
    assert spec.describe() == ('event: *, schema: public, table: test, filters: '
                               '[{"notacolumn", "eq", "123", false}], select: nil')
