"""kafka_source against the real broker (Tansu): a cursor offset the broker no longer has is
reported and read on from the partition's new start; one inside the log never is."""

from __future__ import annotations

import itertools
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from lily_dagster.lib import kafka_source
from lily_dagster.lib.broker import ensure_topics, produce
from lily_dagster.lib.kafka_source import (
    KafkaBatch,
    KafkaMessage,
    OffsetReset,
    read_batch,
    read_offset_resets,
    record_offset_resets,
    route_messages,
)
from lily_dagster.lib.reasons import Reason

_seq = itertools.count()


@pytest.fixture
def one_partition(kafka_bootstrap: str) -> str:
    """A fresh topic of one partition (offsets are then predictable)."""
    name = f"lily.test.source.{os.getpid()}.{next(_seq)}"
    ensure_topics(kafka_bootstrap, [name], partitions=1)
    return name


def values(batch: KafkaBatch) -> list[bytes]:
    return [m.value for m in batch.messages]


def read(bootstrap: str, topic: str, at: int | None, **kwargs: Any) -> KafkaBatch:
    cursor = {} if at is None else {topic: {"0": at}}
    return read_batch(bootstrap, [topic], cursor, 1000, max_seconds=3, **kwargs)


def test_a_cursor_inside_the_log_is_never_reset_though_tansu_under_reports_its_end(
    kafka_bootstrap: str, one_partition: str
) -> None:
    topic = one_partition
    # one produce: one record batch, for which Tansu reports a high watermark of 1
    produce(kafka_bootstrap, topic, [(None, b"m%d" % i) for i in range(15)])
    whole = read(kafka_bootstrap, topic, None)
    assert len(whole.messages) == 15 and whole.high_watermarks[topic]["0"] < 15
    for at in (15, 7, 1):
        started = time.monotonic()
        batch = read(kafka_bootstrap, topic, at)
        assert batch.resets == []
        assert values(batch) == [b"m%d" % i for i in range(at, 15)]
        assert batch.next_cursor == {topic: {"0": 15}}
        # decided by the last record batch at once, not by waiting for the end
        assert time.monotonic() - started < 2.5


def test_a_caught_up_read_past_its_bound_still_reports_no_lag(
    kafka_bootstrap: str, one_partition: str
) -> None:
    # A loaded machine can answer end-of-partition after the read's bound: the read waits
    # for it rather than reporting "at least 1 left" of a partition it read to the end.
    topic = one_partition
    produce(kafka_bootstrap, topic, [(None, b"m%d" % i) for i in range(5)])
    cursor = {topic: {"0": 5}}
    batch = read_batch(kafka_bootstrap, [topic], cursor, 1000, max_seconds=0)
    assert batch.messages == [] and batch.drained and batch.lag == 0
    flowing = read_batch(kafka_bootstrap, [topic], {topic: {"0": 0}}, 1000, max_seconds=0)
    assert len(flowing.messages) in range(1, 6)  # messages came: the bound stops the read


def test_a_cursor_far_past_the_end_is_reported_and_reading_goes_on_from_the_start(
    kafka_bootstrap: str, one_partition: str
) -> None:
    topic = one_partition
    produce(kafka_bootstrap, topic, [(None, b"m%d" % i) for i in range(5)])
    batch = read(kafka_bootstrap, topic, 999)
    (reset,) = batch.resets
    assert (reset.topic, reset.partition, reset.kind) == (topic, 0, "past_end")
    assert (reset.cursor, reset.low, reset.end, reset.lost) == (999, 0, 5, None)
    assert reset.high == batch.high_watermarks[topic]["0"]
    assert "999" in reset.describe() and "unknown" in reset.describe()
    assert values(batch) == [b"m%d" % i for i in range(5)]
    assert batch.start == {topic: {"0": 0}}
    assert batch.next_cursor == {topic: {"0": 5}} and batch.drained
    # once the cursor is back in the log, nothing more is reported
    assert read(kafka_bootstrap, topic, 5).resets == []


def test_a_topic_deleted_and_created_again_is_reset_empty_or_not(
    kafka_bootstrap: str, one_partition: str
) -> None:
    topic = one_partition
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    produce(kafka_bootstrap, topic, [(None, b"old%d" % i) for i in range(6)])
    cursor = read(kafka_bootstrap, topic, None).next_cursor
    assert cursor == {topic: {"0": 6}}
    for future in admin.delete_topics([topic]).values():
        future.result(10)
    # while the topic is gone its offsets stay in the cursor, to be checked when it returns
    gone = read_batch(kafka_bootstrap, [topic], cursor, 100, max_seconds=1)
    assert gone.missing_topics == [topic] and gone.next_cursor == cursor and not gone.resets

    ensure_topics(kafka_bootstrap, [topic], partitions=1)
    empty = read_batch(kafka_bootstrap, [topic], cursor, 100, max_seconds=3)
    (reset,) = empty.resets
    assert (reset.kind, reset.cursor, reset.end, reset.low) == ("past_end", 6, 0, 0)
    assert empty.messages == [] and empty.next_cursor == {topic: {"0": 0}} and empty.drained

    produce(kafka_bootstrap, topic, [(None, b"new%d" % i) for i in range(2)])
    batch = read_batch(kafka_bootstrap, [topic], cursor, 100, max_seconds=3)
    assert [(r.kind, r.cursor, r.end) for r in batch.resets] == [("past_end", 6, 2)]
    assert values(batch) == [b"new0", b"new1"]
    assert batch.next_cursor == {topic: {"0": 2}}


