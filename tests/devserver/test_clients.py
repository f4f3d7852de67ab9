"""Conformance: the official Supabase Python clients (PyPI) drive the devserver."""

from __future__ import annotations

from typing import Iterator

import httpx
import pytest
from postgrest import APIError
from supabase import Client, create_client
from supabase.lib.client_options import SyncClientOptions
from supabase_auth.errors import AuthApiError

from tablesync.devserver.server import DevServerInfo

from .helpers import create_user

pytestmark = pytest.mark.postgres


def _client(info: DevServerInfo, key: str) -> Client:
    options = SyncClientOptions(auto_refresh_token=False, persist_session=False)
    return create_client(info.url, key, options)


@pytest.fixture
def sb(info: DevServerInfo, items: str) -> Iterator[Client]:
    yield _client(info, info.anon_key)


def test_sign_up_sign_in_refresh_and_user(sb: Client) -> None:
    res = sb.auth.sign_up({"email": "c@example.com", "password": "pass-word-1",
                           "options": {"data": {"nick": "c"}}})
    assert res.user is not None and res.session is not None
    assert res.user.user_metadata == {"nick": "c"}
    sb.auth.sign_out()
    res = sb.auth.sign_in_with_password({"email": "c@example.com", "password": "pass-word-1"})
    assert res.session is not None
    old_refresh = res.session.refresh_token
    refreshed = sb.auth.refresh_session()
    assert refreshed.session is not None and refreshed.session.refresh_token != old_refresh
    user = sb.auth.get_user()
    assert user is not None and user.user.email == "c@example.com"
    with pytest.raises(AuthApiError) as err:
        sb.auth.sign_in_with_password({"email": "c@example.com", "password": "wrong-pass"})
    assert err.value.code == "invalid_credentials" and err.value.status == 400


def test_admin_api_creates_users_with_app_metadata(info: DevServerInfo) -> None:
    admin = _client(info, info.service_key)
    res = admin.auth.admin.create_user({"email": "adm@example.com", "password": "pass-word-1",
                                        "email_confirm": True,
                                        "app_metadata": {"system_id": "sys-9"}})
    assert res.user.app_metadata["system_id"] == "sys-9"
    fetched = admin.auth.admin.get_user_by_id(res.user.id)
    assert fetched.user.email == "adm@example.com"
    updated = admin.auth.admin.update_user_by_id(res.user.id, {"app_metadata": {"x": 1}})
    assert updated.user.app_metadata["x"] == 1 and updated.user.app_metadata["system_id"] == "sys-9"


def test_insert_upsert_select_filters_and_rpc_as_a_user(sb: Client, info: DevServerInfo,
                                                        http: httpx.Client) -> None:
    create_user(http, info, "u1@example.com", "A")
    sb.auth.sign_in_with_password({"email": "u1@example.com", "password": "secret-pass-1"})
    res = sb.table("items").insert({"id": 1, "system_id": "A", "title": "one"}).execute()
    assert res.data[0]["title"] == "one"
    res = sb.table("items").insert([{"id": 2, "system_id": "A", "title": "two", "n": 2},
                                    {"id": 3, "system_id": "A", "title": "three"}]).execute()
    assert len(res.data) == 2
    res = sb.table("items").upsert({"id": 1, "system_id": "A", "title": "uno"}).execute()
    assert res.data[0]["title"] == "uno"
    res = sb.table("items").select("id,title").gt("id", 1).order("id", desc=True).execute()
    assert [r["id"] for r in res.data] == [3, 2]
    res = sb.table("items").select("id").in_("id", [1, 3]).order("id").execute()
    assert [r["id"] for r in res.data] == [1, 3]
    res = sb.table("items").select("id").is_("n", "null").neq("id", 3).execute()
    assert res.data == [{"id": 1}]
    res = sb.table("items").select("*", count="exact").limit(1).execute()
    assert res.count == 3 and len(res.data) == 1
    one = sb.table("items").select("title").eq("id", 2).single().execute()
    assert one.data == {"title": "two"}
    res = sb.table("items").update({"title": "dos"}).eq("id", 2).execute()
    assert res.data[0]["title"] == "dos"
    res = sb.table("items").delete().eq("id", 3).execute()
    assert res.data[0]["id"] == 3
    assert sb.rpc("add", {"a": 40, "b": 2}).execute().data == 42
    assert [r["id"] for r in sb.rpc("visible_items", {}).execute().data] == [1, 2]


def test_rls_refuses_other_systems_rows_through_the_client(sb: Client, info: DevServerInfo,
                                                           http: httpx.Client) -> None:
    create_user(http, info, "ua@example.com", "A")
    admin = _client(info, info.service_key)
    admin.table("items").insert([{"id": 10, "system_id": "B", "title": "theirs"}]).execute()
    sb.auth.sign_in_with_password({"email": "ua@example.com", "password": "secret-pass-1"})
    assert sb.table("items").select("*").execute().data == []
    with pytest.raises(APIError) as err:
        sb.table("items").insert({"id": 11, "system_id": "B"}).execute()
    assert err.value.code == "42501"
    assert sb.table("items").update({"title": "mine"}).eq("id", 10).execute().data == []
    assert sb.table("items").delete().eq("id", 10).execute().data == []
    assert admin.table("items").select("title").eq("id", 10).execute().data == [{"title": "theirs"}]


def test_postgrest_client_alone(info: DevServerInfo, items: str) -> None:
    from postgrest import SyncPostgrestClient

    headers = {"apikey": info.service_key, "Authorization": f"Bearer {info.service_key}"}
    with SyncPostgrestClient(f"{info.url}/rest/v1", headers=headers) as pg:
        pg.from_("items").insert({"id": 1, "system_id": "A"}).execute()
        res = pg.from_("items").select("id,system_id").execute()
        assert res.data == [{"id": 1, "system_id": "A"}]
        with pytest.raises(APIError) as err:
            pg.from_("nope").select("*").execute()
        assert err.value.code == "PGRST205"
