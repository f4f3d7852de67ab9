"""tablesync.login_watch: a rewritten token store is noticed once; an untouched or missing
one is not (real files, real os.replace as the vault writes)."""

from __future__ import annotations

import os
from pathlib import Path

from tablesync.login_watch import LoginWatch


def _rewrite(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)                       # a new inode, as the vault's atomic write


def test_a_rewrite_is_noticed_once(tmp_path: Path) -> None:
    store = tmp_path / "auth.json"
    watch = LoginWatch(store)
    assert not watch.changed()                  # no file yet
    _rewrite(store, "first login")
    assert watch.changed() and not watch.changed()
    watch.arm()
    assert not watch.changed()
    _rewrite(store, "second login")
    assert watch.changed()
    store.unlink()
    assert not watch.changed()                  # gone: nothing to sign in with


def test_no_token_store_never_changes() -> None:
    assert not LoginWatch(None).changed()
