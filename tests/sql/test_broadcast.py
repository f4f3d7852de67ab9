"""The generated Broadcast-from-Database SQL on the real PostgreSQL: which changes become
messages in realtime.messages, their payload, the keys-only form of an oversized change, and
that the topic function agrees with the client's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tablesync.remote.base import system_topic

pytestmark = pytest.mark.postgres


def _messages(pg: Any) -> list[tuple[str, str, dict[str, Any], bool]]:
    rows = pg.execute("SELECT topic, event, payload, private FROM realtime.messages"
                      " ORDER BY inserted_at, id").fetchall()
    pg.execute("DELETE FROM realtime.messages")
    return [(t, e, p if isinstance(p, dict) else json.loads(p), pr) for t, e, p, pr in rows]


def test_topic_function_agrees_with_the_client(pg: Any) -> None:
    for sid in ["A", "sys, \"q\" (1)\\x", "ü" * 100, "ü" * 101, "x" * 200, "x" * 201]:
        assert pg.execute("SELECT public.tablesync_topic(%s)", (sid,)).fetchone()[0] \
            == system_topic(sid)


def test_changes_go_to_their_scope_unless_the_scope_made_them(pg: Any) -> None:
    pg.execute("INSERT INTO tasks (id, system_id, title) VALUES ('t1', 'a', 'server')")
    pg.execute("INSERT INTO tasks (id, system_id, title, _ts_hlc, _ts_origin)"
               " VALUES ('t2', 'a', 'pushed by a', 1 << 40, 'a')")
    msgs = _messages(pg)
    assert [(t, e) for t, e, _, _ in msgs] == [("tablesync:a", "INSERT")]
    _, _, payload, private = msgs[0]
    assert private is True
    assert payload["schema"] == "public" and payload["table"] == "tasks"
    assert payload["operation"] == "INSERT" and payload["old_record"] is None
    assert payload["record"]["id"] == "t1" and payload["record"]["_ts_origin"] == "server"
    # a move: the entry to the new scope, the exit (the log's INSERT) to the old one
    pg.execute("UPDATE tasks SET system_id = 'b' WHERE id = 't1'")
    moved = {t: (e, p) for t, e, p, _ in _messages(pg)}
    assert moved["tablesync:b"][0] == "UPDATE"
    assert moved["tablesync:b"][1]["record"]["system_id"] == "b"
    assert moved["tablesync:b"][1]["old_record"] == {"id": "t1"}
    assert moved["tablesync:a"][1]["table"] == "tablesync_exits"
    assert moved["tablesync:a"][1]["record"]["record_id"] == "t1"
    # a hard delete (tombstone clean-up): keys only, to the row's scope
    pg.execute("SET tablesync.hard_delete = 'on'")
    pg.execute("DELETE FROM tasks WHERE id = 't1'")
    (topic, event, payload, _), = _messages(pg)
    assert (topic, event, payload["record"], payload["old_record"]) == \
        ("tablesync:b", "DELETE", None, {"id": "t1"})


def test_an_oversized_change_is_sent_keys_only(pg: Any) -> None:
    pg.execute("SET tablesync.broadcast_max_bytes = 1000")
    pg.execute("INSERT INTO tasks (id, system_id, title, payload) VALUES ('big', 'a', 't', %s)",
               ("x" * 2000,))
    pg.execute("INSERT INTO tasks (id, system_id, title) VALUES ('small', 'a', 't')")
    (_, _, big, _), (_, _, small, _) = _messages(pg)
    assert big["partial"] is True and big["record"] == {"id": "big", "system_id": "a"}
    assert "partial" not in small and small["record"]["title"] == "t"
