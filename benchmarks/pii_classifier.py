"""The pii-classify hook on a labelled set of warehouse column names: precision, recall and
F1 of the `PII` tag, the kinds' accuracy, and every misclassified name. Prints one JSON
object.

    .venv/bin/python -m benchmarks.pii_classifier [--set benchmarks/data/pii_column_names.csv]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lily_dagster.bench.pii import DEFAULT_SET, evaluate

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", type=Path, default=DEFAULT_SET)
    args = parser.parse_args()
    print(json.dumps(evaluate(args.set)))
