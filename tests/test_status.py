from __future__ import annotations

from tablesync.status import GREEN, QUEUE_ALERT_DEPTH, RED, YELLOW, StatusSnapshot, health


def _snap(**kw: object) -> StatusSnapshot:
    base: dict[str, object] = dict(system_id="a", state="Connected", engine_alive=True,
                                   queue_depth=0, websocket="connected")
    base.update(kw)
    return StatusSnapshot(**base)  # type: ignore[arg-type]


def test_green_only_when_connected_and_drained() -> None:
    assert _snap().indicator == GREEN
    assert _snap(queue_depth=1).indicator == YELLOW
    assert _snap(state="Syncing").indicator == YELLOW


def test_offline_and_queueing_is_yellow_even_while_retries_fail() -> None:
    assert _snap(state="Disconnected", queue_depth=3, consecutive_errors=7).indicator == YELLOW


def test_red_needs_a_human() -> None:
    assert _snap(parked=1).indicator == RED
    assert _snap(reauth_required=True, state="Disconnected").indicator == RED
    assert _snap(state="Syncing", consecutive_errors=3).indicator == RED
    assert _snap(state="Failed").indicator == RED
    assert _snap(engine_alive=False).indicator == RED
    assert _snap(engine_alive=False, state="Stopped").indicator == YELLOW


def test_health_rules() -> None:
    assert health(_snap()) == (True, [])
    ok, reasons = health(_snap(engine_alive=False, websocket="disconnected",
                               websocket_down_s=60, queue_depth=QUEUE_ALERT_DEPTH))
    assert not ok and len(reasons) == 3
    assert health(_snap(websocket="disconnected", websocket_down_s=5))[0]
