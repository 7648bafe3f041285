"""The local instance's dagster.yaml: each run tag limit declared once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_each_tag_concurrency_limit_is_declared_once() -> None:
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    keys = Counter((rule["key"], str(rule.get("value"))) for rule in limits)
    assert [key for key, n in keys.items() if n > 1] == []
    assert {key for key, _ in keys} == {
        "lily/tenant",
        "dagster/partition",
        "lily/tenant-block",
        "lily/tenants",
    }
