"""`lily bench backfill`: every asset of each estate lands, the load's peak RSS is its own
(measured in a child process), and the baselines and the per-shard figure are reported."""

from __future__ import annotations

from lily_dagster.bench.backfill import run


def test_backfill_bench_loads_every_asset_and_reports_its_figures() -> None:
    out = run([3_000, 6_000], batch_rows=1_000, naive_sample=50, pods=(3,))
    assert [r["assets"] for r in out["runs"]] == [3_000, 6_000]
    for r in out["runs"]:
        assert r["backfill"]["applied"] == r["assets"] == r["backfill"]["hub_active"]
        assert r["backfill"]["quarantined"] == 0
        assert 0 < r["backfill"]["peak_rss_mib"] < 2048
        assert r["floor_polars_scan_rows_per_s"] > r["backfill"]["assets_per_s"] > 0
    shard = out["billion_on_pods"]["3"]
    assert 0 < shard["rows_in_shard"] < 3_000  # a shard writes its share only
    assert out["naive_pyatlan_rows_per_s"] > 0 and out["speedup_over_naive"] > 1


def test_encryption_both_reports_the_load_sealed_and_not() -> None:
    out = run([3_000], batch_rows=1_000, naive_sample=50, pods=(3,), encryption="both")
    run_ = out["runs"][0]
    figures = run_["encryption"]
    assert figures["off_assets_per_s"] > 0 and figures["on_assets_per_s"] > 0
    assert run_["backfill"]["assets_per_s"] == figures["on_assets_per_s"]
    assert run_["backfill"]["hub_active"] == 3_000


def test_json_lines_of_the_same_estate_load_beside_parquet() -> None:
    out = run([3_000], batch_rows=1_000, naive_sample=50, pods=(), formats=("parquet", "jsonl"))
    run_ = out["runs"][0]
    parquet, lines = run_["by_format"]["parquet"], run_["by_format"]["jsonl"]
    assert run_["format"] == "parquet" and run_["backfill"] == parquet["backfill"]
    for load in (parquet["backfill"], lines["backfill"]):
        assert load["applied"] == load["hub_active"] == 3_000 and load["quarantined"] == 0
        assert load["assets_per_s"] > 0 and load["stage_seconds"]["decode"] > 0
    assert lines["source_mib"] > parquet["source_mib"] > 0
    assert lines["floor_polars_read_rows_per_s"] > 0
