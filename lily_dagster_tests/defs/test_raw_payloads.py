"""Through a real broker, the Kafka sensor and the ingest runs: payloads that are not UTF-8
are quarantined byte for byte (exported as `raw_base64`, replayed as the same bytes), and
events holding NaN or Infinity (not JSON) are quarantined as malformed_json, never applied."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from dagster import instance_for_test

from lily_dagster.cli import main
from lily_dagster.definitions import defs as load_definitions
from lily_dagster.lib.broker import ensure_topics, produce
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.settings import UNROUTED_TENANT
from lily_dagster_tests.defs.test_ingest_pipeline import drain, hub_state
from lily_dagster_tests.support import envelopes
from lily_dagster_tests.support.sealed import ciphers_at

defs = load_definitions()

NOT_UTF8 = [b'\xff\xfe{"a":1}', b'\xfe\xff{"a":1}']  # one text once U+FFFD replaces bad bytes


def envelope(event_id: str, name: str, **attributes: Any) -> dict[str, Any]:
    qualified_name = f"{envelopes.SCHEMA}/{name}"
    attributes = {"description": "d", **attributes}
    return envelopes.envelope(qualified_name, event_id=event_id, attributes=attributes)


def exported(tenant: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["quarantine", "export", "--tenant", tenant]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def payload_of(record: dict[str, Any]) -> bytes:
    if record["raw"] is None:
        return base64.b64decode(record["raw_base64"])
    assert "raw_base64" not in record
    return str(record["raw"]).encode()


def test_kafka_payloads_are_quarantined_byte_for_byte_and_nan_never_reaches_the_hub(
    lily_home: Path,
    kafka_bootstrap: str,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `topic` is bound to acme (its messages are acme's whatever they hold); `shared` routes
    # by each event's tenant field, and quarantines what names none under _unrouted.
    shared = f"{topic}.shared"
    ensure_topics(kafka_bootstrap, [shared])
    monkeypatch.setenv("LILY_KAFKA_TOPICS", f"{topic},{shared}")
    config = tmp_path / "lily.yaml"
    config.write_text(f"tenants:\n  - name: acme\n    kafka_topics: [{topic}]\n")
    monkeypatch.setenv("LILY_CONFIG", str(config))

    good = envelope("good-1", "GOOD")
    latin1 = json.dumps(envelope("latin-1", "CAF\u00c9"), ensure_ascii=False).encode("latin-1")
    nan_texts = [
        json.dumps(envelope(f"nan-{i}", f"NAN{i}", score="__T__")).replace('"__T__"', token)
        for i, token in enumerate(["NaN", "Infinity", "-Infinity"])
    ]
    bound = [json.dumps(good).encode(), *NOT_UTF8, latin1, nan_texts[0].encode()]
    produce(kafka_bootstrap, topic, [(None, v) for v in bound])
    produce(
        kafka_bootstrap,
        shared,
        [(None, b"\x80" + NOT_UTF8[0]), *[(None, t.encode()) for t in nan_texts[1:]]],
    )
    with instance_for_test() as instance:
        drain(instance, None)

        # Only the valid event reached the hub; NaN and Infinity never did.
        assert list(hub_state(lily_home, "acme")) == [good["asset"]["qualified_name"]]
        records = exported("acme", capsys)
        assert sorted(payload_of(r) for r in records) == sorted(
            [*NOT_UTF8, latin1, *(t.encode() for t in nan_texts)]
        )
        by_payload = {payload_of(r): r for r in records}
        for value in [*NOT_UTF8, latin1]:
            record = by_payload[value]
            assert record["raw"] is None and record["reason"] == "malformed_json"
            assert record["detail"].startswith("not UTF-8")
        for i, text in enumerate(nan_texts):
            record = by_payload[text.encode()]
            assert record["raw"] == text  # valid UTF-8: kept as text
            assert (record["event_id"], record["reason"]) == (f"nan-{i}", "malformed_json")
            assert "asset.attributes.score: Invalid JSON:" in record["detail"]
        # The sensor's own quarantine (no tenant named) keeps the bytes too.
        (unrouted,) = exported(UNROUTED_TENANT, capsys)
        assert payload_of(unrouted) == b"\x80" + NOT_UTF8[0]
        assert unrouted["reason"] == "malformed_json"

        # A replay lands the exact bytes again; they are refused again, still once each.
        before = QuarantineStore(lily_home / "quarantine", ciphers_at(lily_home)).read("acme")
        result = defs.resolve_job_def("quarantine_replay_job").execute_in_process(
            run_config={"ops": {"landed_events": {"config": {"replay": True}}}},
            partition_key="acme",
            instance=instance,
        )
        assert result.success
    (replayed,) = (lily_home / "staging" / "acme").glob("*/replay-*.parquet")
    landed = ciphers_at(lily_home)("acme").read_parquet(replayed)  # sealed with acme's key
    assert sorted(landed.get_column("value").to_list()) == sorted(payload_of(r) for r in records)
    after = QuarantineStore(lily_home / "quarantine", ciphers_at(lily_home)).read("acme")
    assert sorted(after.get_column("quarantine_id")) == sorted(before.get_column("quarantine_id"))
    assert after.get_column("quarantined_at").min() > before.get_column("quarantined_at").max()
    assert sorted(payload_of(r) for r in exported("acme", capsys)) == sorted(
        payload_of(r) for r in records
    )
    assert list(hub_state(lily_home, "acme")) == [good["asset"]["qualified_name"]]
