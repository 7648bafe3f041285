"""QuarantineStore: per-tenant, deduplicated (per Kafka message, else by payload), exported
as CONTRACT.md §2 lines."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from lily_dagster.lib.envelope import REJECT_SCHEMA, decode_envelopes, empty_rejects
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.reasons import Reason
from lily_dagster_tests.support import envelopes


def envelope(event_id: str, **overrides: Any) -> str:
    env = envelopes.envelope(
        f"q/{event_id}", event_id=event_id, source="dbt", name="t", **overrides
    )
    return json.dumps(env)


BAD_OP = envelope("e-op", op="merge")
BAD_TIME = envelope("e-time", event_time="2026-11-23T10:00:00")
NOT_JSON = "this is not json"
NOT_UTF8 = b'{"event_id": "\xff"}'


def rejects_of(payloads: list[bytes | str], tenant: str = "acme") -> pl.DataFrame:
    result = decode_envelopes(
        payloads, [f"o{i}" for i in range(len(payloads))], tenant=tenant, max_event_bytes=1 << 20
    )
    assert result.events.is_empty()
    return result.rejects


def test_add_and_read(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    kept = store.add("acme", "batch-1.decode", rejects_of([BAD_OP, NOT_JSON, NOT_UTF8]))
    assert kept == 3
    frame = store.read("acme")
    assert frame.schema == pl.Schema(REJECT_SCHEMA)
    assert sorted(frame.select("event_id", "reason").rows(), key=str) == sorted(
        [("e-op", Reason.UNKNOWN_OP), (None, Reason.MALFORMED_JSON), (None, Reason.MALFORMED_JSON)],
        key=str,
    )
    assert set(frame["tenant"]) == {"acme"}
    assert not list(tmp_path.rglob("*.tmp"))


def test_add_nothing(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    assert store.add("acme", "b", empty_rejects()) == 0
    assert store.read("acme").is_empty()
    assert store.read("never-seen").schema == pl.Schema(REJECT_SCHEMA)
    assert list(store.export("acme")) == []
    assert store.counts_by_reason("acme") == {}


def test_read_dedupes_by_quarantine_id_across_files(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    store.add("acme", "batch-1.decode", rejects_of([BAD_OP, NOT_JSON]))
    # the same payloads again (a replayed batch under another name) plus one new
    store.add("acme", "batch-2.decode", rejects_of([NOT_JSON, BAD_TIME, BAD_OP, BAD_OP]))
    frame = store.read("acme")
    assert frame.height == 3
    assert frame["quarantine_id"].n_unique() == 3
    assert sorted(frame["raw"].to_list()) == sorted([BAD_OP, NOT_JSON, BAD_TIME])
    assert store.counts_by_reason("acme") == {
        Reason.BAD_EVENT_TIME: 1,
        Reason.MALFORMED_JSON: 1,
        Reason.UNKNOWN_OP: 1,
    }


def test_same_name_overwrites_its_own_file(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    store.add("acme", "batch-1.decode", rejects_of([BAD_OP, NOT_JSON]))
    store.add("acme", "batch-1.decode", rejects_of([BAD_OP, NOT_JSON]))
    assert store.read("acme").height == 2
    assert len(list((tmp_path / "acme").glob("*.parquet"))) == 1


def test_export_lines(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    store.add("acme", "b1", rejects_of([BAD_OP, NOT_UTF8, NOT_JSON]))
    store.add("acme", "b2", rejects_of([BAD_OP]))
    lines = list(store.export("acme"))
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    for line, record in zip(lines, records, strict=True):
        assert "\n" not in line
        assert isinstance(record["detail"], str) and record["detail"]
    by_raw = {r["raw"]: r for r in records if r["raw"] is not None}
    assert all(list(r) == ["event_id", "reason", "detail", "raw"] for r in by_raw.values())
    assert by_raw[BAD_OP]["event_id"] == "e-op"
    assert by_raw[BAD_OP]["reason"] == "unknown_op"
    assert by_raw[NOT_JSON] == {
        "event_id": None,
        "reason": "malformed_json",
        "detail": by_raw[NOT_JSON]["detail"],
        "raw": NOT_JSON,
    }
    # not UTF-8: no text, the exact bytes in base64
    (not_text,) = [r for r in records if r["raw"] is None]
    assert list(not_text) == ["event_id", "reason", "detail", "raw", "raw_base64"]
    assert base64.b64decode(not_text["raw_base64"]) == NOT_UTF8
    assert not_text["reason"] == "malformed_json"


def test_payloads_are_kept_byte_for_byte(tmp_path: Path) -> None:
    latin1 = json.dumps({"event_id": "caf\u00e9", "op": "x"}, ensure_ascii=False).encode("latin-1")
    payloads: list[bytes | str] = [b'\xff\xfe{"a":1}', b'\xfe\xff{"a":1}', latin1, BAD_OP.encode()]
    store = QuarantineStore(tmp_path)
    store.add("acme", "b1", rejects_of(payloads))
    store.add("acme", "b2", rejects_of(payloads))  # the same payloads again: still one each
    frame = store.read("acme")
    # distinct bytes stay distinct (they were one row once replaced by U+FFFD)
    assert frame.height == 4
    records = [json.loads(line) for line in store.export("acme")]
    exported = [
        base64.b64decode(r["raw_base64"]) if r["raw"] is None else r["raw"].encode()
        for r in records
    ]
    assert sorted(exported) == sorted(p for p in payloads if isinstance(p, bytes))
    assert [r for r in records if r["raw"] is not None] == [
        {"event_id": "e-op", "reason": "unknown_op", "detail": "op: Input should be 'upsert' or "
         "'delete'", "raw": BAD_OP}
    ]  # fmt: skip


def test_files_of_earlier_releases_read_as_text(tmp_path: Path) -> None:
    """A quarantine file without raw_bytes (releases before it) reads and exports as text."""
    old = {c: t for c, t in REJECT_SCHEMA.items() if c != "raw_bytes"}
    row = ["q1", "acme", None, "malformed_json", "not UTF-8", "\ufffd{", "kafka:t/0/1"]
    frame = pl.DataFrame([[*row, datetime(2026, 1, 1, tzinfo=UTC)]], schema=old, orient="row")
    (tmp_path / "acme").mkdir()
    frame.write_parquet(tmp_path / "acme" / "old.parquet")
    store = QuarantineStore(tmp_path)
    store.add("acme", "new", rejects_of([NOT_UTF8]))
    read = store.read("acme")
    assert read.schema == pl.Schema(REJECT_SCHEMA)
    assert sorted(read["raw_bytes"].to_list(), key=str) == [None, NOT_UTF8]
    lines = sorted(store.export("acme"))
    assert {json.loads(line)["raw"] for line in lines} == {"\ufffd{", None}
    assert store.counts_by_reason("acme") == {"malformed_json": 2}


def test_counts_by_reason(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    store.add(
        "acme",
        "b1",
        rejects_of([envelope(f"x{i}", op="merge") for i in range(4)] + [NOT_JSON, BAD_TIME]),
    )
    assert store.counts_by_reason("acme") == {
        "bad_event_time": 1,
        "malformed_json": 1,
        "unknown_op": 4,
    }


def test_tenants_are_isolated(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    store.add("acme", "b1", rejects_of([BAD_OP, NOT_JSON], tenant="acme"))
    # the same payload quarantined for another tenant is that tenant's record, too
    store.add("globex", "b1", rejects_of([BAD_OP, BAD_TIME], tenant="globex"))
    assert store.tenants() == ["acme", "globex"]
    assert sorted(store.read("acme")["raw"]) == sorted([BAD_OP, NOT_JSON])
    assert sorted(store.read("globex")["raw"]) == sorted([BAD_OP, BAD_TIME])
    assert set(store.read("globex")["tenant"]) == {"globex"}
    assert store.counts_by_reason("acme") == {"malformed_json": 1, "unknown_op": 1}
    assert store.counts_by_reason("globex") == {"bad_event_time": 1, "unknown_op": 1}
    assert store.read("initech").is_empty()


def test_add_files_rejects_under_the_tenant_it_is_given(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    unrouted = rejects_of([NOT_JSON], tenant=None)  # e.g. Kafka messages naming no tenant
    assert unrouted["tenant"].to_list() == [None]
    store.add("_unrouted", "b1", unrouted)
    assert store.read("_unrouted")["tenant"].to_list() == ["_unrouted"]


# --- one entry per Kafka message ---------------------------------------------------------------


def kafka_rejects(
    payloads: list[bytes | str], offsets: list[int], tenant: str = "acme"
) -> pl.DataFrame:
    origins = [f"kafka:lily.metadata.events/0/{o}" for o in offsets]
    return decode_envelopes(payloads, origins, tenant=tenant, max_event_bytes=1 << 20).rejects


def test_identical_kafka_messages_are_one_entry_each_and_landing_them_again_adds_none(
    tmp_path: Path,
) -> None:
    store = QuarantineStore(tmp_path)
    same = [b"", b"", b"null", b"null", BAD_OP.encode(), BAD_OP.encode()]
    store.add("acme", "kafka-a", kafka_rejects(same, [0, 1, 2, 3, 4, 5]))
    assert store.read("acme").height == 6
    assert store.counts_by_reason("acme") == {"malformed_json": 4, "unknown_op": 2}
    # a tick replayed after a crash reads the same messages into another batch
    store.add("acme", "kafka-b", kafka_rejects(same[2:], [2, 3, 4, 5]))
    assert store.read("acme").height == 6
    exported = [json.loads(line) for line in store.export("acme")]
    assert sorted(r["raw"] for r in exported) == sorted(p.decode() for p in same)


def test_other_sources_keep_one_entry_per_payload(tmp_path: Path) -> None:
    """A webhook request sent again, the same event accepted twice: no second entry."""
    store = QuarantineStore(tmp_path)
    posted = decode_envelopes(
        [BAD_OP, BAD_OP], ["webhook:tenants-api:0", "webhook:#7"], tenant="acme", max_event_bytes=99
    )
    store.add("acme", "webhook-1", posted.rejects)
    store.add("acme", "webhook-2", posted.rejects)
    assert store.read("acme").height == 1


def test_malformed_payloads_keep_the_event_id_they_name(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    bad = json.dumps({"event_id": "e1", "tenant": "acme", "op": 7})
    store.add("acme", "b1", kafka_rejects([bad], [0]))
    (record,) = [json.loads(line) for line in store.export("acme")]
    assert (record["event_id"], record["reason"]) == ("e1", "missing_field")


def test_replaying_a_kafka_message_clears_that_message_only(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path)
    store.add("acme", "b1", kafka_rejects([b"null", b"null", BAD_OP], [0, 1, 2]))
    at = datetime.now(UTC)
    entries = store.read("acme").filter(pl.col("origin").str.ends_with("/0"))
    ids = entries["quarantine_id"].to_list()
    store.mark_replayed("acme", "r1", ids, at, ["kafka:lily.metadata.events/0/0"])
    assert sorted(store.read("acme")["origin"]) == [
        "kafka:lily.metadata.events/0/1",
        "kafka:lily.metadata.events/0/2",
    ]
    # rejected again by that replay (its origin carries #replay): the same entry is back
    store.add(
        "acme",
        "r1.validation",
        kafka_rejects([b"null"], [0]).with_columns(pl.col("origin") + "#replay"),
    )
    assert store.read("acme").height == 3
    # a replay that names payloads only (earlier releases, dead-letter queues): all of them
    store.mark_replayed("acme", "r2", ids, datetime.now(UTC))
    assert store.read("acme")["origin"].to_list() == ["kafka:lily.metadata.events/0/2"]


def test_entries_of_earlier_releases_read_per_kafka_message_too(tmp_path: Path) -> None:
    """Old files (ids of the payload alone, origins as now) merge with new entries of the
    same message; an old replay record (no message column) clears every entry of its payload."""
    old = kafka_rejects([b"null", b"null"], [0, 1]).with_columns(
        pl.datetime(2020, 1, 1, time_zone="UTC").alias("quarantined_at")
    )
    (tmp_path / "acme" / "_replayed").mkdir(parents=True)
    old.drop("raw_bytes").write_parquet(tmp_path / "acme" / "old.parquet")
    store = QuarantineStore(tmp_path)
    assert store.read("acme").height == 2
    store.add("acme", "new", kafka_rejects([b"null", b"null"], [1, 2]))
    assert sorted(store.read("acme")["origin"].to_list()) == [
        f"kafka:lily.metadata.events/0/{o}" for o in (0, 1, 2)
    ]
    pl.DataFrame(
        {"quarantine_id": [old["quarantine_id"][0]], "replayed_at": [datetime.now(UTC)]},
        schema={"quarantine_id": pl.String(), "replayed_at": pl.Datetime("us", "UTC")},
    ).write_parquet(tmp_path / "acme" / "_replayed" / "old.parquet")
    assert store.read("acme").is_empty()
