"""SQL access to GoTrue's tables in schema ``auth`` (users, sessions, refresh tokens)."""

from __future__ import annotations

import json
import secrets
import string
from typing import Any

import psycopg
from psycopg.rows import dict_row

Row = dict[str, Any]
Conn = psycopg.AsyncConnection[Any]
_ALPHABET = string.ascii_lowercase + string.digits
TOKEN_LENGTH = 12
_USER_COLS = ("id, aud, role, email, encrypted_password, email_confirmed_at, "
              "confirmation_sent_at, last_sign_in_at, raw_app_meta_data, raw_user_meta_data, "
              "phone, banned_until, deleted_at, is_anonymous, created_at, updated_at, "
              "banned_until > now() AS banned")


def new_token() -> str:
    """An opaque refresh token like GoTrue's legacy ones (12 chars of [a-z0-9])."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(TOKEN_LENGTH))


async def _one(conn: Conn, query: str, params: tuple[Any, ...]) -> Row | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query.encode(), params)
        return await cur.fetchone()


async def user_by_email(conn: Conn, email: str) -> Row | None:
    return await _one(conn, f"SELECT {_USER_COLS} FROM auth.users WHERE lower(email) = lower(%s)",
                      (email,))


async def user_by_id(conn: Conn, user_id: str) -> Row | None:
    return await _one(conn, f"SELECT {_USER_COLS} FROM auth.users WHERE id = %s::uuid",
                      (user_id,))


async def list_users(conn: Conn, *, limit: int, offset: int) -> tuple[list[Row], int]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_USER_COLS} FROM auth.users ORDER BY created_at, id "
                          "LIMIT %s OFFSET %s".encode(), (limit, offset))
        rows = await cur.fetchall()
    total = await _one(conn, "SELECT count(*) AS n FROM auth.users", ())
    return rows, int(total["n"]) if total else 0


async def create_user(conn: Conn, *, email: str | None, password_hash: str | None,
                      app_meta: dict[str, Any], user_meta: dict[str, Any], confirmed: bool,
                      role: str = "authenticated", user_id: str | None = None) -> Row:
    row = await _one(conn, f"""
        INSERT INTO auth.users (id, email, encrypted_password, email_confirmed_at,
                                raw_app_meta_data, raw_user_meta_data, role)
        VALUES (coalesce(%s::uuid, gen_random_uuid()), %s, %s,
                CASE WHEN %s THEN now() END, %s::jsonb, %s::jsonb, %s)
        RETURNING {_USER_COLS}""", (user_id, email, password_hash, confirmed,
                                    json.dumps(app_meta), json.dumps(user_meta), role))
    assert row is not None
    return row


async def update_user(conn: Conn, user_id: str, *, app_meta: dict[str, Any] | None = None,
                      user_meta: dict[str, Any] | None = None, password_hash: str | None = None,
                      confirm: bool = False, email: str | None = None,
                      banned_seconds: int | None = None) -> Row | None:
    """Merge metadata (a ``null`` value deletes a key) and update the other fields."""
    return await _one(conn, f"""
        UPDATE auth.users SET
          raw_app_meta_data = jsonb_strip_nulls(raw_app_meta_data || coalesce(%s::jsonb, '{{}}')),
          raw_user_meta_data = jsonb_strip_nulls(raw_user_meta_data || coalesce(%s::jsonb, '{{}}')),
          encrypted_password = coalesce(%s, encrypted_password),
          email_confirmed_at = CASE WHEN %s THEN coalesce(email_confirmed_at, now())
                                    ELSE email_confirmed_at END,
          email = coalesce(%s, email),
          banned_until = CASE WHEN %s::int IS NULL THEN banned_until
                              WHEN %s::int = 0 THEN NULL
                              ELSE now() + make_interval(secs => %s::int) END,
          updated_at = now()
        WHERE id = %s::uuid RETURNING {_USER_COLS}""",
        (None if app_meta is None else json.dumps(app_meta),
         None if user_meta is None else json.dumps(user_meta), password_hash, confirm, email,
         banned_seconds, banned_seconds, banned_seconds, user_id))


async def delete_user(conn: Conn, user_id: str) -> bool:
    cur = await conn.execute("DELETE FROM auth.users WHERE id = %s::uuid", (user_id,))
    return cur.rowcount > 0


async def touch_sign_in(conn: Conn, user_id: str) -> None:
    await conn.execute("UPDATE auth.users SET last_sign_in_at = now() WHERE id = %s::uuid",
                       (user_id,))


async def create_session(conn: Conn, user_id: str, amr: list[dict[str, Any]]) -> str:
    row = await _one(conn, "INSERT INTO auth.sessions (id, user_id, amr) VALUES "
                     "(gen_random_uuid(), %s::uuid, %s::jsonb) RETURNING id::text",
                     (user_id, json.dumps(amr)))
    assert row is not None
    return str(row["id"])


async def session(conn: Conn, session_id: str) -> Row | None:
    return await _one(conn, "SELECT id::text, user_id::text, aal, amr FROM auth.sessions "
                      "WHERE id = %s::uuid", (session_id,))


async def delete_sessions(conn: Conn, user_id: str, *, only: str | None = None,
                          keep: str | None = None) -> None:
    await conn.execute(
        "DELETE FROM auth.sessions WHERE user_id = %s::uuid AND (%s::uuid IS NULL OR id = %s::uuid)"
        " AND (%s::uuid IS NULL OR id <> %s::uuid)", (user_id, only, only, keep, keep))


async def issue_refresh_token(conn: Conn, user_id: str, session_id: str,
                              parent: str | None = None) -> str:
    token = new_token()
    await conn.execute("INSERT INTO auth.refresh_tokens (token, user_id, session_id, parent) "
                       "VALUES (%s, %s, %s::uuid, %s)", (token, user_id, session_id, parent))
    await conn.execute("UPDATE auth.sessions SET refreshed_at = now(), updated_at = now() "
                       "WHERE id = %s::uuid", (session_id,))
    return token


LOCKED = object()  # the row exists but another transaction holds its lock


async def refresh_token_for_update(conn: Conn, token: str) -> Row | None | object:
    """The token row, locked, with its last update (``revoked_at``, Unix seconds);
    ``LOCKED`` when another transaction holds it (GoTrue's ``FOR UPDATE SKIP LOCKED``,
    retried by the caller)."""
    row = await _one(conn, """
        SELECT id, token, user_id, revoked, parent, session_id::text,
               extract(epoch FROM updated_at)::float8 AS revoked_at
        FROM auth.refresh_tokens WHERE token = %s FOR UPDATE SKIP LOCKED""", (token,))
    if row is not None:
        return row
    exists = await _one(conn, "SELECT 1 AS one FROM auth.refresh_tokens WHERE token = %s",
                        (token,))
    return LOCKED if exists is not None else None


async def active_refresh_token(conn: Conn, session_id: str) -> Row | None:
    return await _one(conn, "SELECT token, parent FROM auth.refresh_tokens WHERE session_id = "
                      "%s::uuid AND NOT revoked ORDER BY id DESC LIMIT 1", (session_id,))


async def revoke(conn: Conn, token_id: int, *, at: float) -> None:
    """Revoke a refresh token at ``at`` (Unix seconds: the devserver's clock, from which
    the reuse window is measured)."""
    await conn.execute("UPDATE auth.refresh_tokens SET revoked = true, "
                       "updated_at = to_timestamp(%s) WHERE id = %s", (at, token_id))
