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
