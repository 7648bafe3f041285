"""An operator's actions on pending batches: list, release, discard (lib/staging.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.staging import (
    CLAIMED,
    ISOLATED,
    LANDED_SCHEMA,
    MAX_RELEASES,
    UNCLAIMED,
    BatchError,
    StagingArea,
    discard_batch,
    list_batches,
    release_batch,
)


def frame(payloads: list[bytes], prefix: str = "kafka:t/0/") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "origin": [f"{prefix}{i}" for i in range(len(payloads))],
            "value": payloads,
            "received_at": [datetime(2026, 11, 23, tzinfo=UTC)] * len(payloads),
        },
        schema=LANDED_SCHEMA,
    )


def event(event_id: str) -> bytes:
    return json.dumps({"event_id": event_id, "tenant": "acme"}).encode()


@pytest.fixture
def staging(tmp_path: Path) -> StagingArea:
    area = StagingArea(tmp_path / "staging")
    area.land("acme", "b1", "kafka", frame([event("e1"), event("e2")]), {})
    area.land("acme", "b2", "webhook", frame([event("e3")], "webhook:"), {})
    area.land("acme", "b3", "kafka", frame([event("e4")]), {})
    area.claim("acme", ["b1"], "run-1")
    area.isolate("acme", ["b3"], "run-9")
    return area


def test_list_shows_each_pending_batch_with_its_state(staging: StagingArea) -> None:
    batches = {b.batch_id: b for b in list_batches(staging, "acme")}
    assert list(batches) == ["b1", "b2", "b3"]
    assert (batches["b1"].state, batches["b1"].run_id) == (CLAIMED, "run-1")
    assert (batches["b2"].state, batches["b2"].run_id) == (UNCLAIMED, None)
    assert (batches["b3"].state, batches["b3"].run_id) == (ISOLATED, "run-9")
    first = batches["b1"].as_dict()
    assert (first["events"], first["source"], first["releases"]) == (2, "kafka", 0)
    assert datetime.fromisoformat(first["landed_at"]).tzinfo is not None
    assert list_batches(staging, "nobody") == []


def test_release_lets_the_next_run_take_the_batch(staging: StagingArea) -> None:
    result = release_batch(staging, "acme", "b1", in_flight=lambda run: False)
    assert result == {
        "tenant": "acme",
        "batch_id": "b1",
        "was": CLAIMED,
        "released": True,
        "run_id": "run-1",
        "releases": 1,
    }
    assert "b1" in staging.unclaimed("acme")
    # Recorded as a release: the sweep's run key counts them, so it is a key no run had.
    assert staging.releases("acme", "b1") == ["run-1"]
    [b1] = [b for b in list_batches(staging, "acme") if b.batch_id == "b1"]
    assert (b1.state, b1.releases, b1.released_from) == (UNCLAIMED, 1, ["run-1"])


def test_release_goes_past_the_dead_run_limit(staging: StagingArea) -> None:
    for n in range(MAX_RELEASES):
        staging.claim("acme", ["b1"], f"dead-{n}")
        assert staging.release("acme", "b1", f"dead-{n}")
    staging.claim("acme", ["b1"], "dead-last")
    assert not staging.release("acme", "b1", "dead-last")  # waits for an operator
    assert release_batch(staging, "acme", "b1")["released"]
    assert "b1" in staging.unclaimed("acme")


def test_release_of_an_isolated_or_unclaimed_batch(staging: StagingArea) -> None:
    assert release_batch(staging, "acme", "b3")["released"]
    assert "b3" in staging.unclaimed("acme")
    again = release_batch(staging, "acme", "b2")
    assert (again["released"], again["was"]) == (False, UNCLAIMED)


def test_a_run_in_flight_keeps_its_batch(staging: StagingArea) -> None:
    asked: list[str] = []

    def in_flight(run_id: str) -> bool:
        asked.append(run_id)
        return True

    with pytest.raises(BatchError, match="held by run run-1, which has not ended"):
        release_batch(staging, "acme", "b1", in_flight)
    with pytest.raises(BatchError, match="run-1"):
        discard_batch(staging, QuarantineStore(staging.root.parent / "q"), "acme", "b1", in_flight)
    assert asked == ["run-1", "run-1"]
    assert staging.claimed_by("acme", "b1") == "run-1"
    assert "b1" in staging.pending("acme")


def test_unknown_batches_are_refused_in_one_line(staging: StagingArea, tmp_path: Path) -> None:
    quarantine = QuarantineStore(tmp_path / "quarantine")
    with pytest.raises(BatchError, match="no pending batch 'nope'") as error:
        release_batch(staging, "acme", "nope")
    assert "\n" not in str(error.value)
    staging.mark_applied("acme", ["b2"])
    with pytest.raises(BatchError, match="applied already"):
        discard_batch(staging, quarantine, "acme", "b2")
    discard_batch(staging, quarantine, "acme", "b1")
    with pytest.raises(BatchError, match="discarded already"):
        discard_batch(staging, quarantine, "acme", "b1")


def test_discard_moves_every_event_to_the_quarantine(staging: StagingArea, tmp_path: Path) -> None:
    quarantine = QuarantineStore(tmp_path / "quarantine")
    staging.land("acme", "b4", "kafka", frame([b"\xff\xfe not utf-8", b"not json"]), {})
    result = discard_batch(staging, quarantine, "acme", "b1")
    assert result["quarantined"] == 2 and result["reason"] == "discarded_by_operator"
    discard_batch(staging, quarantine, "acme", "b4")
    assert staging.pending("acme") == ["b2", "b3"]
    kept = quarantine.read("acme").sort("origin")
    assert kept["reason"].unique().to_list() == ["discarded_by_operator"]
    assert kept["event_id"].to_list() == ["e1", None, "e2", None]
    assert kept["raw_bytes"].to_list()[1] == b"\xff\xfe not utf-8"  # byte for byte
    assert "pending batch b1" in kept["detail"][0] and "run-1" in kept["detail"][0]
    # Landing a discarded batch again (a replayed tick) does not bring it back.
    staging.land("acme", "b1", "kafka", frame([event("e1")]), {})
    assert staging.pending("acme") == ["b2", "b3"]


def test_discarding_twice_after_a_crash_does_not_double(
    staging: StagingArea, tmp_path: Path
) -> None:
    quarantine = QuarantineStore(tmp_path / "quarantine")
    discard_batch(staging, quarantine, "acme", "b2")
    # A crash after the quarantine write, before the batch left pending: it is there again.
    discarded = staging.root / "acme" / "discarded"
    for name in ("b2.parquet", "b2.json"):
        (discarded / name).rename(staging.root / "acme" / "pending" / name)
    discard_batch(staging, quarantine, "acme", "b2")
    assert quarantine.read("acme").height == 1
