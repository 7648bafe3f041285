"""`lily bench backfill --assets N [N ...] [--format parquet|jsonl|both]`: for each N, a
synthetic estate of N assets written to Parquet (and, for `jsonl`, the same envelopes as JSON
Lines), then loaded by the backfill path (decode, gates, the default pre-ingest hooks,
LocalHub) into a fresh hub, once per format, with the baselines measured in the same run: a
raw polars read of the same files (the floor: `read_parquet`, and `read_ndjson` for JSON
Lines) and the naive path (one pyatlan asset object per row, on a sample).

Each load runs in a child process, so its peak RSS is the backfill's own (not the
generator's, nor an earlier load's). A shard's run (1 of `--pods` shards: it reads the
whole input and writes its share) gives the per-pod figure behind the billion estimate.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

BILLION = 1_000_000_000
FORMATS = ("parquet", "jsonl")


def floor_scan(files: list[Path]) -> float:
    """Rows/s of a raw polars read of every file (all columns, nothing done with them)."""
    started = time.perf_counter()
    rows = 0
    for f in files:
        rows += (pl.read_parquet(f) if f.suffix == ".parquet" else pl.read_ndjson(f)).height
    return rows / (time.perf_counter() - started)


def write_json_lines(files: list[Path], directory: Path) -> list[Path]:
    """The estate's Parquet files as JSON Lines of the same envelopes, one file each: each
    row as the snapshot reader makes it of a Parquet row (compact JSON, nulls left out)."""
    from lily_dagster.lib.decode import decode_frame

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file in files:
        path = directory / f"{file.stem}.jsonl"
        with path.open("wb") as out:
            for batch in pl.read_parquet(file).iter_slices(262_144):
                decoded = decode_frame(batch, None, "estate#1", 1 << 30)
                assert decoded.rejects.is_empty(), decoded.rejects.head(3)
                out.write("\n".join(decoded.events.get_column("raw")).encode() + b"\n")
        written.append(path)
    return written


def offline_client() -> Any:
    """A pyatlan client that never connects (for serialising only)."""
    from pyatlan.client.atlan import AtlanClient

    return AtlanClient(base_url="http://127.0.0.1:9", api_key="unused")


def pyatlan_bulk_json(assets: Iterable[Any], client: Any) -> None:
    """Serialise pyatlan asset objects as the SDK sends them to Atlan: bulk requests of 50
    (the naive path's cost, short of the network)."""
    from pyatlan.model.core import AtlanRequest, BulkRequest

    batch: list[Any] = []
    for asset in assets:
        batch.append(asset)
        if len(batch) == 50:
            AtlanRequest(instance=BulkRequest(entities=batch), client=client).json()
            batch = []
    if batch:
        AtlanRequest(instance=BulkRequest(entities=batch), client=client).json()


def naive_rate(files: list[Path], sample: int) -> float:
    """Rows/s building one pyatlan asset object per row and serialising it as the SDK
    would send it (on `sample` rows of the estate)."""
    from pyatlan.model.assets import Column, Table

    client = offline_client()
    rows = pl.read_parquet(files[0]).head(sample).get_column("asset").to_list()

    def objects() -> Iterator[Any]:
        for asset in rows:
            attributes = asset["attributes"]
            parent = (
                attributes.get("parent_qualified_name")
                if isinstance(attributes, dict)
                else json.loads(attributes or "{}").get("parent_qualified_name")
            )
            if asset["type_name"] == "Column" and parent:
                yield Column.creator(name=asset["name"], parent_qualified_name=parent,
                                     parent_type=Table, order=1)  # fmt: skip
            elif asset["type_name"] == "Table" and parent:
                yield Table.creator(name=asset["name"], schema_qualified_name=parent)

    started = time.perf_counter()
    pyatlan_bulk_json(objects(), client)
    built = sum(1 for a in rows if a["type_name"] in ("Table", "Column"))
    return built / (time.perf_counter() - started)


def load(
    root: Path, source: Path, batch_rows: int, shards: int = 1, shard: int = 0
) -> dict[str, Any]:
    """One backfill of `source` into a fresh hub under `root`, in this process."""
    from lily_dagster.lib.backfill import run_backfill
    from lily_dagster.lib.crypto import ciphers_of
    from lily_dagster.lib.hub.local import LocalHub
    from lily_dagster.lib.metrics.store import MetricsStore
    from lily_dagster.lib.quarantine import QuarantineStore
    from lily_dagster.settings import LilyConfigFile, Settings

    # Sealed and measured as in production (LILY_ENCRYPTION and LILY_METRICS of this
    # process, as `lily backfill` does), with keys and metrics under `root`.
    env = {k: v for k, v in os.environ.items() if k.startswith("LILY_")}
    settings = Settings.resolve({**env, "LILY_HOME": str(root)})
    ciphers = ciphers_of(settings)
    hub = LocalHub(root / "hub", ciphers=ciphers)
    report = run_backfill(
        hub, QuarantineStore(root / "quarantine", ciphers), LilyConfigFile(), "acme",
        str(source), shards=shards, shard=shard, batch_rows=batch_rows,
        metrics=MetricsStore.from_settings(settings),
    )  # fmt: skip
    counts = hub.status_counts("acme")
    return {
        "seconds": round(report.seconds, 2),
        "assets_per_s": round(report.rows_per_s),
        "stage_seconds": report.stage_seconds,  # stages overlap: hub writes run in a thread
        "rows_in_shard": report.rows_in_shard,
        "applied": report.applied,
        "quarantined": report.quarantined,
        "hub_active": counts.get("ACTIVE", 0),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def load_in_child(
    root: Path,
    source: Path,
    batch_rows: int,
    shards: int = 1,
    shard: int = 0,
    encryption: str | None = None,
    metrics: str | None = None,
) -> dict[str, Any]:
    """`load` in a child process; `encryption` and `metrics` "on"/"off" set its
    LILY_ENCRYPTION and LILY_METRICS (None: this process's)."""
    args = json.dumps([str(root), str(source), batch_rows, shards, shard])
    env = dict(os.environ)
    for variable, value in (("LILY_ENCRYPTION", encryption), ("LILY_METRICS", metrics)):
        if value is not None:
            env[variable] = value
    done = subprocess.run(
        [sys.executable, "-m", "lily_dagster.bench.backfill", args],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"backfill child failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def compare_encryption(root: Path, source: Path, batch_rows: int) -> dict[str, Any]:
    """The same load with LILY_ENCRYPTION off, then on (fresh hubs): the cost of sealing."""
    off = load_in_child(root / "plain", source, batch_rows, encryption="off")
    on = load_in_child(root / "sealed", source, batch_rows, encryption="on")
    return {"off": off, "on": on, "sealing_cost_pct": _cost_pct(off, on)}


def _cost_pct(off: dict[str, Any], on: dict[str, Any]) -> float:
    return round(100 * (1 - on["assets_per_s"] / off["assets_per_s"]), 1)


def run_metrics(totals: list[int], batch_rows: int = 500_000, rounds: int = 2) -> dict[str, Any]:
    """Each estate loaded with LILY_METRICS off and on, alternating for `rounds` (fresh
    hubs each time; the order alternates so that a warmer page cache favours neither):
    what recording the pipeline metrics costs the bulk path."""
    from lily_dagster.bench.estate import write_estate

    out: dict[str, Any] = {"benchmark": "backfill-metrics", "batch_rows": batch_rows, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for total in totals:
            root = Path(tmp) / str(total)
            write_estate(root / "estate", total, tenant="acme")
            loads: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
            for i in range(rounds):
                for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                    where = root / f"load-{mode}-{i}"
                    loads[mode].append(
                        load_in_child(where, root / "estate", batch_rows, metrics=mode)
                    )
            best = {m: max(runs, key=lambda r: r["assets_per_s"]) for m, runs in loads.items()}
            out["runs"].append(
                {
                    "assets": total,
                    **{f"{m}_assets_per_s": [r["assets_per_s"] for r in loads[m]] for m in loads},
                    "metrics_cost_pct": _cost_pct(best["off"], best["on"]),
                }
            )
    return out


def format_load(
    root: Path, source: Path, batch_rows: int, encryption: str | None
) -> dict[str, Any]:
    """One format's load of the estate under `root` (both: off and on, the figures being the
    sealed load's, with `encryption` saying what sealing cost)."""
    if encryption != "both":
        return {"backfill": load_in_child(root, source, batch_rows, encryption=encryption)}
    compared = compare_encryption(root, source, batch_rows)
    return {
        "backfill": compared["on"],
        "encryption": {
            "off_assets_per_s": compared["off"]["assets_per_s"],
            "on_assets_per_s": compared["on"]["assets_per_s"],
            "sealing_cost_pct": compared["sealing_cost_pct"],
        },
    }


def estate_entry(
    root: Path, total: int, batch_rows: int, encryption: str | None, formats: tuple[str, ...]
) -> dict[str, Any]:
    """An estate of `total` assets written under `root` and loaded once per format: the
    first format's figures as `backfill` (and `encryption`), each format's under
    `by_format` when there are several."""
    from lily_dagster.bench.estate import write_estate

    started = time.perf_counter()
    manifest = write_estate(root / "estate", total, tenant="acme")
    generate_s = time.perf_counter() - started
    parquet = sorted((root / "estate").glob("*.parquet"))
    sources = {"parquet": (root / "estate", parquet)}
    if "jsonl" in formats:
        started = time.perf_counter()
        lines = write_json_lines(parquet, root / "estate-jsonl")
        sources["jsonl"] = (root / "estate-jsonl", lines)
        generate_s += time.perf_counter() - started
    by_format = {}
    for fmt in formats:
        source, files = sources[fmt]
        by_format[fmt] = {
            **format_load(root / f"load-{fmt}", source, batch_rows, encryption),
            "floor_polars_read_rows_per_s": round(floor_scan(files)),
            "source_mib": round(sum(f.stat().st_size for f in files) / 2**20, 1),
        }
    first = by_format[formats[0]]
    rate = first["backfill"]["assets_per_s"]
    entry = {
        "assets": total,
        "format": formats[0],
        "generate_s": round(generate_s, 2),
        "estate": getattr(manifest, "counts", None) or str(manifest),
        "backfill": first["backfill"],
        "floor_polars_scan_rows_per_s": first["floor_polars_read_rows_per_s"],
        "billion_hours_one_node": round(BILLION / rate / 3600, 2),
    }
    if "encryption" in first:
        entry["encryption"] = first["encryption"]
    if len(formats) > 1:
        entry["by_format"] = by_format
    return entry


def run(
    totals: list[int],
    batch_rows: int = 500_000,
    naive_sample: int = 2_000,
    pods: tuple[int, ...] = (8, 32),
    encryption: str | None = None,
    formats: tuple[str, ...] = ("parquet",),
) -> dict[str, Any]:
    """`encryption`: "on" or "off" sets LILY_ENCRYPTION for the loads (None: the
    environment's); "both" loads each estate with it off and on, reported under
    `encryption`, the `backfill` figures being the sealed load's (the default).
    `formats`: the source formats loaded side by side (see `estate_entry`); the baselines
    and shard runs read the first."""
    if not formats or any(f not in FORMATS for f in formats):
        raise ValueError(f"formats must be some of {FORMATS}, got {formats}")
    out: dict[str, Any] = {"benchmark": "backfill", "batch_rows": batch_rows, "runs": []}
    mode = None if encryption == "both" else encryption
    with tempfile.TemporaryDirectory() as tmp:
        for total in totals:
            entry = estate_entry(Path(tmp) / str(total), total, batch_rows, encryption, formats)
            out["runs"].append(entry)
        # Baselines and the per-shard figure on the smallest estate.
        smallest = Path(tmp) / str(totals[0])
        files = sorted((smallest / "estate").glob("*.parquet"))
        naive = naive_rate(files, naive_sample)
        out["naive_pyatlan_rows_per_s"] = round(naive)
        rate = out["runs"][0]["backfill"]["assets_per_s"]
        out["speedup_over_naive"] = round(rate / naive, 1) if naive else None
        source = smallest / ("estate" if formats[0] == "parquet" else "estate-jsonl")
        shard_runs = {}
        for n in pods:
            shard = load_in_child(
                smallest / f"shard-{n}", source, batch_rows, n, 0, encryption=mode
            )
            # A pod reads the whole input and writes its share: a billion on n pods takes
            # what this shard took, scaled from the estate to a billion rows.
            shard_runs[str(n)] = {
                "shard_seconds": shard["seconds"],
                "rows_in_shard": shard["rows_in_shard"],
                "billion_hours": round(shard["seconds"] * BILLION / totals[0] / 3600, 2),
            }
        out["billion_on_pods"] = shard_runs
        out["billion_note"] = (
            "pods write in parallel only where the hub takes one writer per shard (Atlan, "
            "within its rate limit); LocalHub serialises writers on its file"
        )
    loads = [f["backfill"] for r in out["runs"] for f in r.get("by_format", {}).values()]
    loads += [r["backfill"] for r in out["runs"]]
    out["peak_rss_mib_max"] = max(load["peak_rss_mib"] for load in loads)
    return out


if __name__ == "__main__":
    root, source, batch_rows, shards, shard = json.loads(sys.argv[1])
    print(json.dumps(load(Path(root), Path(source), batch_rows, shards, shard)))
