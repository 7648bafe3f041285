"""Reading Kafka without a consumer group, and routing messages to tenants.

Tansu (and many brokers) take tens of seconds to join a consumer group, so the sensor
`assign()`s partitions at offsets it keeps in its own cursor, `{topic: {partition: next}}`,
and only advances that cursor after the batch has landed durably.

A cursor offset the broker no longer has is a loss, never skipped silently: beyond the
partition's end (a broker that lost its log, a topic deleted and created again) or below
its start (retention deleted messages never read). `read_batch` reports each such
partition (`OffsetReset`) and reads it on from its low watermark, its new start; the
sensor logs and records them (`record_offset_resets`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import polars as pl

from lily_dagster.lib.payload_tenant import payload_tenant
from lily_dagster.lib.reasons import Reason
from lily_dagster.lib.staging import landed_frame

if TYPE_CHECKING:
    from confluent_kafka import Consumer, TopicPartition

KafkaCursor = dict[str, dict[str, int]]

# How long a read may take to find out whether a cursor beyond the broker's high watermark is
# beyond the partition's end. Tansu reports as high watermark the base offset of the
# partition's last record batch + 1, so a cursor beyond it is the usual case there: reading
# that last batch shows the cursor's record at once. Only a cursor really beyond the end waits
# for the end-of-partition event (~1 s on Tansu).
PROBE_SECONDS = 3.0
# How much longer than its bound a caught-up read waits for the end-of-partition answer.
EOF_GRACE_SECONDS = 2.0


class KafkaUnavailableError(RuntimeError):
    """The broker could not be reached or answered with an error; nothing was consumed."""


def parse_cursor(raw: str | None) -> KafkaCursor:
    if not raw:
        return {}
    data = json.loads(raw)
    return {t: {str(p): int(o) for p, o in parts.items()} for t, parts in data.items()}


def dump_cursor(cursor: KafkaCursor) -> str:
    return json.dumps(cursor, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class KafkaMessage:
    topic: str
    partition: int
    offset: int
    value: bytes
    timestamp_ms: int

    @property
    def origin(self) -> str:
        return f"kafka:{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class OffsetReset:
    """A partition whose cursor offset the broker no longer has; reading went on from `low`."""

    topic: str
    partition: int
    cursor: int  # where the cursor stood
    low: int  # the partition's low watermark: its start, where reading goes on
    high: int  # its high watermark as the broker reported it
    # past_end: the cursor is beyond the partition's end (`end`, as read): the broker lost
    # its log or the topic was created again; how many messages were lost is unknown.
    # before_start: messages [cursor, low) were deleted (retention) before they were read.
    kind: Literal["past_end", "before_start"]
    end: int | None = None
    lost: int | None = None  # messages skipped; None: unknown

    def describe(self) -> str:
        where = f"{self.topic}/{self.partition}"
        if self.kind == "past_end":
            return (
                f"{where}: cursor {self.cursor} is beyond the partition's end {self.end} "
                f"(watermarks {self.low}..{self.high}; the broker lost its log or the topic "
                f"was created again; messages lost: unknown); reading from {self.low}"
            )
        return (
            f"{where}: cursor {self.cursor} is below the low watermark {self.low} (high "
            f"{self.high}); {self.lost} messages were deleted unread; reading from {self.low}"
        )


@dataclass
class KafkaBatch:
    messages: list[KafkaMessage]
    start: KafkaCursor  # offsets the batch starts at
    next_cursor: KafkaCursor  # offsets after the batch
    high_watermarks: KafkaCursor
    missing_topics: list[str] = field(default_factory=list)
    drained: bool = False  # every partition was read to its end
    resets: list[OffsetReset] = field(default_factory=list)  # cursor offsets no longer there

    @property
    def lag(self) -> int:
        """Messages left on the broker after this batch (0 once drained)."""
        if self.drained:
            return 0
        return max(1, self.watermark_lag())

    def lag_by_topic(self) -> dict[str, int]:
        """Messages left per topic after this batch (0 once drained; where the broker's
        watermarks trail its log, as Tansu's do, a lower bound)."""
        behind = self._behind_by_topic()
        return dict.fromkeys(behind, 0) if self.drained else behind

    def watermark_lag(self) -> int:
        # A lower bound where the broker's watermark lags (Tansu), exact on Kafka.
        return sum(self._behind_by_topic().values())

    def _behind_by_topic(self) -> dict[str, int]:
        """Per topic: the high watermarks less the offsets after this batch."""
        return {
            t: sum(
                max(0, high - self.next_cursor.get(t, {}).get(p, 0))
                for p, high in self.high_watermarks.get(t, {}).items()
            )
            for t in sorted({*self.high_watermarks, *self.next_cursor})
        }

    def ranges(self) -> dict[str, list[int]]:
        """{topic/partition: [first, last+1]} of what this batch consumed."""
        out: dict[str, list[int]] = {}
        for topic, parts in self.next_cursor.items():
            for part, end in parts.items():
                begin = self.start.get(topic, {}).get(part, end)
                if end > begin:
                    out[f"{topic}/{part}"] = [begin, end]
        return out

    def batch_id(self) -> str:
        """Deterministic in what was consumed: a replayed tick lands under the same id. Each
        range's first record (its timestamp and a hash of its value) is part of it: after an
        offset reset the same offsets hold other records, whose batch must not pass for one
        the hub has already applied (landing an applied batch is a no-op)."""
        firsts: dict[str, list[Any]] = {}
        for m in self.messages:
            key = f"{m.topic}/{m.partition}"
            if key not in firsts:
                firsts[key] = [m.timestamp_ms, hashlib.sha256(m.value).hexdigest()[:16]]
        ranges = {key: [*span, *firsts.get(key, [])] for key, span in self.ranges().items()}
        digest = hashlib.sha256(json.dumps(ranges, sort_keys=True).encode()).hexdigest()
        return f"kafka-{digest[:20]}"


def kafka_config(bootstrap: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        # Required by librdkafka but never joined: partitions are assign()ed.
        "group.id": "lily-sensor-unjoined",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "socket.timeout.ms": 5000,
        "socket.connection.setup.timeout.ms": 5000,
        "message.max.bytes": 10_485_760,
        "fetch.max.bytes": 52_428_800,
        "log_level": 2,
    }
    config.update(extra or {})
    return config


def read_batch(
    bootstrap: str,
    topics: Iterable[str],
    cursor: KafkaCursor,
    max_events: int,
    max_seconds: float = 20.0,
    extra_config: dict[str, Any] | None = None,
    probe_seconds: float = PROBE_SECONDS,
) -> KafkaBatch:
    """Read at most `max_events` messages from where `cursor` stands, within `max_seconds`.

    A partition whose cursor offset is no longer on the broker (beyond its end, or below its
    low watermark) is read from its low watermark and reported in `resets`. Watched topics
    missing from the broker keep their cursor offsets in `next_cursor`, so a topic created
    again is checked against them."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    config = kafka_config(bootstrap, extra_config)
    # Connection errors surface through list_topics/consume below; the callback only keeps
    # librdkafka from logging each retry on its own.
    config["error_cb"] = lambda err: None
    consumer = Consumer(config)
    try:
        try:
            metadata = consumer.list_topics(timeout=5)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"Kafka at {bootstrap} unreachable: {exc}") from None
        start: KafkaCursor = {}
        highs: KafkaCursor = {}
        missing: list[str] = []
        resets: list[OffsetReset] = []
        watermarks: dict[tuple[str, int], tuple[int, int]] = {}
        beyond_high: dict[tuple[str, int], int] = {}  # cursor offsets past the high watermark
        for topic in topics:
            topic_md = metadata.topics.get(topic)
            if topic_md is None or topic_md.error is not None:
                missing.append(topic)
                continue
            for part in sorted(topic_md.partitions):
                low, high = _watermarks(consumer, topic, part)
                watermarks[(topic, part)] = (low, high)
                at = cursor.get(topic, {}).get(str(part))
                begin = low if at is None else at
                if at is not None and at < low:
                    resets.append(
                        OffsetReset(topic, part, at, low, high, "before_start", lost=low - at)
                    )
                    begin = low
                elif at is not None and at > high:
                    beyond_high[(topic, part)] = at
                start.setdefault(topic, {})[str(part)] = begin
                highs.setdefault(topic, {})[str(part)] = high
        if beyond_high:
            ends = _ends_before_cursor(consumer, beyond_high, watermarks, probe_seconds)
            for (topic, part), end in sorted(ends.items()):
                low, high = watermarks[(topic, part)]
                at = beyond_high[(topic, part)]
                resets.append(OffsetReset(topic, part, at, low, high, "past_end", end=end))
                start[topic][str(part)] = low
        # Every partition is read up to its end-of-partition event rather than to the high
        # watermark: some brokers (Tansu) report a watermark that lags behind multi-record
        # batches.
        assignments = [
            TopicPartition(topic, int(part), begin)
            for topic, parts in start.items()
            for part, begin in parts.items()
        ]
        next_cursor: KafkaCursor = {t: dict(p) for t, p in start.items()}
        for topic in topics:  # offsets of topics or partitions the broker does not list now
            for part, at in cursor.get(topic, {}).items():
                next_cursor.setdefault(topic, {}).setdefault(part, at)
        messages: list[KafkaMessage] = []
        drained = True
        if assignments:
            consumer.assign(assignments)
            messages, drained = _consume(
                consumer, assignments, next_cursor, max_events, max_seconds
            )
        return KafkaBatch(messages, start, next_cursor, highs, missing, drained, resets)
    finally:
        consumer.close()


def _consume(
    consumer: Consumer,
    assignments: list[TopicPartition],
    next_cursor: KafkaCursor,
    max_events: int,
    max_seconds: float,
) -> tuple[list[KafkaMessage], bool]:
    """The assigned partitions' messages from `next_cursor` on (which it moves), and whether
    every partition was read to its end.

    The bound is on reading, not on connecting and looking up offsets: on a remote cluster
    with many partitions those alone could eat a short bound every tick. Past it, a read still
    receiving messages stops (the rest is the next tick's); a read that received nothing is
    only waiting for the broker's end-of-partition answer, late on a loaded machine, and waits
    up to EOF_GRACE_SECONDS more: otherwise a batch that took everything reports lag 1."""
    from confluent_kafka import KafkaError

    deadline = time.monotonic() + max_seconds
    open_parts = {(tp.topic, tp.partition) for tp in assignments}
    messages: list[KafkaMessage] = []
    while open_parts and len(messages) < max_events:
        received = 0
        for msg in consumer.consume(min(10_000, max_events - len(messages)), timeout=0.5):
            key = (msg.topic(), msg.partition())
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    open_parts.discard(key)
                    continue
                raise KafkaUnavailableError(f"Kafka error on {key}: {err}")
            received += 1
            message = KafkaMessage(
                str(msg.topic()),
                int(msg.partition() or 0),
                int(msg.offset() or 0),
                msg.value() or b"",
                msg.timestamp()[1],
            )
            if message.offset < next_cursor[message.topic][str(message.partition)]:
                continue  # fetched for the probe's assignment, before the reset
            messages.append(message)
            next_cursor[message.topic][str(message.partition)] = message.offset + 1
        now = time.monotonic()
        if now >= deadline and (received or now >= deadline + EOF_GRACE_SECONDS):
            break
    return messages, not open_parts


def _watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """(low, high) watermark offsets of a partition, as the broker reports them."""
    from confluent_kafka import TopicPartition

    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
    return int(low), int(high)


def _ends_before_cursor(
    consumer: Consumer,
    cursors: dict[tuple[str, int], int],
    watermarks: dict[tuple[str, int], tuple[int, int]],
    seconds: float,
) -> dict[tuple[str, int], int]:
    """Of partitions whose cursor offset is beyond the reported high watermark, those whose
    end really is before it, with that end.

    Each is read from its last record the broker reports (high - 1; on Tansu the base offset
    of its last record batch) until a record at cursor - 1 or later shows the cursor is in
    the log, or the end-of-partition event shows where the log ends. A partition still
    undecided after `seconds` is past its end if records were read, none of them near the
    cursor (the watermark's batch ended before it), and left alone if nothing came at all (a
    stalled broker: the next read tries again)."""
    from confluent_kafka import KafkaError, TopicPartition

    firsts = {key: max(watermarks[key][0], watermarks[key][1] - 1) for key in cursors}
    consumer.assign([TopicPartition(t, p, first) for (t, p), first in firsts.items()])
    undecided = set(cursors)
    ends = dict(firsts)  # the end as read so far
    read: set[tuple[str, int]] = set()
    past: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + seconds
    try:
        while undecided and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.05):
                key = (str(msg.topic()), int(msg.partition() or 0))
                if key not in undecided:
                    continue
                err = msg.error()
                offset = int(msg.offset() or 0)
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaUnavailableError(f"Kafka error on {key}: {err}")
                    undecided.discard(key)
                    end = max(ends[key], offset)
                    if end < cursors[key]:
                        past[key] = end
                    continue
                read.add(key)
                ends[key] = max(ends[key], offset + 1)
                if ends[key] >= cursors[key]:
                    undecided.discard(key)  # the cursor is in the log
        past.update({key: ends[key] for key in undecided & read})
    finally:
        consumer.unassign()
    return past


def offset_resets_path(home: Path) -> Path:
    """Where every offset reset is recorded, one JSON object a line."""
    return home / "kafka" / "offset_resets.jsonl"


def record_offset_resets(path: Path, resets: Iterable[OffsetReset], at: datetime) -> None:
    """Append `resets` to the JSON Lines file `path`, durably (fsync):
    {"time", "topic", "partition", "kind", "cursor", "low", "high", "end", "lost"}.
    A tick that dies before its cursor is saved records its resets again."""
    lines = [
        json.dumps({"time": at.astimezone(UTC).isoformat(), **asdict(r)}, sort_keys=True) + "\n"
        for r in resets
    ]
    if not lines:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as out:
        if out.tell() and not _ends_a_line(path):
            lines.insert(0, "\n")  # after a line a crash cut short
        out.write("".join(lines))
        out.flush()
        os.fsync(out.fileno())


def _ends_a_line(path: Path) -> bool:
    with path.open("rb") as data:
        data.seek(-1, os.SEEK_END)
        return data.read(1) == b"\n"


def read_offset_resets(path: Path, since: datetime | None = None) -> list[dict[str, Any]]:
    """The recorded resets (those at or after `since`), oldest first; a line left half
    written by a crash is skipped."""
    if not path.is_file():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            wanted = since is None or datetime.fromisoformat(record["time"]) >= since
        except (ValueError, KeyError, TypeError):
            continue
        if wanted:
            out.append(record)
    return out


class Unrouted(NamedTuple):
    """A message that names no usable tenant, for the `_unrouted` quarantine."""

    message: KafkaMessage
    reason: Reason
    detail: str
    event_id: str | None  # the `event_id` it names, when it is a JSON object naming one


@dataclass(frozen=True)
class RoutedMessages:
    by_tenant: dict[str, list[KafkaMessage]]
    unrouted: list[Unrouted]  # messages that name no usable tenant


def route_messages(messages: list[KafkaMessage], topic_bindings: dict[str, str]) -> RoutedMessages:
    """Which tenant each message belongs to: its topic's binding, else its `tenant` field.

    Only routing happens here; everything else about the payload is validated later,
    by the tenant's `validated_events` asset.
    """
    by_tenant: dict[str, list[KafkaMessage]] = {}
    unrouted: list[Unrouted] = []
    for msg in messages:
        bound = topic_bindings.get(msg.topic)
        if bound is not None:
            by_tenant.setdefault(bound, []).append(msg)
            continue
        named = payload_tenant(msg.value)
        if named.tenant is not None:
            by_tenant.setdefault(named.tenant, []).append(msg)
        else:
            assert named.reason is not None
            unrouted.append(Unrouted(msg, named.reason, named.detail, named.event_id))
    return RoutedMessages(by_tenant, unrouted)


def kafka_landed_frame(messages: list[KafkaMessage]) -> pl.DataFrame:
    return landed_frame(
        [m.origin for m in messages],
        [m.value for m in messages],
        [datetime.fromtimestamp(m.timestamp_ms / 1000, UTC) for m in messages],
    )
