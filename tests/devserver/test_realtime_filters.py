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


@pytest.mark.postgres
def test_python_shortcut_agrees_with_postgres(pg_dsn: str) -> None:
    """Whenever ``evaluate`` decides, PostgreSQL's typed comparison decides the same."""
    import psycopg
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tablesync.devserver.realtime_capture import realtime_sql
    from tablesync.devserver.realtime_filters import OPERATORS, evaluate

    from typing import Any

    texts = st.text(alphabet="abAB 1,-\"\\{}é", max_size=4)
    ints = st.integers(-5, 5) | st.sampled_from([2**40, -(2**40)])
    arrays = st.lists(ints.map(str) | texts, max_size=3).map(lambda v: "{" + ",".join(v) + "}")
    int4 = st.integers(-5, 5) | st.sampled_from([2**31 - 1, -(2**31)])

    def numeric(typname: str, values: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
        return st.tuples(st.just(typname), values | st.none(), st.sampled_from(OPERATORS[:7]),
                         ints.map(str) | texts | arrays, st.booleans())

    cases = st.one_of(
        numeric("int4", int4), numeric("int8", ints),
        st.tuples(st.just("text"), texts | st.none(), st.sampled_from(OPERATORS[:7]),
                  texts | st.lists(texts, max_size=3).map(lambda v: "{" + ",".join(v) + "}"),
                  st.booleans()))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(realtime_sql().encode())

        def in_postgres(typname: str, value: object, op: str, fv: str, negate: bool) -> bool:
            regtype = {"int4": "integer", "int8": "bigint", "text": "text"}[typname]
            try:
                row = conn.execute("SELECT coalesce(realtime.tablesync_check_op(%s, %s, %s, %s,"
                                   " %s), false)", (op, regtype, None if value is None
                                                    else str(value), fv, negate)).fetchone()
            except psycopg.Error:
                return False  # tablesync_visible treats an error as "not visible"
            assert row is not None
            return bool(row[0])

        decided: list[bool] = []

        @settings(max_examples=400, deadline=None)
        @given(cases)
        def check(case: tuple[str, object, str, str, bool]) -> None:
            typname, value, op, fv, negate = case
            if op == "in" and not (fv.startswith("{") and fv.endswith("}")):
                fv = "{" + fv + "}"
            verdict = evaluate(Filter("c", op, fv, negate), typname, value)
            if verdict is not None:
                decided.append(verdict)
                assert verdict == in_postgres(typname, value, op, fv, negate), case

        check()
        assert decided.count(True) > 20 and decided.count(False) > 20  # not vacuous


def test_missing_params_message_inspects_like_elixir() -> None:
    with pytest.raises(SubscriptionParamsError) as info:
        parse_params({"event": "*", "filter": "id=eq.1"})
    assert str(info.value) == (
        "No subscription params provided. Please provide at least a `schema` or `table` to "
        'subscribe to: %{"event" => "*", "filter" => "id=eq.1"}')
    with pytest.raises(SubscriptionParamsError) as info:
        parse_params({})
    assert str(info.value).endswith("subscribe to: %{}")
