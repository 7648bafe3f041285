"""What a crash must not change, read as a user reads it: the hub and the quarantine through
`lily hub export` / `lily quarantine export`, and a webhook target's deliveries as its
receiver recorded them; each compared exactly with what the contract says."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections import defaultdict
from typing import Any

from lily_dagster.lib.demo import DemoTraffic
from lily_dagster.lib.staging import MAX_RELEASES
from lily_dagster_tests.support.receivers import RecordedRequest

LILY = [sys.executable, "-m", "lily_dagster.cli"]


def lily_lines(args: list[str], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """A `lily` command's JSON Lines output."""
    out = subprocess.run([*LILY, *args], capture_output=True, text=True, check=True, env=env)
    return [json.loads(line) for line in out.stdout.splitlines()]


def export(tenant: str, env: dict[str, str] | None = None) -> dict[str, dict[str, object]]:
    records = lily_lines(["hub", "export", "--tenant", tenant], env)
    return {r["qualified_name"]: {k: v for k, v in r.items() if k != "updated_at"} for r in records}


def quarantined(tenant: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """The tenant's quarantine as sorted distinct (payload text, reason)."""
    rows = lily_lines(["quarantine", "export", "--tenant", tenant], env)
    return sorted(
        {
            (
                r["raw"]
                if r["raw"] is not None
                else base64.b64decode(r["raw_base64"]).decode("utf-8", "replace"),
                r["reason"],
            )
            for r in rows
        }
    )


def release_batches_held_for_an_operator(tenants: list[str], env: dict[str, str]) -> list[str]:
    """What an operator does about batches whose runs died MAX_RELEASES times (one LILY_HOME
    killed round after round sweeps an earlier round's batches into later rounds' runs):
    `lily batches release` each one; the ids released."""
    released = []
    for tenant in tenants:
        listed = subprocess.run(
            [*LILY, "batches", "list", "--tenant", tenant], capture_output=True, text=True, env=env
        )
        if "unknown tenant" in listed.stderr:  # nothing of it was landed yet
            continue
        assert listed.returncode == 0, listed.stderr
        for line in listed.stdout.splitlines():
            batch = json.loads(line)
            if batch["state"] != "claimed" or batch["releases"] < MAX_RELEASES:
                continue
            args = ["batches", "release", "--tenant", tenant, "--batch", batch["batch_id"]]
            (answer,) = lily_lines(args, env)
            assert answer["released"] is True, answer
            released.append(batch["batch_id"])
    return released


def run_until_idle(env: dict[str, str]) -> dict[str, Any]:
    """`lily run --until-idle` to its end; its summary. Exit 1 is expected after a crash
    (the dead runs count as failed), anything else fails the test with its stderr."""
    done = subprocess.run(
        [*LILY, "run", "--until-idle", "--timeout", "240"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


Exports = dict[str, dict[str, dict[str, object]]]  # tenant -> `export`


def assert_exact(
    traffic: DemoTraffic, tenants: tuple[str, ...], env: dict[str, str] | None = None
) -> Exports:
    """Hub and quarantine of every tenant as the contract says; the hub exports read (a
    `lily` process each: callers checking more reuse them)."""
    expected = traffic.expected_state()
    exports = {tenant: export(tenant, env) for tenant in tenants}
    for tenant in tenants:
        assert exports[tenant] == expected[tenant], f"hub of {tenant}"
    for tenant, rows in traffic.expected_quarantine().items():
        if tenant in tenants:
            assert quarantined(tenant, env) == rows, f"quarantine of {tenant}"
    return exports


def deliveries_by_key(requests: list[RecordedRequest]) -> dict[str, dict[str, Any]]:
    """The distinct deliveries a receiver saw, by Idempotency-Key; a key sent again (a
    retry, or a re-send after a crash) must carry the same body."""
    seen: dict[str, dict[str, Any]] = {}
    for request in requests:
        key = request.header("Idempotency-Key")
        assert key, f"a delivery without Idempotency-Key: {request.body[:200]!r}"
        body = request.json()
        assert seen.setdefault(key, body) == body, f"key {key} re-sent with another body"
    return seen


def assert_delivered(requests: list[RecordedRequest], target: str, exports: Exports) -> None:
    """Every change of every hub record of the exported tenants reached the target (contract
    §5: at least once, in version order per record), counting each Idempotency-Key once:
    versions 1..n with none missing or repeated, and the last change is the hub record as it
    is (`exports`: each tenant's `export`, as `assert_exact` returns them)."""
    versions: dict[tuple[str, str], list[int]] = defaultdict(list)
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for body in deliveries_by_key(requests).values():
        assert body["target"] == target
        for change in body["changes"]:
            record = (body["tenant"], change["qualified_name"])
            versions[record].append(change["version"])
            last[record] = change
    for tenant, hub in exports.items():
        for qualified_name, record in hub.items():
            got = versions.get((tenant, qualified_name), [])
            where = f"{tenant}/{qualified_name}"
            assert got == list(range(1, len(got) + 1)) and got, f"{where}: versions {got}"
            change = last[(tenant, qualified_name)]
            assert (change["change"] == "archived") == (record["status"] == "DELETED"), where
            for field in ("name", "attributes", "classifications"):
                assert change[field] == record[field], f"{where}: {field}"
        extra = {qn for t, qn in versions if t == tenant} - set(hub)
        assert not extra, f"{tenant}: delivered records the hub does not hold: {sorted(extra)}"
