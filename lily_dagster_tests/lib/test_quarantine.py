"""QuarantineStore: per-tenant, deduplicated by payload, exported as CONTRACT.md §2 lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from lily_dagster.lib.envelope import REJECT_SCHEMA, decode_envelopes, empty_rejects
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.reasons import Reason


def envelope(event_id: str, **overrides: Any) -> str:
    env: dict[str, Any] = {
        "event_id": event_id,
        "tenant": "acme",
        "source": "dbt",
        "op": "upsert",
        "event_time": "2026-11-23T10:00:00Z",
        "asset": {"type_name": "Table", "qualified_name": f"q/{event_id}", "name": "t"},
    }
    env.update(overrides)
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
        assert list(record) == ["event_id", "reason", "detail", "raw"]
        assert isinstance(record["detail"], str) and record["detail"]
    by_raw = {r["raw"]: r for r in records}
    assert by_raw[BAD_OP]["event_id"] == "e-op"
    assert by_raw[BAD_OP]["reason"] == "unknown_op"
    assert by_raw[NOT_JSON] == {
        "event_id": None,
        "reason": "malformed_json",
        "detail": by_raw[NOT_JSON]["detail"],
        "raw": NOT_JSON,
    }
    assert NOT_UTF8.decode("utf-8", "replace") in by_raw


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
