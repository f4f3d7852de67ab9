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


def test_what_makes_healthz_503_also_makes_the_light_red() -> None:
    # issue 16: /healthz 503 while the page stayed yellow
    assert _snap(websocket="disconnected", websocket_down_s=31).indicator == RED
    assert _snap(queue_depth=QUEUE_ALERT_DEPTH).indicator == RED
    # ... but an unreachable server takes Realtime with it: offline and queueing, healthy
    offline = _snap(state="Disconnected", websocket="disconnected", websocket_down_s=300,
                    queue_depth=3, consecutive_errors=9, cause="server_unreachable")
    assert offline.indicator == YELLOW and health(offline) == (True, [])


def test_a_local_failure_is_red_at_once_and_says_why() -> None:
    snap = _snap(state="Disconnected", cause="local_locked",
                 last_error="cannot start a transaction: database is locked")
    assert snap.indicator == RED
    ok, reasons = health(snap)
    assert not ok and reasons == ["local database locked: cannot start a transaction: "
                                  "database is locked"]
    assert snap.to_dict()["cause"] == "local_locked"
