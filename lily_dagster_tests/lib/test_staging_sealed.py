"""StagingArea at rest: batch files sealed with the tenant's key, plaintext batches of
earlier releases still read, and a data subject erased from every batch file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from lily_dagster.lib.crypto import FILE_MAGIC, CryptoError, plaintext
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.staging import LANDED_SCHEMA, StagingArea
from lily_dagster_tests.support.sealed import files_holding, made_up_ciphers

MARKER = "StagedCanary9f2"
SUBJECT = "Jane.Doe@acme.example"


def payload(i: int, description: str = "", owners: tuple[str, ...] = ()) -> bytes:
    asset = {
        "type_name": "Table",
        "qualified_name": f"default/pg/1/DB/SCH/T{i}",
        "attributes": {"description": description, "owner_users": list(owners)},
    }
    return json.dumps({"event_id": f"e{i}", "tenant": "acme", "asset": asset}).encode()


def landed(payloads: list[bytes]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "origin": [f"kafka:t/0/{i}" for i in range(len(payloads))],
            "value": payloads,
            "received_at": [datetime(2026, 11, 23, tzinfo=UTC)] * len(payloads),
        },
        schema=LANDED_SCHEMA,
    )


def values(area: StagingArea, batch_id: str, state: str = "pending") -> list[bytes]:
    path = area.root / "acme" / state / f"{batch_id}.parquet"
    return area.ciphers("acme").read_parquet(path).get_column("value").to_list()


def test_batch_files_are_sealed_and_read_back_whole(tmp_path: Path) -> None:
    area = StagingArea(tmp_path, made_up_ciphers())
    frame = landed([payload(i, f"{MARKER} table {i}", (f"{MARKER}@x.org",)) for i in range(3)])
    area.land("acme", "b1", "kafka", frame, {"kafka_lag": 0})
    assert files_holding(tmp_path, MARKER) == []
    # Parquet compresses: a marker may hide in a plaintext file too. The file is sealed.
    assert (tmp_path / "acme" / "pending" / "b1.parquet").read_bytes().startswith(FILE_MAGIC)
    read, (manifest,) = area.read("acme", ["b1"])
    assert read.drop("batch_id").equals(frame)
    assert manifest.events == 3  # manifests hold no content: readable without a key
    assert json.loads((tmp_path / "acme" / "pending" / "b1.json").read_text())["events"] == 3
    with pytest.raises(CryptoError, match="acme"):
        StagingArea(tmp_path, plaintext).read("acme", ["b1"])  # sealed: no key, no content


def test_batches_landed_before_encryption_still_read(tmp_path: Path) -> None:
    frame = landed([payload(1, MARKER)])
    StagingArea(tmp_path).land("acme", "old", "kafka", frame, {})
    old = tmp_path / "acme" / "pending" / "old.parquet"
    assert old.read_bytes().startswith(b"PAR1")  # plaintext, as an earlier release wrote it
    read, _ = StagingArea(tmp_path, made_up_ciphers()).read("acme", ["old"])
    assert read.get_column("value").to_list() == [payload(1, MARKER)]


def test_erasure_scrubs_pending_applied_and_discarded_batches(tmp_path: Path) -> None:
    area = StagingArea(tmp_path, made_up_ciphers())
    named = payload(1, f"asked by {SUBJECT.upper()}", (SUBJECT, "bob"))
    area.land("acme", "p", "kafka", landed([named, payload(2, "nothing")]), {})
    area.land("acme", "a", "kafka", landed([payload(3, f"cc {SUBJECT}")]), {})
    area.land("acme", "d", "kafka", landed([b"\xff not utf-8 " + SUBJECT.encode()]), {})
    area.land("acme", "clean", "kafka", landed([payload(4, "nothing")]), {})
    area.land("globex", "g", "kafka", landed([payload(5, SUBJECT)]), {})
    area.mark_applied("acme", ["a"])
    area.discard("acme", "d")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    subject = Subject(SUBJECT)
    assert area.erase_subject("acme", subject, dry_run=True) == 3
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before

    assert area.erase_subject("acme", subject) == 3
    first, second = values(area, "p")
    asset = json.loads(first)["asset"]
    assert asset["attributes"] == {"description": "asked by [erased]", "owner_users": ["bob"]}
    assert second == payload(2, "nothing")  # rows that do not mention it are left as they were
    assert json.loads(values(area, "a", "applied")[0])["asset"]["attributes"]["description"] == (
        "cc [erased]"
    )
    assert values(area, "d", "discarded") == [b"\xff not utf-8 [erased]"]
    assert area.pending("acme") == ["clean", "p"]  # manifests and claims untouched
    assert area.erase_subject("acme", subject) == 0  # idempotent
    assert SUBJECT.encode() in area.read("globex", ["g"])[0].get_column("value")[0]  # other tenant
    assert not list(tmp_path.rglob("*.tmp"))


def test_erasure_finds_a_subject_spelt_with_json_escapes(tmp_path: Path) -> None:
    area = StagingArea(tmp_path, made_up_ciphers())
    escaped = json.dumps({"event_id": "e", "asset": {"attributes": {"description": "José"}}})
    assert "José" not in escaped  # json.dumps escapes it: \u00e9
    area.land("acme", "b", "kafka", landed([escaped.encode()]), {})
    assert area.erase_subject("acme", Subject("josé")) == 1
    (value,) = values(area, "b")
    assert json.loads(value)["asset"]["attributes"]["description"] == "[erased]"