def test_a_cursor_below_the_low_watermark_reports_the_messages_skipped(
    kafka_bootstrap: str, one_partition: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention deleting unread messages (Tansu deletes none: its low watermark is made 3)."""
    topic = one_partition
    produce(kafka_bootstrap, topic, [(None, b"m%d" % i) for i in range(6)])
    real = kafka_source._watermarks
    monkeypatch.setattr(kafka_source, "_watermarks", lambda c, t, p: (3, real(c, t, p)[1]))
    batch = read(kafka_bootstrap, topic, 1)
    (reset,) = batch.resets
    assert (reset.kind, reset.cursor, reset.low, reset.lost) == ("before_start", 1, 3, 2)
    assert "2 messages were deleted unread" in reset.describe()
    assert values(batch) == [b"m3", b"m4", b"m5"]
    # a partition the cursor does not name yet starts at the low watermark, no loss
    assert read(kafka_bootstrap, topic, None).resets == []


def message(offset: int, value: bytes, timestamp_ms: int) -> KafkaMessage:
    return KafkaMessage("t", 0, offset, value, timestamp_ms)


def test_batch_ids_tell_the_records_of_reused_offsets_apart() -> None:
    def batch(*msgs: KafkaMessage) -> KafkaBatch:
        return KafkaBatch(list(msgs), {"t": {"0": 0}}, {"t": {"0": len(msgs)}}, {})

    first = batch(message(0, b"a", 1000), message(1, b"b", 1001))
    assert first.batch_id() == batch(message(0, b"a", 1000), message(1, b"b", 1001)).batch_id()
    # the same offsets after a broker lost its log: other records, another batch
    assert first.batch_id() != batch(message(0, b"a", 5000), message(1, b"b", 5001)).batch_id()
    assert first.batch_id() != batch(message(0, b"x", 1000), message(1, b"b", 1001)).batch_id()


def test_resets_are_recorded_durably_and_read_back_since_a_time(tmp_path: Path) -> None:
    path = kafka_source.offset_resets_path(tmp_path)
    assert read_offset_resets(path) == []
    then = datetime(2026, 1, 1, tzinfo=UTC)
    past = OffsetReset("t", 0, 999, 0, 1, "past_end", end=5)
    before = OffsetReset("t", 1, 1, 3, 9, "before_start", lost=2)
    record_offset_resets(path, [past], then)
    with path.open("a") as out:
        out.write('{"time": "2026-01-01T00:00')  # a line a crash cut short
    record_offset_resets(path, [before], then + timedelta(hours=1))
    record_offset_resets(path, [], then)
    records = read_offset_resets(path)
    assert [r["kind"] for r in records] == ["past_end", "before_start"]
    assert {k: records[0][k] for k in ("topic", "partition", "cursor", "low", "high", "end")} == {
        "topic": "t",
        "partition": 0,
        "cursor": 999,
        "low": 0,
        "high": 1,
        "end": 5,
    }
    assert records[0]["lost"] is None and records[1]["lost"] == 2
    assert read_offset_resets(path, since=then + timedelta(minutes=1)) == records[1:]


def test_unrouted_messages_keep_the_event_id_they_name() -> None:
    payloads = [
        json.dumps({"event_id": "e2", "tenant": "NOT VALID"}).encode(),
        json.dumps({"event_id": "e3"}).encode(),
        json.dumps({"event_id": "e4", "tenant": 7}).encode(),
        json.dumps({"event_id": 5, "tenant": "NOT VALID"}).encode(),
        b"null",
        b"",
        b"[" * 100_000,
    ]
    routed = route_messages([message(i, p, 0) for i, p in enumerate(payloads)], {})
    assert routed.by_tenant == {}
    assert [(u.reason, u.event_id) for u in routed.unrouted] == [
        (Reason.BAD_TENANT, "e2"),
        (Reason.MISSING_FIELD, "e3"),
        (Reason.WRONG_TYPE, "e4"),
        (Reason.BAD_TENANT, None),
        (Reason.MALFORMED_JSON, None),
        (Reason.MALFORMED_JSON, None),
        (Reason.MALFORMED_JSON, None),
    ]
