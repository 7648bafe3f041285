"""write_estate: synthetic estates that decode without a reject, pass every row rule, keep
parents before children in file order, and come out the same for the same seed."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from lily_dagster.bench.estate import (
    BATCH_ROWS,
    KINDS,
    PII_COLUMN_TYPES,
    EstateManifest,
    write_estate,
)
from lily_dagster.lib.decode import decode_frame, scan_envelopes
from lily_dagster.lib.validation import all_rules, split_valid

ASSETS = 12_000


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> EstateManifest:
    return write_estate(
        tmp_path_factory.mktemp("estate"), ASSETS, tenant="acme", rows_per_file=5_000, seed=4
    )


@pytest.fixture(scope="module")
def events(estate: EstateManifest) -> pl.DataFrame:
    """Every record through the bulk gate and the row rules, in file order."""
    parts = []
    for frame, origin in scan_envelopes(estate.directory, batch_rows=3_000):
        decoded = decode_frame(frame, "acme", origin, 1 << 20)
        assert decoded.rejects.is_empty(), decoded.rejects.select("reason", "detail").head()
        checked = split_valid(decoded.events, all_rules("acme"), "acme")
        assert checked.rejects.is_empty(), checked.rejects.select("reason", "detail").head()
        parts.append(checked.valid)
    return pl.concat(parts)


def test_files_rows_and_counts(estate: EstateManifest) -> None:
    assert estate.rows == ASSETS
    assert [f.name for f in estate.files] == [
        "part-000000.parquet",
        "part-000001.parquet",
        "part-000002.parquet",
    ]
    assert [pq.ParquetFile(f).metadata.num_rows for f in estate.files] == [5_000, 5_000, 2_000]
    assert all(
        pq.ParquetFile(f).metadata.row_group(i).num_rows <= BATCH_ROWS
        for f in estate.files
        for i in range(pq.ParquetFile(f).metadata.num_row_groups)
    )
    assert sum(estate.counts.values()) == ASSETS
    assert set(estate.counts) == set(KINDS)
    assert estate.counts["Column"] > 0.8 * ASSETS
    assert 0 < estate.counts["Database"] < estate.counts["Schema"] < estate.counts["Table"]


def test_every_record_decodes_and_passes_the_rules(
    estate: EstateManifest, events: pl.DataFrame
) -> None:
    assert events.height == ASSETS
    counts = dict(events.group_by("type_name").len().iter_rows())
    assert counts == estate.counts
    assert events.get_column("qualified_name").n_unique() == ASSETS
    assert events.get_column("event_id").n_unique() == ASSETS
    assert set(events.get_column("tenant")) == {"acme"}


def test_records_carry_what_their_type_has(events: pl.DataFrame) -> None:
    tables = events.filter(pl.col("type_name") == "Table")
    assert tables.get_column("description").null_count() == 0
    assert (tables.get_column("owner_users").list.len() >= 1).all()
    assert all(json.loads(a)["row_count"] >= 0 for a in tables.get_column("attributes"))
    columns = events.filter(pl.col("type_name") == "Column")
    extras = [json.loads(a) for a in columns.get_column("attributes")]
    assert all(set(x) == {"data_type", "order"} for x in extras)
    assert all(x["order"] >= 1 for x in extras)
    names = columns.get_column("name")
    pii = names.is_in(list(PII_COLUMN_TYPES)).sum() / names.len()
    assert 0.05 < pii < 0.15  # about one column in ten
    assert names.is_in(["EMAIL", "PHONE"]).any()
    qn = columns.get_column("qualified_name").str.split("/")
    assert (qn.list.len() == 7).all()
    assert qn.list.get(1).unique().to_list() == ["snowflake"]
    processes = events.filter(pl.col("type_name") == "Process")
    assert (processes.get_column("inputs").list.len() >= 1).all()
    assert (processes.get_column("outputs").list.len() == 1).all()


def test_parents_come_before_children_and_lineage_after_its_tables(events: pl.DataFrame) -> None:
    seen: set[str] = set()
    for qn, parent, inputs, outputs in events.select(
        "qualified_name", "parent_qualified_name", "inputs", "outputs"
    ).iter_rows():
        assert parent is None or parent in seen, f"{qn} before its parent {parent}"
        for end in [*inputs, *outputs]:
            assert end in seen, f"{qn} before its table {end}"
        seen.add(qn)


def test_same_seed_same_estate_other_seed_other_estate(tmp_path: Path) -> None:
    first = write_estate(tmp_path / "a", 3_000, tenant="acme", rows_per_file=1_000, seed=9)
    again = write_estate(tmp_path / "b", 3_000, tenant="acme", rows_per_file=1_000, seed=9)
    other = write_estate(tmp_path / "c", 3_000, tenant="acme", rows_per_file=1_000, seed=10)
    for f, g in zip(first.files, again.files, strict=True):
        assert pl.read_parquet(f).equals(pl.read_parquet(g))
    assert first.counts == again.counts
    assert not pl.read_parquet(first.files[0]).equals(pl.read_parquet(other.files[0]))


def test_estates_cut_at_any_size_and_refuse_nonsense(tmp_path: Path) -> None:
    small = write_estate(tmp_path / "s", 7, tenant="globex", rows_per_file=3)
    assert small.rows == 7 and len(small.files) == 3
    frame = pl.concat([pl.read_parquet(f) for f in small.files])
    assert frame.get_column("tenant").unique().to_list() == ["globex"]
    # the same records, whatever the files' size
    assert frame.equals(pl.read_parquet(write_estate(tmp_path / "t", 7, "globex").files[0]))
    assert write_estate(tmp_path / "e", 0, tenant="acme").files == []
    with pytest.raises(ValueError):
        write_estate(tmp_path / "x", -1, tenant="acme")
    with pytest.raises(ValueError):
        write_estate(tmp_path / "x", 10, tenant="acme", rows_per_file=0)
