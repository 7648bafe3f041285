"""QuarantineStore: per-tenant, deduplicated by payload, exported as CONTRACT.md §2 lines."""

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
