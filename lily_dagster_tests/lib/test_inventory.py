"""Source snapshots: JSON Lines and Parquet (nested or flattened) under a path or an S3 prefix,
read in bounded batches through the live gate; unreadable snapshots fail with one line."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import polars as pl
import pytest

from lily_dagster.lib.inventory import (
    InventoryError,
    iter_snapshot_batches,
    list_snapshot,
    read_snapshot,
    resolve_source,
)
from lily_dagster.lib.staging import LANDED_SCHEMA
from lily_dagster.settings import ConfigError
from lily_dagster_tests.support import envelopes

SCHEMA = "default/snowflake/1700000000/DB/SCH"
MAX_BYTES = 1_048_576


def envelope(i: int, tenant: str = "acme", **asset: Any) -> dict[str, Any]:
    """Table T`i` (PII when i is odd); `asset` overrides its qualified name and so on."""
    return envelopes.envelope(
        **{"qualified_name": f"{SCHEMA}/T{i}", "name": f"T{i}", **asset},
        event_id=f"e{i}",
        tenant=tenant,
        event_time=f"2026-01-0{1 + i % 9}T10:00:00Z",
        attributes={"description": f"table {i}", "owner_users": ["jdoe"], "rows": i},
        classifications=["PII"] if i % 2 else [],
    )


def write_jsonl(path: Path, envelopes: list[dict[str, Any]], extra: Sequence[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*(json.dumps(e) for e in envelopes), *extra]) + "\n")
    return path


def parquet_rows(envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Envelopes as Parquet would hold them: event_time a timestamp, not text."""
    rows = []
    for e in envelopes:
        row = dict(e)
        row["event_time"] = datetime.fromisoformat(e["event_time"])
        rows.append(row)
    return rows


