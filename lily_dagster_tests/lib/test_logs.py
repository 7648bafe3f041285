"""Structured logs (lib/logs.py): one JSON schema for Lily's lines, the trail of a batch
per stage at INFO and per event at DEBUG (keyed by event_id and run_id), `lily trace
--log` in the same schema, and a bad LILY_LOG_FORMAT refused with its name."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from lily_dagster.lib.logs import (
    FIELDS,
    JsonFormatter,
    configure_logging,
    log_stage,
    trail_lines,
    trail_logger,
)
from lily_dagster.lib.staging import StagingArea, landed_frame
from lily_dagster.settings import ConfigError, Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The JSON lines Lily's loggers write, at DEBUG."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("lily_dagster")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_batch_logs_one_line_and_one_per_event_at_debug(captured: io.StringIO) -> None:
    log_stage("applied", "acme", ["e1", None, "e2"], run_id="r1", batch_id="b1", events=2)
    summary, *per_event = lines(captured)
    assert list(summary)[: len(FIELDS) - 1] == [f for f in FIELDS if f != "event_id"]
    assert summary["level"] == "INFO" and summary["events"] == 2
    assert [(e["event_id"], e["run_id"], e["level"]) for e in per_event] == [
        ("e1", "r1", "DEBUG"),
        ("e2", "r1", "DEBUG"),
    ]
    assert all(e["stage"] == "applied" and e["tenant"] == "acme" for e in per_event)


def test_event_ids_are_not_read_below_debug(captured: io.StringIO) -> None:
    logging.getLogger("lily_dagster").setLevel(logging.INFO)

    def never() -> Iterator[str]:
        raise AssertionError("event ids read at INFO")
        yield ""

    log_stage("landed", "acme", never(), batch_id="b1", events=3)
    assert [line["stage"] for line in lines(captured)] == ["landed"]


def test_landing_a_batch_logs_its_events(captured: io.StringIO, tmp_path: Path) -> None:
    payloads = [json.dumps({"event_id": f"e{i}"}).encode() for i in range(3)] + [b"\xff"]
    frame = landed_frame([f"kafka:t/0/{i}" for i in range(4)], payloads, [None] * 4)  # type: ignore[list-item]
    StagingArea(tmp_path).land("acme", "b1", "kafka", frame, {})
    found = [line.get("event_id") for line in lines(captured) if line["stage"] == "landed"]
    assert found == [
        None,
        "e0",
        "e1",
        "e2",
    ]  # the batch line, then its events (not the non-JSON one)


def test_configure_installs_one_json_handler_that_does_not_propagate() -> None:
    logger = logging.getLogger("lily_dagster")
    before = list(logger.handlers)
    try:
        configure_logging("text", "INFO")
        assert logger.handlers == before
        configure_logging("json", "DEBUG")
        configure_logging("json", "DEBUG")
        added = [h for h in logger.handlers if h not in before]
        assert len(added) == 1 and isinstance(added[0].formatter, JsonFormatter)
        assert not logger.propagate and trail_logger.isEnabledFor(logging.DEBUG)
    finally:
        for handler in [h for h in logger.handlers if h not in before]:
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def test_trace_log_lines_follow_the_schema() -> None:
    trace = {
        "tenant": "acme",
        "event_id": "e1",
        "copies": [
            {
                "origin": "kafka:t/0/7",
                "state": "applied",
                "received_at": "2026-12-01T00:00:00+00:00",
                "batch_id": "b1",
                "landed_at": "2026-12-01T00:00:01+00:00",
                "run_id": "r1",
            }
        ],
        "quarantined": [],
        "changes": [
            {
                "seq": 3,
                "qualified_name": "db/t",
                "change": "created",
                "version": 1,
                "changed_at": "2026-12-01T00:00:02+00:00",
                "deliveries": [{"target": "wh", "status": "delivered"}],
            }
        ],
    }
    found = [json.loads(line) for line in trail_lines(trace)]
    assert [f["stage"] for f in found] == ["received", "landed", "applied", "delivery"]
    assert found[1]["run_id"] == "r1" and found[2]["version"] == 1
    assert found[3]["target"] == "wh" and found[3]["status"] == "delivered"
    assert all(f["event_id"] == "e1" and f["logger"] == "lily_dagster.trail" for f in found)
    unknown = [json.loads(line) for line in trail_lines({**trace, "copies": [], "changes": []})]
    assert [f["stage"] for f in unknown] == ["unknown"]


def test_a_bad_log_format_is_refused_with_its_name(tmp_path: Path) -> None:
    home = {"LILY_HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="LILY_LOG_FORMAT='xml'"):
        Settings.resolve({**home, "LILY_LOG_FORMAT": "xml"})
    assert Settings.resolve({**home, "LILY_LOG_FORMAT": "JSON"}).log_format == "json"
    assert Settings.resolve(home).log_format == "text"
