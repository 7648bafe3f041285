"""Streaming latency: events produced to Kafka (the embedded broker) at a fixed rate across
several tenants with the Dagster daemon running; p50/p95/max from produce to visible in the
hub, and events lost. Prints one JSON object (the same as `lily bench latency`).

    .venv/bin/python -m benchmarks.streaming_latency [--rate 1000] [--seconds 30] [--tenants 3]
        [--encryption on|off|both] [--storage sqlite|postgres]
"""

from __future__ import annotations

import argparse
import json

from lily_dagster.bench.latency import compare_latency, run_latency

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--encryption", choices=("on", "off", "both"))
    parser.add_argument("--storage", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    if args.encryption == "both":
        result = compare_latency(args.rate, args.seconds, args.tenants, storage=args.storage)
    else:
        result = run_latency(
            args.rate, args.seconds, args.tenants, encryption=args.encryption, storage=args.storage
        )
    print(json.dumps(result))
