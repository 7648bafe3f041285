"""The pii-classify hook against a labelled set of warehouse column names.

The set (`benchmarks/data/pii_column_names.csv`: `name,is_pii,kind,sample_values`) holds
realistic names — snake_case, camelCase, Snowflake upper case, abbreviations, Salesforce
fields — with tricky non-personal ones (`email_campaign_id`, `ip_range_count`,
`address_type_code`, `server_ip`, `zip_file`) and a few columns judged by their samples
(`sample_values`, separated by `|`). Labelling convention: `is_pii` is 1 when the column's
values are personal data of one of the hook's kinds (direct identifiers: e-mail, phone,
national id, person name, postal address, a person's IP, card number, birth date, bank
account); keys and ids (`customer_id`), quasi-identifiers (`city`, `country`), and counts,
flags, types, statuses and hashes of personal data are 0. Names whose meaning depends on
the estate (`username`, `account_number`, `ship_to_name`) are left out.

Every row becomes a Column envelope, decoded and run through the real hook as a configured
chain runs it; a name counts as found when it gets the `PII` tag.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from lily_dagster.lib.envelope import decode_envelopes
from lily_dagster.lib.hooks import HookContext, build_chain, run_chain
from lily_dagster.settings import HookRef

DEFAULT_SET = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "pii_column_names.csv"
TABLE = "default/snowflake/1700000000/DB/SCH/T"


def load_set(path: Path = DEFAULT_SET) -> list[dict[str, Any]]:
    """The labelled names: name, is_pii (bool), kind ('' when not personal data), samples."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        {
            "name": r["name"],
            "is_pii": r["is_pii"].strip() == "1",
            "kind": (r.get("kind") or "").strip(),
            "samples": [s for s in (r.get("sample_values") or "").split("|") if s],
        }
        for r in rows
    ]


def _envelope(i: int, row: dict[str, Any]) -> str:
    attributes = {"sample_values": row["samples"]} if row["samples"] else {}
    asset = {
        "type_name": "Column",
        "qualified_name": f"{TABLE}/C{i}",
        "name": row["name"],
        "attributes": attributes,
    }
    envelope = {
        "event_id": f"pii-{i}",
        "tenant": "bench",
        "source": "bench",
        "op": "upsert",
        "event_time": "2026-11-23T10:00:00Z",
        "asset": asset,
    }
    return json.dumps(envelope)


def classify(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Each row's classifications after the pii-classify hook (default settings)."""
    decoded = decode_envelopes(
        [_envelope(i, r) for i, r in enumerate(rows)],
        [f"bench/{i}" for i in range(len(rows))],
        tenant="bench",
        max_event_bytes=1 << 20,
    )
    if decoded.rejects.height:
        raise ValueError(f"{decoded.rejects.height} names of the set do not decode")
    chain = build_chain([HookRef(name="pii-classify")], "pre_ingest")
    result = run_chain(decoded.events, chain, HookContext(tenant="bench"))
    order = decoded.events.get_column("event_id").to_list()
    tags = dict(
        zip(
            result.events.get_column("event_id").to_list(),
            result.events.get_column("classifications").to_list(),
            strict=True,
        )
    )
    return [tags[e] or [] for e in order]


def evaluate(path: Path = DEFAULT_SET) -> dict[str, Any]:
    """Precision, recall and F1 of the PII tag over the set, the kinds' accuracy among the
    names found, and every misclassified name."""
    rows = load_set(path)
    started = time.perf_counter()
    tags = classify(rows)
    seconds = time.perf_counter() - started
    tp = fp = fn = tn = right_kind = 0
    misclassified, wrong_kind = [], []
    for row, row_tags in zip(rows, tags, strict=True):
        found = "PII" in row_tags
        kinds = [t.removeprefix("PII:") for t in row_tags if t.startswith("PII:")]
        if found and row["is_pii"]:
            tp += 1
            if row["kind"] in kinds:
                right_kind += 1
            else:
                wrong_kind.append({"name": row["name"], "expected": row["kind"], "got": kinds})
        elif found:
            fp += 1
        elif row["is_pii"]:
            fn += 1
        else:
            tn += 1
        if found != row["is_pii"]:
            misclassified.append(
                {"name": row["name"], "expected": row["kind"] or "not PII", "got": kinds}
            )
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "benchmark": "pii_classifier",
        "set": str(path.name),
        "names": len(rows),
        "pii": tp + fn,
        "not_pii": fp + tn,
        "with_samples": sum(1 for r in rows if r["samples"]),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "kind_accuracy": round(right_kind / tp, 4) if tp else 1.0,
        "hook_seconds": round(seconds, 3),
        "misclassified": misclassified,
        "wrong_kind": wrong_kind,
    }
