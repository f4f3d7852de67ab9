"""Devserver Realtime latency: committed INSERT -> postgres_changes at a websocket client.

Baseline in the same run: raw PostgreSQL LISTEN/NOTIFY: the same kind of INSERT into a twin
table whose trigger only does ``pg_notify(id)``, received by a psycopg listener. Both are
measured one change at a time (insert, wait for arrival, next), in alternating rounds, on
127.0.0.1. The Realtime subscriber is a real signed-in user (admin API + password grant) whose
subscription carries a filter and goes through RLS. The devserver runs in this process; the
measuring client runs in a child process (its own interpreter, as a real client would).

Two clocks per change: ``commit``: from the moment the INSERT's commit is acknowledged to the
writer until arrival (what Realtime adds); ``statement``: from sending the INSERT (includes the
commit's WAL flush).

Run:  .venv/bin/python bench/devserver_realtime.py [--n 1000] [--rounds 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
import psycopg
import websockets

from tablesync.devserver.server import DevServer, DevServerInfo

TABLE_SQL = b"""
CREATE TABLE public.bench_items (
  id bigint PRIMARY KEY,
  system_id text NOT NULL,
  title text,
  n integer
);
ALTER TABLE public.bench_items ENABLE ROW LEVEL SECURITY;
CREATE POLICY bench_read ON public.bench_items FOR SELECT TO authenticated
  USING (system_id = auth.jwt() -> 'app_metadata' ->> 'system_id');
ALTER PUBLICATION supabase_realtime ADD TABLE public.bench_items;
CREATE TABLE public.bench_raw (
  id bigint PRIMARY KEY,
  system_id text NOT NULL,
  title text,
  n integer
);
CREATE FUNCTION public.bench_raw_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('bench_raw', NEW.id::text);
  RETURN NULL;
END $$;
CREATE TRIGGER bench_raw_notify AFTER INSERT ON public.bench_raw
  FOR EACH ROW EXECUTE FUNCTION public.bench_raw_notify();
