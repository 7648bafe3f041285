"""CONTRACT.md §7 from outside: a bulk load sealed at rest reads exactly as one in plaintext.

`lily backfill` seals each batch while the previous one is written, and the hub keeps a
value sealed ahead only where the merged record's content is the batch's own. This file's
timeline crosses batches (7 rows each) with creates, newer updates, stale updates whose
content must lose, deletes and restores; the same file is loaded with LILY_ENCRYPTION on
and off, and the exports must agree field for field while no file of the sealed home
shows the content."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lily_dagster_tests.contract import outside

MARK = "SealedAhead5e3b"
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
# Every field of an exported record but updated_at (the load's own clock).
COMPARED = ("qualified_name", "type_name", "name", "status", "attributes", "classifications")
COMPARED += ("event_time", "event_id")


def event(i: int, minutes: int, text: str, op: str = "upsert") -> dict[str, Any]:
    return {
        "event_id": f"e-{i}-{minutes}-{op}-{text[:4]}",
        "tenant": "acme",
        "source": "snowflake",
        "op": op,
        "event_time": (T0 + timedelta(minutes=minutes)).isoformat(),
        "asset": {
            "type_name": "Table",
            "qualified_name": f"default/snowflake/1/DB/SCH/T{i}",
            "name": f"T{i}",
            "attributes": {
                "description": f"{MARK} {text} of table {i}",
                "owner_users": [f"{MARK.lower()}.{text}@example.org"],
                "sample_values": [f"{MARK}-{text}"],
            },
        },
    }


def timeline() -> list[dict[str, Any]]:
    rows = [event(i, 10, "first") for i in range(40)]
    rows += [event(i, 20, "newer") for i in range(0, 40, 3)]  # content wins
    rows += [event(i, 5, "stale") for i in range(1, 40, 4)]  # older: content loses
    rows += [event(i, 30, "gone", op="delete") for i in range(2, 40, 9)]
    rows += [event(i, 40, "back") for i in range(2, 40, 18)]  # restored
    return rows


def load(root: Path, encryption: str) -> tuple[dict[str, Any], Path]:
    home = root / encryption
    env = outside.clean_environment(LILY_HOME=str(home), LILY_ENCRYPTION=encryption)
    source = root / "timeline.jsonl"
    report = json.loads(
        outside.lily_ok(
            "backfill", "--tenant", "acme", "--source", str(source), "--batch-rows", "7", env=env
        )
    )
    assert report["quarantined"] == 0, report
    records = {r["qualified_name"]: r for r in outside.hub_export(env, "acme")}
    return {n: {k: r.get(k) for k in COMPARED} for n, r in records.items()}, home


@pytest.fixture(scope="module")
def loads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], Path]]:
    root = tmp_path_factory.mktemp("sealed-backfill")
    (root / "timeline.jsonl").write_text("".join(json.dumps(e) + "\n" for e in timeline()))
    return {mode: load(root, mode) for mode in ("off", "on")}


def test_a_sealed_load_exports_what_a_plaintext_load_exports(loads: dict[str, Any]) -> None:
    sealed, plain = loads["on"][0], loads["off"][0]
    assert len(plain) == 40
    assert all(r["attributes"]["description"] for r in plain.values())
    assert sealed == plain


def test_the_merge_kept_the_newest_content_whichever_batch_brought_it(
    loads: dict[str, Any],
) -> None:
    records = loads["on"][0]
    table = "default/snowflake/1/DB/SCH/T{}".format
    description = {n: r["attributes"]["description"] for n, r in records.items()}
    assert description[table(3)] == f"{MARK} newer of table 3"  # a later batch's update
    assert description[table(5)] == f"{MARK} first of table 5"  # the stale one lost
    assert records[table(11)]["status"] == "DELETED"
    assert records[table(20)]["status"] == "ACTIVE"
    assert description[table(20)] == f"{MARK} back of table 20"
    assert records[table(20)]["attributes"]["owner_users"] == [f"{MARK.lower()}.back@example.org"]


def test_no_file_of_the_sealed_home_shows_the_content(loads: dict[str, Any]) -> None:
    def holding(home: Path) -> list[str]:
        return [
            str(p.relative_to(home))
            for p in home.rglob("*")
            if p.is_file() and MARK.lower().encode() in p.read_bytes().lower()
        ]

    assert holding(loads["on"][1]) == []
    assert any(p.startswith("hub/") for p in holding(loads["off"][1]))  # the marker is findable
