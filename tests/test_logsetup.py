"""tablesync.logsetup: UTC timestamps and levels on every line, JSON lines, token shapes
masked, and a configuration that can be undone."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from tablesync.logsetup import configure, parse_level

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def _log(json_lines: bool) -> str:
    out = io.StringIO()
    restore = configure(logging.INFO, json_lines=json_lines, stream=out)
    try:
        log = logging.getLogger("tablesync.test")
        log.info("token %s refresh_token=abcdef123 Bearer %s", JWT, "x" * 20)
        log.debug("hidden at INFO")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        restore()
    return out.getvalue()


def test_text_lines_are_stamped_in_utc_and_masked() -> None:
    text = _log(False)
    first, second = text.splitlines()[:2]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO tablesync\.test: "
                        r"token \*\*\* refresh_token=\*\*\* Bearer \*\*\*", first), first
    assert second.endswith("ERROR tablesync.test: failed")
    assert "ValueError: boom" in text and "hidden" not in text and JWT not in text


def test_json_lines() -> None:
    docs = [json.loads(line) for line in _log(True).splitlines()]
    assert [d["level"] for d in docs] == ["INFO", "ERROR"]
    assert docs[0]["logger"] == "tablesync.test" and docs[0]["ts"].endswith("Z")
    assert "***" in docs[0]["msg"] and JWT not in json.dumps(docs)
    assert "ValueError: boom" in docs[1]["exc"]


def test_other_libraries_show_from_error_unless_debug() -> None:
    for level, shown in ((logging.INFO, ["ERROR"]), (logging.DEBUG, ["WARNING", "ERROR"])):
        out = io.StringIO()
        restore = configure(level, stream=out)
        try:
            logging.getLogger("sqlglot").warning("unsupported syntax")
            logging.getLogger("uvicorn.error").error("bind failed")
        finally:
            restore()
        assert [line.split()[1] for line in out.getvalue().splitlines()] == shown


def test_configure_is_undone_and_levels_parse() -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    configure(logging.DEBUG, stream=io.StringIO())()
    assert (root.level, list(root.handlers)) == before
    assert parse_level("info") == logging.INFO and parse_level("15") == 15
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        parse_level("loud")
