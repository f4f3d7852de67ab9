"""Helpers for running generated SQL on the real PostgreSQL fixture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tablesync.project import Project, load_project
from tablesync.sql import postgres

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def example() -> Project:
    return load_project(ROOT / "sync.toml")


@pytest.fixture
def pg(pg_dsn: str, example: Project) -> Iterator[Any]:
    """An autocommit psycopg connection to a fresh DB with the example's supabase.sql."""
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(postgres.schema_sql(example.tables, example.ddl).encode())
        yield conn


def call_apply(conn: Any, table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Call the generated ``tablesync_apply_<table>`` with ``rows``."""
    from psycopg import sql

    fn = sql.Identifier("public", postgres.apply_function_name(table))
    cur = conn.execute(sql.SQL("SELECT {}(%s::jsonb)").format(fn), (json.dumps(rows),))
    out: list[dict[str, Any]] = cur.fetchone()[0]
    return out


ApplyFn = Callable[[Any, str, list[dict[str, Any]]], list[dict[str, Any]]]


@pytest.fixture
def apply() -> ApplyFn:
    return call_apply
