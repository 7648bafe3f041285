"""Throughput of one live micro-batch through the pipeline's plain-Python stages.

Decode (pydantic) → validate (polars rules) → enrich → LocalHub upsert, on demo-shaped
events, and the same batch re-applied (the replay path). Prints one JSON object.

    .venv/bin/python -m benchmarks.micro_batch [--events N]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from lily_dagster.lib.demo import generate_demo
from lily_dagster.lib.enrichment import normalise_owners
from lily_dagster.lib.envelope import decode_envelopes
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.validation import envelope_rules, split_valid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    payloads: list[bytes] = []
    seed = 0
    while len(payloads) < args.events:
        seed += 1
        traffic = generate_demo(
            tenants=("acme",), tables_per_tenant=50, seed=seed, oversized_bytes=0
        )
        payloads.extend(value for _, value in traffic.messages)
    payloads = payloads[: args.events]
    origins = [f"kafka:t/0/{i}" for i in range(len(payloads))]
    timings: dict[str, float] = {}

    t = time.perf_counter()
    decoded = decode_envelopes(payloads, origins, tenant="acme", max_event_bytes=1 << 20)
    timings["decode_s"] = time.perf_counter() - t
    t = time.perf_counter()
    checked = split_valid(decoded.events, envelope_rules("acme"), "acme")
    timings["validate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    enriched = normalise_owners(checked.valid)
    timings["enrich_s"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        hub = LocalHub(Path(tmp))
        t = time.perf_counter()
        result = hub.upsert("acme", enriched)
        timings["hub_upsert_s"] = time.perf_counter() - t
        t = time.perf_counter()
        replay = hub.upsert("acme", enriched)
        timings["hub_replay_s"] = time.perf_counter() - t
    total = sum(v for k, v in timings.items() if k != "hub_replay_s")
    print(
        json.dumps(
            {
                "benchmark": "micro_batch",
                "events": len(payloads),
                "valid": enriched.height,
                "quarantined": decoded.rejects.height + checked.rejects.height,
                "records_written": result.changed,
                "replay_changed": replay.changed,
                **{k: round(v, 3) for k, v in timings.items()},
                "events_per_s": round(len(payloads) / total),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    )


if __name__ == "__main__":
    main()