def write_parquet_nested(path: Path, envelopes: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(parquet_rows(envelopes)).write_parquet(path)
    return path


def write_parquet_flat(path: Path, envelopes: list[dict[str, Any]]) -> Path:
    rows = []
    for row in parquet_rows(envelopes):
        asset = row.pop("asset")
        # Free-form attributes as a JSON string: how flattened exports usually carry them.
        asset["attributes"] = json.dumps(asset["attributes"])
        rows.append({**row, **{f"asset_{k}": v for k, v in asset.items()}})
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(path)
    return path


def content(events: pl.DataFrame) -> list[dict[str, Any]]:
    """What reaches the hub, without where it came from."""
    return events.drop("raw", "origin").sort("event_id").to_dicts()


def one_line_error(match: str, source: str) -> str:
    with pytest.raises(InventoryError) as info:
        read_snapshot(source, "acme", MAX_BYTES)
    message = str(info.value)
    assert "\n" not in message and match in message, message
    assert isinstance(info.value, ConfigError)  # every command reports it as `lily: error: …`
    return message


def test_json_lines_and_parquet_nested_or_flat_give_the_same_events(tmp_path: Path) -> None:
    envelopes = [envelope(i) for i in range(6)]
    jsonl = read_snapshot(str(write_jsonl(tmp_path / "a/snap.jsonl", envelopes)), "acme", MAX_BYTES)
    nested = read_snapshot(
        str(write_parquet_nested(tmp_path / "b/snap.parquet", envelopes)), "acme", MAX_BYTES
    )
    flat = read_snapshot(
        str(write_parquet_flat(tmp_path / "c/snap.parquet", envelopes)), "acme", MAX_BYTES
    )
    for snapshot in (jsonl, nested, flat):
        assert snapshot.rows == 6 and snapshot.rejects.is_empty()
    assert content(jsonl.events) == content(nested.events) == content(flat.events)
    row = jsonl.events.filter(pl.col("event_id") == "e1").row(0, named=True)
    assert row["description"] == "table 1" and json.loads(row["attributes"]) == {"rows": 1}
    # A Parquet struct has every key in every row; an absent one stays absent, not null.
    assert json.loads(nested.events.row(0, named=True)["raw"])["asset"]["attributes"] == {
        "description": "table 0",
        "owner_users": ["jdoe"],
        "rows": 0,
    }


def test_a_directory_is_read_in_bounded_batches_with_origins(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "snap/part-1.jsonl", [envelope(i) for i in range(5)], ["", "  "])
    write_parquet_nested(tmp_path / "snap/deeper/part-2.parquet", [envelope(i) for i in (5, 6, 7)])
    (tmp_path / "snap/_SUCCESS").write_text("")
    (tmp_path / "snap/README.md").write_text("not a snapshot file")
    write_jsonl(tmp_path / "snap/.tmp/partial.jsonl", [envelope(99)])  # a writer's temp file
    write_jsonl(tmp_path / "snap/notes.ndjson", [envelope(8)])

    files = list_snapshot(str(tmp_path / "snap"))
    assert [Path(f.uri).name for f in files] == ["part-2.parquet", "notes.ndjson", "part-1.jsonl"]
    batches = list(iter_snapshot_batches(str(tmp_path / "snap"), batch_rows=2))
    assert [b.height for b in batches] == [2, 1, 1, 2, 2, 1]  # a batch never spans files
    assert all(b.schema == pl.Schema(LANDED_SCHEMA) for b in batches)
    origins = [o for b in batches for o in b.get_column("origin")]
    assert origins[0] == f"snapshot:{tmp_path}/snap/deeper/part-2.parquet#1"
    assert origins[-1] == f"snapshot:{tmp_path}/snap/part-1.jsonl#5"
    snapshot = read_snapshot(str(tmp_path / "snap"), "acme", MAX_BYTES, batch_rows=2)
    assert snapshot.files == 3 and snapshot.rows == 9 and snapshot.events.height == 9


def test_bad_rows_are_rejects_with_reasons_not_errors(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "snap.jsonl",
        [envelope(1), envelope(2, tenant="globex"), envelope(3, qualified_name="no-slashes")],
        ['{"event_id": "cut-off", "tenant": "ac'],  # a truncated last line
    )
    snapshot = read_snapshot(str(path), "acme", MAX_BYTES)
    assert snapshot.events.get_column("event_id").to_list() == ["e1"]
    reasons = dict(zip(snapshot.rejects["origin"], snapshot.rejects["reason"], strict=True))
    assert reasons == {
        f"snapshot:{path}#2": "tenant_mismatch",
        f"snapshot:{path}#3": "bad_qualified_name",
        f"snapshot:{path}#4": "malformed_json",
    }
    # Parquet: a timestamp without a zone is as ambiguous as in JSON.
    naive = [dict(envelope(4), event_time="2026-01-01T10:00:00")]
    frame = pl.DataFrame(naive).with_columns(pl.col("event_time").str.to_datetime())
    frame.write_parquet(tmp_path / "naive.parquet")
    parquet = read_snapshot(str(tmp_path / "naive.parquet"), "acme", MAX_BYTES)
    assert parquet.rejects.get_column("reason").to_list() == ["bad_event_time"]


def test_unreadable_snapshots_fail_with_one_line(tmp_path: Path) -> None:
    one_line_error("no such file or directory", str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/notes.txt").write_text("x")
    one_line_error("no snapshot files", str(tmp_path / "empty"))
    one_line_error("not a snapshot file", str(tmp_path / "empty/notes.txt"))

    good = write_parquet_nested(tmp_path / "ok/snap.parquet", [envelope(i) for i in range(50)])
    cut = tmp_path / "cut/snap.parquet"
    cut.parent.mkdir()
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    one_line_error("not a readable Parquet file", str(cut))

    wrong = tmp_path / "wrong/snap.parquet"
    wrong.parent.mkdir()
    pl.DataFrame({"event_id": ["e1"], "qualified_name": ["x"]}).write_parquet(wrong)
    message = one_line_error("missing columns", str(wrong))
    assert "'op'" in message and "'asset_qualified_name'" in message


def test_snapshot_id_is_stable_and_relative_paths_follow_the_config(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "snap/a.jsonl", [envelope(1)])
    first = read_snapshot(str(tmp_path / "snap"), "acme", MAX_BYTES)
    assert read_snapshot(str(tmp_path / "snap"), "acme", MAX_BYTES).snapshot_id == first.snapshot_id
    assert first.taken_at == datetime.fromtimestamp(path.stat().st_mtime, UTC)
    os.utime(path, (1_800_000_000, 1_800_000_000))
    assert read_snapshot(str(tmp_path / "snap"), "acme", MAX_BYTES).snapshot_id != first.snapshot_id
    assert resolve_source("snap", tmp_path) == str(tmp_path / "snap")
    assert resolve_source("/abs/snap", tmp_path) == "/abs/snap"
    assert resolve_source("s3://bucket/snap", tmp_path) == "s3://bucket/snap"


def test_an_s3_prefix_is_a_snapshot_and_a_missing_bucket_one_line(s3_env: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="lily-inventory")
    body = "\n".join(json.dumps(envelope(i)) for i in range(3)).encode()
    s3.put_object(Bucket="lily-inventory", Key="snap/2026/part-1.jsonl", Body=body)
    parquet = io.BytesIO()
    pl.DataFrame(parquet_rows([envelope(i) for i in (3, 4)])).write_parquet(parquet)
    s3.put_object(Bucket="lily-inventory", Key="snap/part-2.parquet", Body=parquet.getvalue())
    s3.put_object(Bucket="lily-inventory", Key="snap/_SUCCESS", Body=b"")
    s3.put_object(
        Bucket="lily-inventory", Key="snapshots-old/x.jsonl", Body=body
    )  # not under snap/

    snapshot = read_snapshot("s3://lily-inventory/snap", "acme", MAX_BYTES, batch_rows=2)
    assert snapshot.files == 2 and snapshot.rows == 5 and snapshot.rejects.is_empty()
    assert sorted(snapshot.events.get_column("event_id")) == [f"e{i}" for i in range(5)]
    assert "snapshot:s3://lily-inventory/snap/2026/part-1.jsonl#3" in snapshot.events["origin"]
    one_line_error("NoSuchBucket", "s3://lily-no-such-bucket/snap")
    one_line_error("no snapshot files", "s3://lily-inventory/elsewhere")
