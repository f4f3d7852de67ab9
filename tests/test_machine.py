"""The state machine, by golden transcripts (tests/golden/transcripts/*.json) and a fuzz run."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tablesync.backoff import Backoff
from tablesync.machine import (
    MachineSettings, PullResult, PushResult, StartCatchUp, StartPush, State, SyncMachine,
    event_from_dict,
)

TRANSCRIPTS = sorted((Path(__file__).parent / "golden" / "transcripts").glob("*.json"))


def _machine(doc: dict[str, Any]) -> SyncMachine:
    return SyncMachine(settings=MachineSettings(**doc["settings"]),
                       backoff=Backoff(rng=random.Random(0), **doc["backoff"]))


def test_there_are_transcripts() -> None:
    assert len(TRANSCRIPTS) >= 10


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_transcript(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert doc["description"]
    machine = _machine(doc)
    for n, step in enumerate(doc["steps"]):
        got = [i.to_dict() for i in machine.handle(event_from_dict(step["event"]))]
        where = f"{path.name} step {n} ({step['event']})"
        assert got == step["expect"], where
        assert machine.state.value == step["state"], where


def test_unknown_event_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event"):
        event_from_dict({"event": "teleport"})
    with pytest.raises(ValueError, match="unknown field"):
        event_from_dict({"event": "tick", "nme": "push"})


_EVENTS = [
    {"event": "config_present"}, {"event": "auth_ok", "expires_in": 60.0},
    {"event": "auth_failed", "reason": "transient"}, {"event": "ws_up"}, {"event": "ws_down"},
    {"event": "tick", "name": "push"}, {"event": "tick", "name": "debounce"},
    {"event": "tick", "name": "retry"}, {"event": "tick", "name": "poll"},
    {"event": "tick", "name": "refresh"}, {"event": "local_change"},
    {"event": "sync_requested"}, {"event": "result"},
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_EVENTS), max_size=80),
       st.sampled_from(["ok", "transient", "auth", "forbidden", "payload"]),
       st.booleans())
def test_never_two_cycles_at_once(events: list[dict[str, Any]], outcome: str,
                                  backlog: bool) -> None:
    """Whatever happens, at most one push/pull is outstanding, and only while online."""
    m = SyncMachine(backoff=Backoff(jitter=0.0))
    running: str | None = None
    for raw in events:
        if raw["event"] == "result":
            if running is None:
                continue
            ev = (PushResult(outcome, backlog) if running == "push" else PullResult(outcome))
            running = None
            out = m.handle(ev)
        else:
            out = m.handle(event_from_dict(raw))
        starts = [i for i in out if isinstance(i, (StartPush, StartCatchUp))]
        assert len(starts) <= 1
        if starts:
            assert running is None, "a cycle started while another runs"
            assert m.state is State.SYNCING
            running = "push" if isinstance(starts[0], StartPush) else "pull"
        if m.state is State.FAILED:
            running = None  # the engine abandons an outstanding cycle on re-auth


def test_a_local_failure_is_retried_and_named_not_server_unreachable() -> None:
    m = SyncMachine(backoff=Backoff(jitter=0.0))
    m.handle(event_from_dict({"event": "config_present"}))
    m.handle(event_from_dict({"event": "auth_ok", "expires_in": 3600}))
    out = m.handle(event_from_dict({"event": "push_result", "outcome": "transient",
                                    "cause": "local_locked"}))
    reports = [i for i in out if i.do == "report_state"]
    assert reports and reports[-1].to_dict()["reason"] == "local database locked"
    assert any(i.to_dict() == {"do": "schedule_timer", "name": "retry", "delay": 1.0}
               for i in out)
