"""A run that fails leaves its batch pending, held for an operator; from the outside, with
the `lily` commands, the environment and files only: the failed replay answers with its
JSON summary and one `lily: error:` line naming the run and the step (no traceback),
`lily batches list` shows the batch held by that run, `release` frees it, `discard` moves
its events to the quarantine (nothing is lost). Commands name the LILY_HOME they read when
it holds nothing, and refuse an unknown tenant or reason code in one line.

The run fails for a reason an operator meets: the hub (Atlan) is unreachable."""

from __future__ import annotations

import getpass
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lily_dagster_tests.contract import outside
from lily_dagster_tests.support.envelopes import envelope

TABLES = 4
SMALL = 200  # LILY_MAX_EVENT_BYTES of the backfill: every table is `oversized`


def tables() -> str:
    lines = []
    for n in range(TABLES):
        table = envelope(
            f"default/snowflake/1700000000/OPS/RAW/T{n}",
            event_id=f"ops-{n}",
            event_time="2026-01-01T00:00:00Z",
            attributes={"description": "x" * SMALL},
        )
        lines.append(json.dumps(table))
    return "\n".join(lines) + "\n"


def error_line(proc: Any) -> str:
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("lily: error: "), line
    return str(line)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return outside.clean_environment(LILY_HOME=str(tmp_path / "home"))


def test_commands_name_the_home_they_read_and_refuse_unknowns(
    env: dict[str, str], tmp_path: Path
) -> None:
    elsewhere = outside.clean_environment()
    for args in (("hub", "export"), ("quarantine", "export"), ("batches", "list")):
        proc = outside.lily(*args, "--tenant", "acme", env=elsewhere, cwd=tmp_path)
        assert proc.returncode != 0 and proc.stdout == ""
        assert f"LILY_HOME={tmp_path / '.lily'}" in error_line(proc)
    source = tmp_path / "tables.jsonl"
    source.write_text(tables())
    small = {**env, "LILY_MAX_EVENT_BYTES": str(SMALL)}
    outside.lily_ok("backfill", "--tenant", "acme", "--source", str(source), env=small)
    proc = outside.lily("quarantine", "export", "--tenant", "globex", env=env)
    assert proc.returncode != 0 and "unknown tenant 'globex'" in error_line(proc)
    assert env["LILY_HOME"] in proc.stderr
    proc = outside.lily("quarantine", "replay", "--tenant", "acme", "--reason", "big", env=env)
    line = error_line(proc)
    assert proc.returncode != 0 and "unknown reason code 'big'" in line
    assert "oversized" in line and "discarded_by_operator" in line


def test_a_failed_run_s_batch_is_listed_released_and_discarded(
    env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "tables.jsonl"
    source.write_text(tables())
    small = {**env, "LILY_MAX_EVENT_BYTES": str(SMALL)}
    outside.lily_ok("backfill", "--tenant", "acme", "--source", str(source), env=small)
    assert len(outside.quarantine_export(env, "acme")) == TABLES

    hub_down = {
        **env,
        "LILY_HUB": "atlan",
        "ATLAN_BASE_URL": f"http://127.0.0.1:{outside.free_port()}",
        "ATLAN_API_KEY": "key",
        "LILY_HUB_RETRIES": "0",
        "LILY_ATLAN_RETRIES": "0",
    }
    proc = outside.lily("quarantine", "replay", "--tenant", "acme", env=hub_down, timeout=120)
    assert proc.returncode == 1
    (summary_line,) = proc.stdout.strip().splitlines()
    summary = json.loads(summary_line)
    assert summary["success"] is False and summary["replayed"] == TABLES
    line = error_line(proc)
    assert "Traceback" not in proc.stderr
    assert f"run {summary['run_id']} failed" in line and "step hub_records failed" in line
    assert (Path(env["LILY_HOME"]) / "logs" / "replay.log").stat().st_size > 0
    # The replay is in the tenant's audit log, by the CLI's user, from within its run.
    (entry,) = outside.json_lines(outside.lily_ok("audit", "export", "--tenant", "acme", env=env))
    assert (entry["action"], entry["sub"]) == ("quarantine.replay", f"cli:{getpass.getuser()}")
    assert entry["resource"] == f"quarantine@run:{summary['run_id']}"

    (batch,) = outside.json_lines(outside.lily_ok("batches", "list", "--tenant", "acme", env=env))
    assert (batch["state"], batch["run_id"], batch["run_status"]) == (
        "claimed",
        summary["run_id"],
        "FAILURE",
    )
    assert (batch["events"], batch["source"]) == (TABLES, "replay")
    batch_args = ("--tenant", "acme", "--batch", batch["batch_id"])
    released = json.loads(outside.lily_ok("batches", "release", *batch_args, env=env))
    assert released["released"] is True and released["run_id"] == summary["run_id"]
    (batch,) = outside.json_lines(outside.lily_ok("batches", "list", "--tenant", "acme", env=env))
    assert (batch["state"], batch["releases"]) == ("unclaimed", 1)

    discarded = json.loads(outside.lily_ok("batches", "discard", *batch_args, env=env))
    assert discarded["quarantined"] == TABLES
    assert outside.lily_ok("batches", "list", "--tenant", "acme", env=env) == ""
    after = outside.quarantine_export(env, "acme")
    assert Counter(e["reason"] for e in after) == {"discarded_by_operator": TABLES}
    assert sorted(e["event_id"] for e in after) == [f"ops-{n}" for n in range(TABLES)]
    proc = outside.lily("batches", "discard", *batch_args, env=env)
    assert proc.returncode != 0 and "discarded already" in error_line(proc)
