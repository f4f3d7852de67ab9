from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tablesync.errors import AuthError
from tablesync.remote.base import DeadSessionError
from tablesync.session import Session
from tablesync.vault import Secret, Tokens, Vault

PROJECT = "http://127.0.0.1:9"


class FakeAuth:
    """A GoTrue stand-in that rotates tokens and counts calls."""

    def __init__(self) -> None:
        self.n = 0
        self.calls: list[str] = []
        self.dead: set[str] = set()
        self.lock = threading.Lock()

    def _issue(self, life: float = 3600) -> Tokens:
        with self.lock:
            self.n += 1
            n = self.n
        return Tokens(Secret(f"a{n}"), Secret(f"r{n}"), time.time() + life, "uid")

    def sign_in(self, email: str, password: Secret) -> Tokens:
        self.calls.append(f"sign_in {email}")
        return self._issue()

    def refresh(self, refresh_token: Secret) -> Tokens:
        self.calls.append(f"refresh {refresh_token.reveal()}")
        if refresh_token.reveal() in self.dead:
            raise DeadSessionError("Invalid Refresh Token: Already Used")
        time.sleep(0.05)
        return self._issue()


def _vault(tmp_path: Path) -> Vault:
    return Vault(tmp_path / "auth.json")


def test_sign_in_when_nothing_stored(tmp_path: Path) -> None:
    auth = FakeAuth()
    seen: list[Secret] = []
    s = Session(auth, _vault(tmp_path), project=PROJECT, email="e", password=Secret("p"),
                on_refresh=seen.append)
    t = s.ensure()
    assert auth.calls == ["sign_in e"] and t.project == PROJECT and seen == [Secret("a1")]
    stored = _vault(tmp_path).load()
    assert stored == t
    # a second Session reuses the stored, still valid tokens
    s2 = Session(auth, _vault(tmp_path), project=PROJECT)
    assert s2.ensure() == t and auth.calls == ["sign_in e"]


def test_no_credentials_is_auth_error(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="tablesync login"):
        Session(FakeAuth(), _vault(tmp_path), project=PROJECT).ensure()


def test_tokens_of_another_project_are_ignored(tmp_path: Path) -> None:
    _vault(tmp_path).save(Tokens(Secret("x"), Secret("y"), time.time() + 999, "u", "http://o"))
    auth = FakeAuth()
    Session(auth, _vault(tmp_path), project=PROJECT, email="e", password=Secret("p")).ensure()
    assert auth.calls == ["sign_in e"]


def test_tokens_of_another_project_say_so_when_there_is_no_password(tmp_path: Path) -> None:
    _vault(tmp_path).save(Tokens(Secret("x"), Secret("y"), time.time() + 999, "u",
                                 "http://other.example/"))
    s = Session(FakeAuth(), _vault(tmp_path), project=PROJECT + "/")
    message = (f"stored tokens belong to http://other.example, this config points at "
               f"{PROJECT}; run `tablesync login`")
    with pytest.raises(AuthError, match="stored tokens belong to") as info:
        s.ensure()
    assert str(info.value).startswith(message)
    with pytest.raises(DeadSessionError, match="stored tokens belong to"):
        s.refresh()


def test_a_new_login_in_the_vault_replaces_dead_tokens_in_memory(tmp_path: Path) -> None:
    auth = FakeAuth()
    s = Session(auth, _vault(tmp_path), project=PROJECT, email="e", password=Secret("p"))
    s.ensure()
    s.password = None
    auth.dead.add("r1")
    with pytest.raises(DeadSessionError):
        s.refresh()
    # `tablesync login` in another process writes new tokens
    _vault(tmp_path).save(Tokens(Secret("new"), Secret("rnew"), time.time() + 999, "u",
                                 PROJECT))
    assert s.ensure().access_token == Secret("new")


def test_near_expiry_refreshes_and_dead_refresh_falls_back(tmp_path: Path) -> None:
    _vault(tmp_path).save(Tokens(Secret("x"), Secret("r0"), time.time() + 10, "u", PROJECT))
    auth = FakeAuth()
    s = Session(auth, _vault(tmp_path), project=PROJECT)
    assert s.ensure().access_token == Secret("a1") and auth.calls == ["refresh r0"]
    assert _vault(tmp_path).load().refresh_token == Secret("r1")  # type: ignore[union-attr]
    _vault(tmp_path).save(Tokens(Secret("x"), Secret("r9"), time.time() + 10, "u", PROJECT))
    auth.dead.add("r9")
    with pytest.raises(DeadSessionError):
        Session(auth, _vault(tmp_path), project=PROJECT).ensure()
    s3 = Session(auth, _vault(tmp_path), project=PROJECT, email="e", password=Secret("p"))
    s3.ensure()
    assert auth.calls[-2:] == ["refresh r9", "sign_in e"]


def test_refresh_expired_is_single_flight(tmp_path: Path) -> None:
    auth = FakeAuth()
    s = Session(auth, _vault(tmp_path), project=PROJECT, email="e", password=Secret("p"))
    old = s.ensure().access_token
    results: list[Secret] = []
    threads = [threading.Thread(target=lambda: results.append(s.refresh_expired(old)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert auth.calls.count("refresh r1") == 1 and len(auth.calls) == 2
    assert set(results) == {Secret("a2")}