"""
SYSTEM = "bench-system"


def _user_token(info: DevServerInfo) -> str:
    """Create a user with app_metadata.system_id through the admin API and sign in."""
    admin = {"apikey": info.service_key, "Authorization": f"Bearer {info.service_key}"}
    with httpx.Client(base_url=info.url, timeout=30) as http:
        resp = http.post("/auth/v1/admin/users", headers=admin, json={
            "email": "bench@example.com", "password": "bench-pass-1", "email_confirm": True,
            "app_metadata": {"system_id": SYSTEM}})
        resp.raise_for_status()
        resp = http.post("/auth/v1/token?grant_type=password", headers={"apikey": info.anon_key},
                         json={"email": "bench@example.com", "password": "bench-pass-1"})
        resp.raise_for_status()
        return str(resp.json()["access_token"])


Sample = tuple[float, float]  # (seconds since commit ack, seconds since statement start)


async def _raw_round(writer: psycopg.AsyncConnection[Any], listener: Any, n: int,
                     start: int) -> list[Sample]:
    out = []
    for i in range(start, start + n):
        t0 = time.perf_counter()
        await writer.execute("INSERT INTO bench_raw (id, system_id, title, n)"
                             " VALUES (%s, %s, 'x', %s)", (i, SYSTEM, i))
        t1 = time.perf_counter()
        note = await anext(listener)
        t2 = time.perf_counter()
        out.append((t2 - t1, t2 - t0))
        assert note.payload == str(i)
    return out


async def _realtime_round(writer: psycopg.AsyncConnection[Any], ws: Any, n: int,
                          start: int) -> list[Sample]:
    out = []
    for i in range(start, start + n):
        t0 = time.perf_counter()
        await writer.execute("INSERT INTO bench_items (id, system_id, title, n)"
                             " VALUES (%s, %s, 'x', %s)", (i, SYSTEM, i))
        t1 = time.perf_counter()
        while True:
            msg = json.loads(await ws.recv())
            if msg["event"] == "postgres_changes":
                break
        t2 = time.perf_counter()
        out.append((t2 - t1, t2 - t0))
        assert msg["payload"]["data"]["record"]["id"] == i
    return out


async def _subscribe(info: DevServerInfo, token: str) -> Any:
    url = info.url.replace("http://", "ws://") + (
        f"/realtime/v1/websocket?apikey={info.anon_key}&vsn=1.0.0")
    ws = await websockets.connect(url)
    await ws.send(json.dumps({"topic": "realtime:bench", "event": "phx_join", "ref": "1",
                              "join_ref": "1", "payload": {
                                  "config": {"postgres_changes": [{
                                      "event": "INSERT", "schema": "public",
                                      "table": "bench_items",
                                      "filter": f"system_id=eq.{SYSTEM}"}]},
                                  "access_token": token}}))
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg["event"] == "system":
            assert msg["payload"]["message"] == "Subscribed to PostgreSQL", msg
            return ws
        if msg["event"] == "phx_reply":
            assert msg["payload"]["status"] == "ok", msg


async def measure(info: DevServerInfo, token: str, n: int, rounds: int,
                  warmup: int) -> dict[str, list[Sample]]:
    writer = await psycopg.AsyncConnection.connect(info.dsn, autocommit=True)
    lconn = await psycopg.AsyncConnection.connect(info.dsn, autocommit=True)
    await lconn.execute("LISTEN bench_raw")
    listener = lconn.notifies()
    ws = await _subscribe(info, token)
    try:
        await _raw_round(writer, listener, warmup, -warmup)
        await _realtime_round(writer, ws, warmup, -warmup)
        raw: list[Sample] = []
        rt: list[Sample] = []
        per = max(1, n // rounds)
        for r in range(rounds):
            raw += await _raw_round(writer, listener, per, r * per)
            rt += await _realtime_round(writer, ws, per, r * per)
        return {"raw_listen_notify": raw, "realtime_websocket": rt}
    finally:
        await ws.close()
        await listener.aclose()
        await lconn.close()
        await writer.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _stats(values: list[float]) -> dict[str, float]:
    return {"p50_ms": _pct(values, 0.5) * 1e3, "p99_ms": _pct(values, 0.99) * 1e3,
            "mean_ms": statistics.fmean(values) * 1e3, "max_ms": max(values) * 1e3}


def summarize(samples: dict[str, list[Sample]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, values in samples.items():
        out[name] = {"n": len(values), "commit": _stats([v[0] for v in values]),
                     "statement": _stats([v[1] for v in values])}
    raw, rt = out["raw_listen_notify"], out["realtime_websocket"]
    out["ratio"] = {clock: {q: rt[clock][q] / raw[clock][q] for q in ("p50_ms", "p99_ms")}
                    for clock in ("commit", "statement")}
    out["targets_met"] = rt["commit"]["p50_ms"] < 5 and rt["commit"]["p99_ms"] < 20
    return out


def _client(spec: str) -> int:
    """Child process: run the measurement and print the samples as JSON."""
    args = json.loads(spec)
    info = DevServerInfo(url=args["url"], anon_key=args["anon_key"],
                         service_key=args["service_key"], dsn=args["dsn"])
    samples = asyncio.run(measure(info, args["token"], args["n"], args["rounds"],
                                  args["warmup"]))
    print(json.dumps(samples))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="measured changes per side")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--client", help=argparse.SUPPRESS)  # internal: child process
    args = parser.parse_args(argv)
    if args.client:
        return _client(args.client)
    srv = DevServer()
    info = srv.start()
    try:
        with psycopg.connect(info.dsn, autocommit=True) as conn:
            conn.execute(TABLE_SQL)
        spec = {"url": info.url, "anon_key": info.anon_key, "service_key": info.service_key,
                "dsn": info.dsn, "token": _user_token(info), "n": args.n,
                "rounds": args.rounds, "warmup": args.warmup}
        child = subprocess.run([sys.executable, __file__, "--client", json.dumps(spec)],
                               capture_output=True, text=True, timeout=600, check=False)
        if child.returncode != 0:
            sys.stderr.write(child.stderr)
            return child.returncode
        samples = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        srv.stop()
    result = summarize(samples)
    if args.json:
        print(json.dumps(result))
        return 0
    _print(result)
    return 0


def _print(result: dict[str, Any]) -> None:
    for clock in ("commit", "statement"):
        print(f"from {clock}:")
        for name in ("raw_listen_notify", "realtime_websocket"):
            r = result[name][clock]
            print(f"  {name:20s} n={result[name]['n']:5d}  p50={r['p50_ms']:6.2f} ms"
                  f"  p99={r['p99_ms']:6.2f} ms  mean={r['mean_ms']:6.2f} ms"
                  f"  max={r['max_ms']:7.2f} ms")
        ratio = result["ratio"][clock]
        print(f"  ratio realtime/raw: p50 {ratio['p50_ms']:.2f}x, p99 {ratio['p99_ms']:.2f}x")
    print("targets (commit clock: p50 < 5 ms, p99 < 20 ms): "
          + ("met" if result["targets_met"] else "NOT met"))


if __name__ == "__main__":
    sys.exit(main())
