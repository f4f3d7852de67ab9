"""RestRemote against a real loopback HTTP server whose answers the tests script."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tablesync.errors import AuthError, PayloadError, RemoteError, TransientRemoteError
from tablesync.model import ColumnSpec, TableSpec
from tablesync.remote.base import (DeadSessionError, ExpiredTokenError, ForbiddenError,
                                   encoded_rows)
from tablesync.remote.rest import RestRemote
from tablesync.session import Session
from tablesync.vault import Secret, Tokens, Vault

from .loopback import Scripted, Seen, free_port, serve

ANON = "anon-key-value"
TASKS = TableSpec(
    name="tasks",
    columns=(ColumnSpec("id", "TEXT", False), ColumnSpec("system_id", "TEXT", False),
             ColumnSpec("title", "TEXT", False), ColumnSpec("priority", "INTEGER")),
    primary_key="id", scope="system_id")


def _token_body(n: int = 1, expires_in: int = 3600) -> dict[str, Any]:
    return {"access_token": f"access-{n}", "token_type": "bearer", "expires_in": expires_in,
            "expires_at": int(time.time()) + expires_in, "refresh_token": f"refresh-{n}",
            "user": {"id": "user-uuid", "app_metadata": {"system_id": "a"}}}


def _row(i: int, **over: Any) -> dict[str, Any]:
    row = {"id": f"t{i}", "system_id": "a", "title": "x", "priority": i, "_ts_hlc": i,
           "_ts_origin": "b", "_ts_deleted": False, "_ts_base_hlc": 0, "_ts_base_origin": "",
           "_ts_seq": 100 + i, "_ts_xid": 500}
    row.update(over)
    return row


@pytest.fixture
def app() -> Scripted:
    return Scripted()


@pytest.fixture
def url(app: Scripted) -> Iterator[str]:
    with serve(app) as base:
        yield base


@pytest.fixture
def remote(url: str) -> Iterator[RestRemote]:
    with RestRemote(url, ANON, tables={"tasks": TASKS}, timeout=5) as r:
        yield r


def test_sign_in(app: Scripted, remote: RestRemote) -> None:
    app.handler = lambda s: (200, _token_body())
    tokens = remote.sign_in("a@example.com", Secret("pw"))
    assert tokens.access_token.reveal() == "access-1"
    assert tokens.refresh_token.reveal() == "refresh-1"
    assert tokens.user_id == "user-uuid" and tokens.expires_in() > 3500
    seen = app.seen[0]
    assert (seen.method, seen.path, seen.query) == ("POST", "/auth/v1/token",
                                                    {"grant_type": "password"})
    assert seen.headers["apikey"] == ANON and seen.body == {"email": "a@example.com",
                                                            "password": "pw"}


def test_sign_in_wrong_password(app: Scripted, remote: RestRemote) -> None:
    app.handler = lambda s: (400, {"code": 400, "error_code": "invalid_credentials",
                                   "msg": "Invalid login credentials"})
    with pytest.raises(AuthError, match="Invalid login credentials") as info:
        remote.sign_in("a@example.com", Secret("pw"))
    assert not isinstance(info.value, DeadSessionError)


def test_refresh_and_dead_refresh_token(app: Scripted, remote: RestRemote) -> None:
    app.handler = lambda s: (200, _token_body(2))
    tokens = remote.refresh(Secret("refresh-1"))
    assert app.seen[-1].query == {"grant_type": "refresh_token"}
    assert app.seen[-1].body == {"refresh_token": "refresh-1"}
    assert tokens.refresh_token.reveal() == "refresh-2"
    app.handler = lambda s: (400, {"code": "refresh_token_already_used",
                                   "message": "Invalid Refresh Token: Already Used"})
    with pytest.raises(DeadSessionError, match="Already Used"):
        remote.refresh(Secret("refresh-1"))


def test_refresh_network_failure_is_transient(app: Scripted, remote: RestRemote) -> None:
    app.handler = lambda s: (502, "bad gateway")
    with pytest.raises(TransientRemoteError):
        remote.refresh(Secret("refresh-1"))


def test_refresh_conflict_is_transient_not_a_dead_session(app: Scripted,
                                                           remote: RestRemote) -> None:
    # GoTrue under refresh-token lock contention (hosted Supabase): 409 "conflict"
    app.handler = lambda s: (409, {"code": 409, "error_code": "conflict",
                                   "msg": "Conflict: the refresh token is being refreshed"})
    with pytest.raises(TransientRemoteError) as info:
        remote.refresh(Secret("refresh-1"))
    assert not isinstance(info.value, DeadSessionError) and info.value.status == 409


def test_malformed_token_response(app: Scripted, remote: RestRemote) -> None:
    app.handler = lambda s: (200, {"access_token": "x"})
    with pytest.raises(PayloadError, match="malformed token response"):
        remote.sign_in("a@example.com", Secret("pw"))


def test_admin_create_user(app: Scripted, remote: RestRemote) -> None:
    app.handler = lambda s: (200, {"id": "new-uuid", "app_metadata": s.body["app_metadata"]})
    user = remote.admin_create_user(Secret("service-key"), "b@example.com", Secret("pw"),
                                    {"system_id": "b"})
    assert user["id"] == "new-uuid"
    seen = app.seen[0]
    assert seen.path == "/auth/v1/admin/users"
    assert seen.headers["apikey"] == "service-key"
    assert seen.headers["authorization"] == "Bearer service-key"
    assert seen.body == {"email": "b@example.com", "password": "pw", "email_confirm": True,
                         "app_metadata": {"system_id": "b"}}


def _apply_ok(seen: Seen) -> tuple[int, Any]:
    return 200, [{"id": r["id"], "outcome": "applied", "row": None, "message": None}
                 for r in seen.body["rows"]]


def test_apply(app: Scripted, remote: RestRemote) -> None:
    app.handler = _apply_ok
    rows = [_row(1), _row(2)]
    out = remote.apply("tasks", rows)
    assert [(o.id, o.outcome) for o in out] == [("t1", "applied"), ("t2", "applied")]
    seen = app.seen[0]
    assert (seen.method, seen.path) == ("POST", "/rest/v1/rpc/tablesync_apply_tasks")
    assert seen.body == {"rows": rows}
    assert seen.headers["apikey"] == ANON and seen.headers["authorization"] == f"Bearer {ANON}"
    assert remote.apply("tasks", []) == [] and len(app.seen) == 1


def test_apply_sends_a_pre_encoded_body_as_is(app: Scripted, remote: RestRemote) -> None:
    app.handler = _apply_ok
    rows = encoded_rows([_row(1), _row(2)])
    rows.body = rows.body.replace(b'{"rows":', b'{"rows" :')   # marks this exact body
    out = remote.apply("tasks", rows)
    assert [o.id for o in out] == ["t1", "t2"] and app.seen[0].body == {"rows": list(rows)}
    assert app.seen[0].headers["content-type"] == "application/json"
    assert app.seen[0].headers["content-length"] == str(len(rows.body))
    nan = encoded_rows([{**_row(3), "x": float("nan")}])
    assert nan.body == b""                           # not encodable: the plain path refuses
    with pytest.raises(ValueError):
        remote.apply("tasks", nan)


def _session(remote: RestRemote, tmp_path: Path, url: str) -> Session:
    vault = Vault(tmp_path / "auth.json")
    vault.save(Tokens(Secret("access-old"), Secret("refresh-old"), time.time() + 3600, "u",
                      url))
    session = Session(remote, vault, project=url)
    remote.tokens = session
    session.ensure()
    return session


def test_expired_jwt_refreshes_and_retries_once(app: Scripted, remote: RestRemote,
                                                tmp_path: Path, url: str) -> None:
    session = _session(remote, tmp_path, url)

    def handler(seen: Seen) -> tuple[int, Any]:
        if seen.path == "/auth/v1/token":
            return 200, _token_body(2)
        if seen.headers["authorization"] == "Bearer access-old":
            return 401, {"code": "PGRST303", "message": "JWT expired", "details": None,
                         "hint": None}
        return _apply_ok(seen)

    app.handler = handler
    out = remote.apply("tasks", [_row(1)])
    assert out[0].outcome == "applied"
    assert [s.path for s in app.seen] == ["/rest/v1/rpc/tablesync_apply_tasks",
                                         "/auth/v1/token",
                                         "/rest/v1/rpc/tablesync_apply_tasks"]
    assert app.seen[2].headers["authorization"] == "Bearer access-2"
    stored = Vault(tmp_path / "auth.json").load()
    assert stored is not None and stored.refresh_token.reveal() == "refresh-2"
    assert session.access_token() == Secret("access-2")


def test_expired_twice_gives_up(app: Scripted, remote: RestRemote, tmp_path: Path,
                                url: str) -> None:
    _session(remote, tmp_path, url)
    app.handler = lambda s: ((200, _token_body(2)) if s.path == "/auth/v1/token" else
                             (401, {"code": "PGRST301", "message": "JWT expired"}))
    with pytest.raises(ExpiredTokenError):
        remote.apply("tasks", [_row(1)])
    assert len(app.seen) == 3


@pytest.mark.parametrize("status,body,headers,kind", [
    (429, {"message": "slow down"}, {"Retry-After": "3"}, TransientRemoteError),
    (503, {"code": "PGRST002", "message": "schema cache"}, {"Retry-After": "1"},
     TransientRemoteError),
    (500, b"<html>oops</html>", {}, TransientRemoteError),
    (403, {"code": "42501", "message": "new row violates row-level security policy"}, {},
     ForbiddenError),
    (401, {"code": "PGRST301", "message": "JWSError"}, {}, AuthError),
    (404, {"code": "PGRST202", "message": "Could not find the function"}, {}, RemoteError),
])
def test_error_statuses(app: Scripted, remote: RestRemote, status: int, body: Any,
                        headers: dict[str, str], kind: type[Exception]) -> None:
    app.handler = lambda s: (status, body, headers)
    with pytest.raises(kind) as info:
        remote.apply("tasks", [_row(1)])
    assert type(info.value) is kind
    if "Retry-After" in headers:
        assert isinstance(info.value, TransientRemoteError)
        assert info.value.retry_after == float(headers["Retry-After"])


def test_network_errors_are_transient() -> None:
    with RestRemote(f"http://127.0.0.1:{free_port()}", ANON, timeout=2) as r:
        with pytest.raises(TransientRemoteError, match="network error"):
            r.watermark()


def test_timeout_is_transient(app: Scripted, url: str) -> None:
    def slow(seen: Seen) -> tuple[int, Any]:
        time.sleep(0.6)
        return 200, 1

    app.handler = slow
    with RestRemote(url, ANON, timeout=0.2) as r:
        with pytest.raises(TransientRemoteError, match="timed out"):
            r.watermark()


@pytest.mark.parametrize("payload,needle", [
    (b"{not json", "malformed JSON"),
    (b"[1, NaN]", "malformed JSON"),
    (b"[" + b"[" * 100_000 + b"]" * 100_000 + b"]", "exceeds"),
])
def test_malformed_or_oversized_responses(app: Scripted, url: str, payload: bytes,
                                          needle: str) -> None:
    app.handler = lambda s: (200, payload)
    with RestRemote(url, ANON, max_response=150_000) as r:
        with pytest.raises(PayloadError, match=needle):
            r.apply("tasks", [_row(1)])


def test_malformed_outcomes(app: Scripted, remote: RestRemote) -> None:
    app.handler = lambda s: (200, [{"id": "t1", "outcome": "applied"}])
    with pytest.raises(PayloadError, match="expected 2 outcomes, got 1"):
        remote.apply("tasks", [_row(1), _row(2)])


def test_watermark(app: Scripted, remote: RestRemote) -> None:
    app.handler = lambda s: (200, 123456)
    assert remote.watermark() == 123456
    assert app.seen[0].path == "/rest/v1/rpc/tablesync_watermark"
    for bad in ("x", None, -1, True, {"a": 1}):
        app.handler = lambda s, bad=bad: (200, bad)
        with pytest.raises(PayloadError, match="watermark"):
            remote.watermark()


def test_pull_page_query(app: Scripted, remote: RestRemote) -> None:
    app.handler = lambda s: (200, [_row(1), _row(2)])
    page = remote.pull_page("tasks", "system_id", "system a", cursor=77, after_seq=5,
                            limit=5000)
    seen = app.seen[0]
    assert (seen.method, seen.path) == ("GET", "/rest/v1/tasks")
    assert seen.query == {"select": "*", '"system_id"': "eq.system a", "_ts_xid": "gte.77",
                          "_ts_seq": "gt.5", "order": "_ts_seq.asc", "limit": "1000"}
    assert [r["id"] for r in page.rows] == ["t1", "t2"]
    assert page.size == 2 and page.last_seq == 102 and page.rejected == []


def test_fetch_query_quotes_filter_keys_and_values(app: Scripted, remote: RestRemote) -> None:
    # completing a partial Realtime record of a table with awkward names
    app.handler = lambda s: (200, [_row(1)])
    page = remote.fetch("tasks", "Owner System", "system a", "order", ['a,"b"', "t1"])
    seen = app.seen[0]
    assert (seen.method, seen.path) == ("GET", "/rest/v1/tasks")
    assert seen.query == {"select": "*", '"Owner System"': "eq.system a",
                          '"order"': 'in.("a,\\"b\\"","t1")'}
    assert [r["id"] for r in page.rows] == ["t1"]
    app.handler = lambda s: (200, {"not": "a list"})
    with pytest.raises(PayloadError, match="fetch tasks: expected a JSON array"):
        remote.fetch("tasks", "system_id", "a", "id", ["t1"])


def test_pull_page_rejects_bad_rows_but_advances(app: Scripted, remote: RestRemote) -> None:
    app.handler = lambda s: (200, [_row(1), _row(2, priority="high"), _row(3, bogus=1),
                                   "nope", _row(4, _ts_seq=None), _row(5)])
    page = remote.pull_page("tasks", "system_id", "a", cursor=0, after_seq=0)
    assert [r["id"] for r in page.rows] == ["t1", "t5"]
    assert page.size == 6 and page.last_seq == 105
    msgs = [str(e) for e in page.rejected]
    assert len(msgs) == 4
    assert "row 't2' column 'priority'" in msgs[0] and "unknown column 'bogus'" in msgs[1]
    assert all("pull tasks" in m for m in msgs)


def test_pull_page_more_rows_than_asked(app: Scripted, remote: RestRemote) -> None:
    app.handler = lambda s: (200, [_row(i) for i in range(3)])
    with pytest.raises(PayloadError, match="3 rows for limit 2"):
        remote.pull_page("tasks", "system_id", "a", cursor=0, after_seq=0, limit=2)
    app.handler = lambda s: (200, {"not": "a list"})
    with pytest.raises(PayloadError, match="expected a JSON array"):
        remote.pull_page("tasks", "system_id", "a", cursor=0, after_seq=0)


def test_no_secret_in_errors_or_repr(app: Scripted, remote: RestRemote) -> None:
    app.handler = lambda s: (400, {"msg": "nope"})
    with pytest.raises(AuthError) as info:
        remote.sign_in("a@example.com", Secret("pw-secret"))
    assert "pw-secret" not in str(info.value) and ANON not in repr(remote)
