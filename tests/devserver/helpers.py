"""Helpers for devserver tests: SQL, headers, users, the RLS-protected items table."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
from tablesync.devserver.server import DevServerInfo

ITEMS_SQL = """
CREATE TABLE public.items (
  id bigint PRIMARY KEY,
  system_id text NOT NULL,
  title text,
  n integer,
  tags jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.items ENABLE ROW LEVEL SECURITY;
CREATE POLICY items_select ON public.items FOR SELECT TO authenticated
  USING (system_id = auth.jwt() -> 'app_metadata' ->> 'system_id');
CREATE POLICY items_insert ON public.items FOR INSERT TO authenticated
  WITH CHECK (system_id = auth.jwt() -> 'app_metadata' ->> 'system_id');
CREATE POLICY items_update ON public.items FOR UPDATE TO authenticated
  USING (system_id = auth.jwt() -> 'app_metadata' ->> 'system_id')
  WITH CHECK (system_id = auth.jwt() -> 'app_metadata' ->> 'system_id');
CREATE POLICY items_delete ON public.items FOR DELETE TO authenticated
  USING (system_id = auth.jwt() -> 'app_metadata' ->> 'system_id');
CREATE FUNCTION public.add(a integer, b integer) RETURNS integer
  LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE FUNCTION public.visible_items() RETURNS SETOF public.items
  LANGUAGE sql STABLE AS 'SELECT * FROM public.items ORDER BY id';
CREATE FUNCTION public.item_ids() RETURNS SETOF bigint
  LANGUAGE sql STABLE AS 'SELECT id FROM public.items ORDER BY id';
CREATE FUNCTION public.whoami() RETURNS jsonb
  LANGUAGE sql STABLE AS 'SELECT auth.jwt()';
CREATE FUNCTION public.touch(p_id bigint) RETURNS void
  LANGUAGE sql AS 'UPDATE public.items SET n = coalesce(n, 0) + 1 WHERE id = p_id';
CREATE FUNCTION public.echo(payload jsonb) RETURNS jsonb
  LANGUAGE sql IMMUTABLE AS 'SELECT payload';
CREATE FUNCTION public.fail(msg text) RETURNS void
  LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '%', msg; END $$;
"""


def run_sql(dsn: str, text: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(text.encode() if params is None else text, params)
        return cur.fetchall() if cur.description else []


def anon_headers(info: DevServerInfo) -> dict[str, str]:
    return {"apikey": info.anon_key, "Authorization": f"Bearer {info.anon_key}"}


def service_headers(info: DevServerInfo) -> dict[str, str]:
    return {"apikey": info.service_key, "Authorization": f"Bearer {info.service_key}"}


def user_headers(info: DevServerInfo, token: str) -> dict[str, str]:
    return {"apikey": info.anon_key, "Authorization": f"Bearer {token}"}


def create_user(http: httpx.Client, info: DevServerInfo, email: str, system_id: str | None,
                password: str = "secret-pass-1") -> dict[str, Any]:
    body: dict[str, Any] = {"email": email, "password": password, "email_confirm": True}
    if system_id is not None:
        body["app_metadata"] = {"system_id": system_id}
    resp = http.post("/auth/v1/admin/users", headers=service_headers(info), json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def sign_in(http: httpx.Client, info: DevServerInfo, email: str,
            password: str = "secret-pass-1") -> dict[str, Any]:
    resp = http.post("/auth/v1/token?grant_type=password", headers=anon_headers(info),
                     json={"email": email, "password": password})
    assert resp.status_code == 200, resp.text
    return resp.json()


def user_token(http: httpx.Client, info: DevServerInfo, email: str, system_id: str) -> str:
    create_user(http, info, email, system_id)
    return str(sign_in(http, info, email)["access_token"])
