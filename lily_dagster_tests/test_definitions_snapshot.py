"""The definitions' names (asset keys and groups, checks, jobs, sensors, schedules) against a
snapshot kept in the repository, so that an accidental rename shows up in review: operators'
runs, partitions, cursors and bookmarks hang off these names. After a deliberate change:
`LILY_UPDATE_SNAPSHOTS=1 pytest lily_dagster_tests/test_definitions_snapshot.py`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"

# Run in a clean process with an empty LILY_HOME: the definitions are built from the
# environment (targets from LILY_CONFIG), and the test process's may be anything.
_DUMP = """
import json
from lily_dagster.definitions import defs as load_definitions

defs = load_definitions()

repo = defs.get_repository_def()
assets = {}
for node in repo.asset_graph.asset_nodes:
    assets[node.key.to_user_string()] = {
        "group": node.group_name,
        "partitioned": node.partitions_def is not None,
        "checks": sorted(k.name for k in node.check_keys),
    }
print(json.dumps({
    "assets": assets,
    "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
    "sensors": {s.name: s.minimum_interval_seconds for s in repo.sensor_defs},
    "schedules": {s.name: s.cron_schedule for s in repo.schedule_defs},
}, indent=2, sort_keys=True))
"""


def current_snapshot(tmp_path: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LILY_", "DAGSTER_"))}
    env["LILY_HOME"] = str(tmp_path / "home")
    out = subprocess.run(
        [sys.executable, "-c", _DUMP], env=env, capture_output=True, text=True, check=True
    )
    value: dict[str, object] = json.loads(out.stdout)
    return value


def test_definitions_match_the_snapshot(tmp_path: Path) -> None:
    current = current_snapshot(tmp_path)
    if os.environ.get("LILY_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text()), (
        "the definitions changed: if it is deliberate, run with LILY_UPDATE_SNAPSHOTS=1 and "
        "review the diff of lily_dagster_tests/snapshots/definitions.json"
    )
