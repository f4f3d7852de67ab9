from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from tablesync.errors import VaultError
from tablesync.vault import PASSPHRASE_ENV, Secret, Tokens, Vault

ACCESS = "eyJhbGciOiJIUzI1NiJ9.access-secret-value.sig"
REFRESH = "refresh-secret-value"


def _tokens() -> Tokens:
    return Tokens(Secret(ACCESS), Secret(REFRESH), 1_900_000_000.0, "user-1",
                  "http://127.0.0.1:1")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_secret_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    s = Secret("hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s) and "hunter2" not in f"{s}"
    assert ACCESS not in repr(_tokens()) and REFRESH not in repr(_tokens())
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("token %s %r", s, s)
    assert "hunter2" not in caplog.text
    assert s.reveal() == "hunter2"
    assert s == Secret("hunter2") and s != Secret("other") and Secret("x") != "x"
    assert not Secret("") and Secret(s).reveal() == "hunter2"


def test_round_trip_with_key_file(tmp_path: Path) -> None:
    path = tmp_path / "home" / ".ccm" / "auth.json"
    v = Vault(path)
    assert v.load() is None
    v.save(_tokens())
    got = Vault(path).load()
    assert got == _tokens()
    assert got is not None and got.access_token.reveal() == ACCESS


def test_files_and_dirs_are_private_and_encrypted(tmp_path: Path) -> None:
    os.umask(0o022)
    path = tmp_path / "a" / "b" / "auth.json"
    Vault(path).save(_tokens())
    assert _mode(path) == 0o600
    assert _mode(path.with_name("auth.json.key")) == 0o600
    assert _mode(path.parent) == 0o700 and _mode(path.parent.parent) == 0o700
    raw = path.read_text()
    assert ACCESS not in raw and REFRESH not in raw and "user-1" not in raw
    assert json.loads(raw)["kdf"] == "keyfile"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_passphrase_round_trip_and_wrong_passphrase(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "auth.json"
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    Vault(path, scrypt_n=2**10).save(_tokens())
    doc = json.loads(path.read_text())
    assert doc["kdf"] == "scrypt" and doc["salt"] and doc["n"] == 2**10
    assert not path.with_name("auth.json.key").exists()
    assert Vault(path).load() == _tokens()
    with pytest.raises(VaultError, match="wrong passphrase"):
        Vault(path, passphrase="battery staple").load()
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(VaultError, match="protected by a passphrase") as info:
        Vault(path).load()
    assert PASSPHRASE_ENV in str(info.value)


def test_wrong_key_file(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    Vault(path).save(_tokens())
    key = path.with_name("auth.json.key")
    key.unlink()
    Vault(tmp_path / "other.json").save(_tokens())
    (tmp_path / "other.json.key").rename(key)
    with pytest.raises(VaultError, match="does not match"):
        Vault(path).load()
    key.unlink()
    with pytest.raises(VaultError, match="key file is missing"):
        Vault(path).load()


@pytest.mark.parametrize("content", [b"", b"not json", b"[]", b'{"format": "x"}',
                                     b'{"format": "tablesync-vault", "version": 1, '
                                     b'"kdf": "keyfile", "data": "garbage"}'])
def test_corrupt_file_is_a_vault_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "auth.json"
    Vault(path).save(_tokens())
    path.write_bytes(content)
    with pytest.raises(VaultError) as info:
        Vault(path).load()
    assert str(path) in str(info.value)


def test_tampered_ciphertext_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    Vault(path).save(_tokens())
    doc = json.loads(path.read_text())
    data = doc["data"]
    doc["data"] = data[:20] + ("A" if data[20] != "A" else "B") + data[21:]
    path.write_text(json.dumps(doc))
    with pytest.raises(VaultError):
        Vault(path).load()


def test_loose_permissions_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    Vault(path).save(_tokens())
    os.chmod(path, 0o644)
    with pytest.raises(VaultError, match="chmod 600"):
        Vault(path).load()
    os.chmod(path, 0o600)
    os.chmod(path.with_name("auth.json.key"), 0o640)
    with pytest.raises(VaultError, match="readable by other users"):
        Vault(path).load()


def test_overwrite_keeps_key_and_clear(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    v = Vault(path)
    v.save(_tokens())
    key_before = path.with_name("auth.json.key").read_bytes()
    newer = Tokens(Secret("a2"), Secret("r2"), 1.0, "user-1")
    v.save(newer)
    assert path.with_name("auth.json.key").read_bytes() == key_before
    assert v.load() == newer
    assert newer.expires_in(now=0.5) == 0.5
    v.clear()
    assert v.load() is None
    v.clear()


def test_repr_hides_passphrase(tmp_path: Path) -> None:
    v = Vault(tmp_path / "auth.json", passphrase="topsecret")
    assert "topsecret" not in repr(v)
