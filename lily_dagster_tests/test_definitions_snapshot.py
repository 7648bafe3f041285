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
# argv[1]: "code-location" (lily_dagster.definitions, as Dagster loads it) or "defs-folder"
# (dg's own `load_from_defs_folder`, which the code location must agree with).
_DUMP = """
import json, sys
from pathlib import Path
import dagster as dg
import lily_dagster
from lily_dagster.definitions import defs as load_definitions

if sys.argv[1] == "defs-folder":
    defs = dg.load_from_defs_folder(path_within_project=Path(lily_dagster.__file__).parent)
else:
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


def current_snapshot(
    tmp_path: Path, loader: str = "code-location", **settings: str
) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LILY_", "DAGSTER_"))}
    env["LILY_HOME"] = str(tmp_path / "home")
    env.update(settings)
    out = subprocess.run(
        [sys.executable, "-c", _DUMP, loader], env=env, capture_output=True, text=True, check=True
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


def test_dg_finds_the_same_definitions_as_the_code_location(tmp_path: Path) -> None:
    """The code location reads the defs folder with Dagster's package loader (faster than
    `load_from_defs_folder`, see lily_dagster/definitions.py); `dg` tooling uses the
    latter: both must see the same definitions, propagation included."""
    config = tmp_path / "lily.yaml"
    config.write_text(
        "targets: [{name: audit, type: webhook, url: 'http://127.0.0.1:9/x', "
        "secret_env: LILY_TEST_AUDIT_SECRET}]\n"
    )
    settings = {"LILY_CONFIG": str(config), "LILY_TEST_AUDIT_SECRET": "s" * 32}
    ours = current_snapshot(tmp_path, "code-location", **settings)
    assert "propagation_job" in ours["jobs"]  # type: ignore[operator]
    assert ours == current_snapshot(tmp_path, "defs-folder", **settings)
