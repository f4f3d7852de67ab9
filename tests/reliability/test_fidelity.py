"""Data fidelity on the real stack (issue 13 items 1-2): every type of docs/types.md and
awkward identifiers (reserved words, mixed case, spaces, as table, column and scope names)
round-trip A -> server -> B; values Postgres normalises end up in one canonical form on
A, the server and B; a value Postgres cannot hold is parked with the server's reason
while a later write arrives."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from tablesync.devserver.server import DevServer, DevServerInfo
from tablesync.engine import Engine
from tablesync.project import Project, load_project
from tablesync.remote.rest import RestRemote
from tablesync.session import Session
from tablesync.sql import postgres
from tablesync.sql import sqlite as sqlite_sql
from tablesync.sql.wire import codec
from tablesync.vault import Secret, Vault

from tablesync.daemon import realtime_factory

from .stack import create_users, email, password

pytestmark = pytest.mark.postgres

A, B = "system-a", "system-b"
TABLE = "Order Items"
SCHEMA = """CREATE TABLE "Order Items" (
    "ID" TEXT PRIMARY KEY,
    "user" TEXT NOT NULL,
    "group" INTEGER,
    "order" BIGINT,
    "desc" SMALLINT,
    "from" REAL,
    "to" DOUBLE,
    "end" FLOAT,
    "Mixed Case" NUMERIC(12, 2),
    "select" DECIMAL,
    "with space" TEXT,
    v VARCHAR(5),
    c CHAR(2),
    cl CLOB,
    bin BLOB,
    flag BOOLEAN,
    day DATE,
    at TIMESTAMP,
    at_tz TIMESTAMPTZ,
    doc JSON,
    docb JSONB,
    uid UUID
);
"""
COLUMNS = ["ID", "user", "group", "order", "desc", "from", "to", "end", "Mixed Case",
           "select", "with space", "v", "c", "cl", "bin", "flag", "day", "at", "at_tz", "doc",
           "docb", "uid"]


def write_project(tmp: Path, info: DevServerInfo | None, system: str) -> Path:
    (tmp / "schemas").mkdir(exist_ok=True)
    (tmp / "schemas" / "items.sql").write_text(SCHEMA)
    remote = ""
    if info is not None:
        remote = (f'[supabase]\nurl = "{info.url}"\nanon_key = "{info.anon_key}"\n'
                  f'email = "{email(system)}"\n')
    cfg = tmp / f"{system}.toml"
    cfg.write_text(
        f'[system]\nid = "{system}"\ndatabase = "{tmp / system}.db"\n{remote}'
        "[sync]\ninterval = 1.0\ndebounce = 0.01\npoll_interval = 2.0\n"
        f'[paths]\nschemas = "{tmp / "schemas"}"\ntoken_store = "{tmp / system}-auth.json"\n'
        f'conflict_log = "{tmp / system}-conflicts.log"\n'
        f'[tables."{TABLE}"]\nschema = "items.sql"\nprimary_key = "ID"\nscope = "user"\n')
    return cfg


def engine(tmp: Path, info: DevServerInfo, system: str) -> Engine:
    project = load_project(write_project(tmp, info, system))
    remote = RestRemote(info.url, info.anon_key, tables={t.name: t for t in project.tables})
    session = Session(remote, Vault(tmp / f"{system}-auth.json"), project=info.url,
                      email=email(system), password=Secret(password(system)))
    remote.tokens = session
    return Engine(project, remote=remote, session=session, realtime_factory=realtime_factory,
                  own_remote=True)


@pytest.fixture
def backend(pg_dsn: str, tmp_path: Path) -> Iterator[tuple[DevServer, Project]]:
    project = load_project(write_project(tmp_path, None, A))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(postgres.schema_sql(project.tables, project.ddl).encode())
    srv = DevServer(dsn=pg_dsn)
    srv.start()
    create_users(srv.info, (A, B))
    yield srv, project
    srv.stop()


def local_rows(tmp: Path, system: str) -> dict[str, dict[str, Any]]:
    db = sqlite3.connect(tmp / f"{system}.db")
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    out = {r[0]: dict(zip(COLUMNS, r)) for r in db.execute(f'SELECT {cols} FROM "{TABLE}"')}
    db.close()
    return out


def server_rows(dsn: str, project: Project) -> dict[str, dict[str, Any]]:
    """The server's rows in local form (as a replica pulling them holds them)."""
    wire = codec(project.tables[0])
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = [json.loads(j) for (j,) in conn.execute(
            f'SELECT to_json(t)::text FROM "{TABLE}" AS t')]
    # stored the way a replica stores them (SQLite's column affinities apply)
    mem = sqlite3.connect(":memory:")
    mem.execute(sqlite_sql.table_sql(project.ddl[TABLE]))
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    for r in rows:
        local = wire.to_local(r)
        mem.execute(f'INSERT INTO "{TABLE}" ({cols}) VALUES ({", ".join("?" * len(COLUMNS))})',
                    [local[c] for c in COLUMNS])
    return {r[0]: dict(zip(COLUMNS, r)) for r in mem.execute(f'SELECT {cols} FROM "{TABLE}"')}


