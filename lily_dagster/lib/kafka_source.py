"""Reading Kafka without a consumer group, and routing messages to tenants.

Tansu (and many brokers) take tens of seconds to join a consumer group, so the sensor
`assign()`s partitions at offsets it keeps in its own cursor, `{topic: {partition: next}}`,
and only advances that cursor after the batch has landed durably.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from lily_dagster.lib.reasons import Reason
from lily_dagster.lib.staging import landed_frame
from lily_dagster.settings import is_tenant

KafkaCursor = dict[str, dict[str, int]]


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


@dataclass
class KafkaBatch:
    messages: list[KafkaMessage]
    start: KafkaCursor  # offsets the batch starts at
    next_cursor: KafkaCursor  # offsets after the batch
    high_watermarks: KafkaCursor
    missing_topics: list[str] = field(default_factory=list)
    drained: bool = False  # every partition was read to its end

    @property
    def lag(self) -> int:
        """Messages left on the broker after this batch (0 once drained)."""
        if self.drained:
            return 0
        return max(1, self._watermark_lag())

    def _watermark_lag(self) -> int:
        # A lower bound where the broker's watermark lags (Tansu), exact on Kafka.
        return sum(
            max(0, high - self.next_cursor.get(t, {}).get(p, 0))
            for t, parts in self.high_watermarks.items()
            for p, high in parts.items()
        )

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
        """Deterministic in the consumed ranges: a replayed tick lands under the same id."""
        digest = hashlib.sha256(json.dumps(self.ranges(), sort_keys=True).encode()).hexdigest()
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
) -> KafkaBatch:
    """Read at most `max_events` messages from where `cursor` stands, within `max_seconds`."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

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
        assignments = []
        for topic in topics:
            topic_md = metadata.topics.get(topic)
            if topic_md is None or topic_md.error is not None:
                missing.append(topic)
                continue
            for part in sorted(topic_md.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=5)
                begin = max(cursor.get(topic, {}).get(str(part), low), low)
                start.setdefault(topic, {})[str(part)] = begin
                highs.setdefault(topic, {})[str(part)] = high
                # Every partition is read up to its end-of-partition event rather than to the
                # high watermark: some brokers (Tansu) report a watermark that lags behind
                # multi-record batches.
                assignments.append(TopicPartition(topic, part, begin))
        next_cursor: KafkaCursor = {t: dict(p) for t, p in start.items()}
        messages: list[KafkaMessage] = []
        if assignments:
            consumer.assign(assignments)
            # The bound is on reading, not on connecting and looking up offsets: on a remote
            # cluster with many partitions those alone could eat a short bound every tick.
            deadline = time.monotonic() + max_seconds
            open_parts = {(tp.topic, tp.partition) for tp in assignments}
            while open_parts and len(messages) < max_events and time.monotonic() < deadline:
                for msg in consumer.consume(min(10_000, max_events - len(messages)), timeout=0.5):
                    key = (msg.topic(), msg.partition())
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            open_parts.discard(key)
                            continue
                        raise KafkaUnavailableError(f"Kafka error on {key}: {err}")
                    message = KafkaMessage(
                        str(msg.topic()),
                        int(msg.partition() or 0),
                        int(msg.offset() or 0),
                        msg.value() or b"",
                        msg.timestamp()[1],
                    )
                    messages.append(message)
                    next_cursor[message.topic][str(message.partition)] = message.offset + 1
            drained = not open_parts
        else:
            drained = True
        return KafkaBatch(messages, start, next_cursor, highs, missing, drained)
    finally:
        consumer.close()


@dataclass(frozen=True)
class RoutedMessages:
    by_tenant: dict[str, list[KafkaMessage]]
    # messages that name no usable tenant: (message, reason, detail)
    unrouted: list[tuple[KafkaMessage, Reason, str]]


def route_messages(messages: list[KafkaMessage], topic_bindings: dict[str, str]) -> RoutedMessages:
    """Which tenant each message belongs to: its topic's binding, else its `tenant` field.

    Only routing happens here; everything else about the payload is validated later,
    by the tenant's `validated_events` asset.
    """
    by_tenant: dict[str, list[KafkaMessage]] = {}
    unrouted: list[tuple[KafkaMessage, Reason, str]] = []
    for msg in messages:
        bound = topic_bindings.get(msg.topic)
        if bound is not None:
            by_tenant.setdefault(bound, []).append(msg)
            continue
        try:
            body = json.loads(msg.value)
        except ValueError as exc:
            unrouted.append((msg, Reason.MALFORMED_JSON, f"body: {exc}"))
            continue
        tenant = body.get("tenant") if isinstance(body, dict) else None
        if not isinstance(body, dict):
            unrouted.append((msg, Reason.MALFORMED_JSON, "body: Input should be an object"))
        elif tenant is None:
            unrouted.append((msg, Reason.MISSING_FIELD, "tenant: Field required"))
        elif not isinstance(tenant, str):
            unrouted.append((msg, Reason.WRONG_TYPE, "tenant: Input should be a valid string"))
        elif not is_tenant(tenant):
            unrouted.append(
                (msg, Reason.BAD_TENANT, f"tenant {tenant[:80]!r} is not a valid tenant")
            )
        else:
            by_tenant.setdefault(tenant, []).append(msg)
    return RoutedMessages(by_tenant, unrouted)


def kafka_landed_frame(messages: list[KafkaMessage]) -> pl.DataFrame:
    return landed_frame(
        [m.origin for m in messages],
        [m.value for m in messages],
        [datetime.fromtimestamp(m.timestamp_ms / 1000, UTC) for m in messages],
    )
