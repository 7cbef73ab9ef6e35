"""Structured logs: what a log pipeline reading spreadhook's stderr can rely on."""

from __future__ import annotations

import json
import logging

import pytest

from spreadhook import logs


def test_a_log_record_is_one_json_line_with_its_extra_fields_as_keys(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.configure("info")
    try:
        logging.getLogger("spreadhook.ledger").info("wrote %d", 3, extra={"workloadSpread": "ns/ws"})
        logging.getLogger("spreadhook.ledger").debug("not at info")
        line, = capsys.readouterr().err.splitlines()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    record = json.loads(line)
    assert {k: record[k] for k in ("level", "logger", "msg", "workloadSpread")} == {
        "level": "INFO", "logger": "spreadhook.ledger", "msg": "wrote 3", "workloadSpread": "ns/ws"}
    assert record["ts"].startswith("20")
