"""QuarantineStore at rest (the quarantine and every dead-letter queue): files sealed with
the tenant's key, files of earlier releases still read, and a data subject erased."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from lily_dagster.lib.crypto import FILE_MAGIC
from lily_dagster.lib.envelope import make_rejects, quarantine_id
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.propagation import dead_letter_queues
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.reasons import Reason
from lily_dagster_tests.support.sealed import files_holding, made_up_ciphers

MARKER = "QuarantineCanary41c"
SUBJECT = "jdoe@acme.example"


def envelope(event_id: str, description: str, owners: list[str]) -> str:
    attributes = {"description": description, "owner_users": owners}
    asset = {"type_name": "Table", "qualified_name": f"default/pg/1/T/{event_id}"}
    return json.dumps(
        {"event_id": event_id, "op": "merge", "asset": {**asset, "attributes": attributes}}
    )


def rejects(*entries: tuple[str | None, str, str | bytes]) -> pl.DataFrame:
    """(event_id, detail, payload) entries, rejected for an unknown op."""
    return make_rejects(
        "acme",
        [(e, Reason.UNKNOWN_OP, d, raw, f"webhook:{i}") for i, (e, d, raw) in enumerate(entries)],
    )


def test_files_are_sealed_and_reads_exports_and_counts_show_the_content(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path, made_up_ciphers())
    text = envelope("e1", f"{MARKER} description", [f"{MARKER}@x.org"])
    store.add(
        "acme",
        "b1",
        rejects(("e1", f"op: {MARKER}", text), (None, "bytes", b"\xff" + MARKER.encode())),
    )
    store.mark_replayed("acme", "r1", ["nothing"], datetime.now(UTC))
    assert files_holding(tmp_path, MARKER) == []
    assert all(p.read_bytes().startswith(FILE_MAGIC) for p in tmp_path.rglob("*.parquet"))
    exported = [json.loads(line) for line in store.export("acme")]
    assert [e["raw"] for e in exported if e["event_id"] == "e1"] == [text]
    assert any(e.get("raw_base64") for e in exported)
    assert store.counts_by_reason("acme") == {Reason.UNKNOWN_OP.value: 2}
    assert store.read("acme").height == 2


def test_files_written_before_encryption_still_read(tmp_path: Path) -> None:
    QuarantineStore(tmp_path).add("acme", "old", rejects(("e1", "d", envelope("e1", MARKER, []))))
    QuarantineStore(tmp_path).mark_replayed("acme", "r", ["x"], datetime.now(UTC))
    sealed = QuarantineStore(tmp_path, made_up_ciphers())
    sealed.add("acme", "new", rejects(("e2", "d", envelope("e2", "new", []))))
    assert sorted(sealed.read("acme").get_column("event_id").to_list()) == ["e1", "e2"]


def test_erasure_scrubs_payloads_details_and_ids_idempotently(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path, made_up_ciphers())
    named = envelope("e1", f"from {SUBJECT.upper()}", [SUBJECT, "bob"])
    store.add(
        "acme",
        "b1",
        rejects(("e1", f"owner {SUBJECT} unknown", named), ("e2", "d", envelope("e2", "x", []))),
    )
    store.add("acme", "b2", rejects((f"id-{SUBJECT}", "d", b"\xfe" + SUBJECT.encode())))
    store.add("globex", "g", rejects(("g1", "d", envelope("g1", SUBJECT, []))))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    subject = Subject(SUBJECT)
    assert store.erase_subject("acme", subject, dry_run=True) == 2
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before

    assert store.erase_subject("acme", subject) == 2
    entries = {e["event_id"]: e for e in map(json.loads, store.export("acme"))}
    assert set(entries) == {"e1", "e2", "id-[erased]"}
    attributes = json.loads(entries["e1"]["raw"])["asset"]["attributes"]
    assert attributes == {"description": "from [erased]", "owner_users": ["bob"]}
    assert entries["e1"]["detail"] == "owner [erased] unknown"
    assert entries["id-[erased]"]["raw_base64"] == "/ltlcmFzZWRd"  # b"\xfe[erased]"
    assert SUBJECT.lower() not in " ".join(store.export("acme")).lower()
    assert store.erase_subject("acme", subject) == 0
    assert SUBJECT in store.read("globex").get_column("raw")[0]  # the other tenant untouched


def test_an_erased_entry_keeps_its_replay_state(tmp_path: Path) -> None:
    """Erasure gives a changed payload the id of its new bytes: an entry replayed before
    stays out of the quarantine, and one replayed after leaves it."""
    store = QuarantineStore(tmp_path, made_up_ciphers())
    replayed, waiting = envelope("r", SUBJECT, []), envelope("w", SUBJECT, [])
    store.add("acme", "b", rejects(("r", "d", replayed), ("w", "d", waiting)))
    later = datetime.now(UTC) + timedelta(seconds=1)
    store.mark_replayed("acme", "before", [quarantine_id(replayed)], later)
    assert store.read("acme").get_column("event_id").to_list() == ["w"]

    assert store.erase_subject("acme", Subject(SUBJECT)) == 2
    (entry,) = store.read("acme").to_dicts()
    assert entry["event_id"] == "w" and entry["quarantine_id"] == quarantine_id(entry["raw"])
    store.mark_replayed("acme", "after", [quarantine_id(entry["raw"])], later)
    assert store.read("acme").is_empty()


def test_every_dead_letter_queue_is_a_sealed_store(tmp_path: Path) -> None:
    ciphers = made_up_ciphers()
    change = json.dumps({"seq": 1, "attributes": json.dumps({"owner_users": [SUBJECT, "x"]})})
    for target in ("hook", "slack"):
        QuarantineStore(tmp_path / target, ciphers).add(
            "acme", "batch-k", rejects(("change:1", "refused", change))
        )
    queues = dead_letter_queues(tmp_path, ciphers)
    assert sorted(queues) == ["hook", "slack"]
    assert files_holding(tmp_path, SUBJECT) == []
    assert sum(q.erase_subject("acme", Subject(SUBJECT)) for q in queues.values()) == 2
    (raw,) = queues["hook"].read("acme").get_column("raw").to_list()
    assert json.loads(json.loads(raw)["attributes"]) == {"owner_users": ["x"]}  # still a change row
