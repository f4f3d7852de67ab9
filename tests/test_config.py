from __future__ import annotations

from pathlib import Path

import pytest

from tablesync.config import load_config
from tablesync.errors import ConfigError
from tablesync.model import DeletePolicy

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_loads() -> None:
    cfg = load_config(ROOT / "sync.toml")
    assert set(cfg.tables) == {"projects", "tasks", "results"}
    assert cfg.tables["tasks"].on_delete_conflict is DeletePolicy.EDIT_WINS
    assert cfg.supabase is None
    assert cfg.sync.interval == 10 and cfg.sync.batch_size == 100


def test_env_overrides_every_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABLESYNC_SYSTEM__ID", "system-b")
    monkeypatch.setenv("TABLESYNC_SYNC__BATCH_SIZE", "250")
    monkeypatch.setenv("TABLESYNC_TABLES__TASKS__PRIORITY", "9")
    monkeypatch.setenv("TABLESYNC_SUPABASE__URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("TABLESYNC_SUPABASE__ANON_KEY", "k")
    cfg = load_config(ROOT / "sync.toml")
    assert cfg.system.id == "system-b"
    assert cfg.sync.batch_size == 250
    assert cfg.tables["tasks"].priority == 9
    assert cfg.tables["tasks"].scope == "system_id"  # untouched keys keep file values
    assert cfg.supabase is not None and cfg.supabase.url == "http://127.0.0.1:9"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sync.toml"
    p.write_text(text)
    return p


def test_toml_syntax_error_names_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "[system\nid = 1\n")
    with pytest.raises(ConfigError, match=r"sync\.toml: TOML syntax error.*line 1"):
        load_config(p)


def test_unknown_key_names_table_and_key(tmp_path: Path) -> None:
    p = _write(tmp_path, '[system]\nid="a"\n[tables.tasks]\nschema="t.sql"\nscoop="x"\n')
    with pytest.raises(ConfigError, match=r"sync\.toml: \[tables\.tasks\] scoop: unknown key"):
        load_config(p)


def test_bad_value_names_table_and_key(tmp_path: Path) -> None:
    p = _write(tmp_path, '[system]\nid="a"\n[tables.tasks]\nschema="t.sql"\n'
                         'on_delete_conflict="first-wins"\n')
    with pytest.raises(ConfigError, match=r"\[tables\.tasks\] on_delete_conflict"):
        load_config(p)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="nope.toml: file not found"):
        load_config("nope.toml")


def test_secret_in_file_is_refused(tmp_path: Path) -> None:
    p = _write(tmp_path, '[system]\nid="a"\n[supabase]\nurl="http://x"\nanon_key="k"\n'
                         'password="hunter2"\n')
    with pytest.raises(ConfigError, match=r"\[supabase\] password.*TABLESYNC_SUPABASE__PASSWORD"):
        load_config(p)