ROWS = [
    # id, values (local form, as the application writes them)
    ("r1", {"group": 2 ** 40, "order": -2 ** 62, "desc": 7, "from": 3.141592653589793,
            "to": 1e300, "end": 0.1, "Mixed Case": 1.234, "select": 12.5,
            "with space": "tab\tquote' \"dq\" é", "v": "longer than five", "c": "x",
            "cl": "clob", "bin": b"\x00\x01\xfe\xff", "flag": 1, "day": "2024-01-05",
            "at": "2024-01-01T10:00:00+05:00", "at_tz": "2024-01-01 10:00:00+05:00",
            "doc": '{"b": 1,   "a": [1, 2, {"z": null}], "ü": "ß"}', "docb": "[1, 2]",
            "uid": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"}),
    ("r2", {"group": None, "flag": "yes", "day": "January 8, 2024", "at": "2024-01-01 10:00",
            "doc": "42", "docb": '"text"', "bin": b"", "uid": None}),
    ("r3", {"flag": 0, "doc": "{}", "docb": '{"k": true}', "cl": None}),
]


def test_every_type_and_awkward_names_round_trip_in_one_canonical_form(
        backend: tuple[DevServer, Project], pg_dsn: str, tmp_path: Path) -> None:
    srv, project = backend
    info = srv.info
    ta, tb = tmp_path / "a", tmp_path / "b"
    ta.mkdir()
    tb.mkdir()
    engine(ta, info, A).close()                     # creates A's database
    app = sqlite3.connect(ta / f"{A}.db", isolation_level=None)
    for rid, values in ROWS:
        cols = ["ID", "user", *values]
        app.execute(f'INSERT INTO "{TABLE}" ({", ".join(json.dumps(c) for c in cols)}) '
                    f'VALUES ({", ".join("?" * len(cols))})', [rid, A, *values.values()])
    app.execute(f'INSERT INTO "{TABLE}" ("ID", "user", "with space") VALUES (?, ?, ?)',
                ("bad", A, "nul\x00inside"))
    app.execute(f'INSERT INTO "{TABLE}" ("ID", "user", "cl") VALUES (?, ?, ?)',
                ("canary", A, "after the bad row"))
    with engine(ta, info, A) as ea:
        ea.sync_once()
        ea.sync_once()
    # replica B: a fresh database of the same system (A stopped cleanly, releasing it)
    with engine(tb, info, A) as eb:
        eb.sync_once()

    on_server = server_rows(pg_dsn, project)
    on_a, on_b = local_rows(ta, A), local_rows(tb, A)
    assert set(on_server) == set(on_b) == {"r1", "r2", "r3", "canary"}
    for rid in on_server:
        assert on_a[rid] == on_server[rid] == on_b[rid], rid
    # values Postgres normalised: the server's form won on A without a new write
    r1, r2 = on_a["r1"], on_a["r2"]
    assert r1["group"] == 2 ** 40 and r1["from"] == 3.141592653589793
    assert r1["Mixed Case"] == 1.23
    assert r1["bin"] == b"\x00\x01\xfe\xff" and r1["flag"] == 1
    assert r1["at"] == "2024-01-01T10:00:00"
    assert r1["doc"] == '{"a": [1, 2, {"z": null}], "b": 1, "ü": "ß"}'
    assert r1["uid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert r2["flag"] == 1 and r2["day"] == "2024-01-08" and r2["at"] == "2024-01-01T10:00:00"
    assert r2["bin"] == b""
    db = sqlite3.connect(ta / f"{A}.db")
    assert db.execute("SELECT count(*) FROM sync_queue WHERE synced_at IS NULL AND "
                      "record_id <> 'bad'").fetchone() == (0,)
    (reason,) = db.execute("SELECT reason FROM _tablesync_parked WHERE record_id = 'bad'"
                           ).fetchone()
    assert "22" in reason and ("nicode" in reason or "0x00" in reason), reason
    (tries,) = db.execute("SELECT max(retry_count) FROM sync_queue WHERE record_id = 'bad'"
                          ).fetchone()
    assert tries <= 1
    db.close()
