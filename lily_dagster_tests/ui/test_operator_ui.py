"""The operator's day in the Dagster UI (issue 14), in a real browser against a real `lily
dev`: the ingest chain on the asset graph, each tenant's check outcomes, a backfill of
hub_records and a quarantine replay launched by clicking, and the stack stopped by SIGTERM.

Launches are clicks in the UI; Dagster's GraphQL API is used only to wait for what they
started and to read it back, and the exports (`lily hub export`, `lily quarantine export`)
say what the hub and the quarantine hold. Screenshots go to /tmp/ui-*.png."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from typing import Any

import pytest

from lily_dagster_tests.chaos import proctree
from lily_dagster_tests.contract import outside
from lily_dagster_tests.ui.conftest import (
    Stack,
    graphql,
    processes_with_home,
    screenshot_path,
)
from lily_dagster_tests.ui.workload import FIXED_CONFIG, REPLAY_TENANT, TENANTS

CHAIN = ("landed_events", "validated_events", "enriched_events", "hub_records")
GROUP = "ingest"
CHECK = "validation_rules"
# Dagster's backfill daemon looks every 30 s: two looks, plus the runs. A UI run of
# hub_records also runs its two checks (GX, freshness), each a step process of its own: on
# a loaded 2-core CI machine such a run took 116 s (the backfill completed at 150 s).
BACKFILL_TIMEOUT_S = 300
RUN_TIMEOUT_S = 120
TERMINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}


def expect(target: Any, message: str | None = None) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target, message)


def node_box(page: Any, name: str) -> dict[str, float]:
    """The SVG box (x, y, width, height) of the graph's node titled `name`: an asset node
    or a group box."""
    box = page.locator(f"svg [data-tooltip='{name}']").first.evaluate(
        """e => { const f = e.closest('foreignObject');
                  return {x: +f.getAttribute('x'), y: +f.getAttribute('y'),
                          width: +f.getAttribute('width'), height: +f.getAttribute('height')}; }"""
    )
    return {k: float(v) for k, v in box.items()}


def group_box(page: Any, group: str) -> dict[str, float] | None:
    """The box of the expanded group `group` on the lineage graph (the largest box whose
    title is the group's name), or None."""
    boxes = page.locator("svg foreignObject").evaluate_all(
        """(fs, name) => fs
            .filter(f => (f.textContent || '').trim() === name)
            .map(f => ({x: +f.getAttribute('x'), y: +f.getAttribute('y'),
                        width: +f.getAttribute('width'), height: +f.getAttribute('height')}))""",
        group,
    )
    if not boxes:
        return None
    return max(boxes, key=lambda b: b["width"] * b["height"])


def inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    return (
        outer["x"] <= inner["x"]
        and outer["y"] <= inner["y"]
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"]
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"]
    )


def asset_groups(stack: Stack) -> dict[str, str]:
    data = graphql(stack.ui, "{ assetNodes { assetKey { path } groupName } }")
    return {"/".join(n["assetKey"]["path"]): n["groupName"] for n in data["assetNodes"]}


def wait_for_run(stack: Stack, run_id: str, timeout_s: float = RUN_TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        data = graphql(
            stack.ui,
            "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }",
            {"id": run_id},
        )
        status = str(data["runOrError"].get("status"))
        if status in TERMINAL_RUN or time.monotonic() > deadline:
            return status
        time.sleep(1)


def run_failures(stack: Stack, run_id: str) -> list[str]:
    """The messages of a run's failure events, with their errors (for assertion messages)."""
    data = graphql(
        stack.ui,
        """query($id: ID!) { logsForRun(runId: $id, limit: 1000) { ... on EventConnection {
             events { __typename ... on MessageEvent { message }
               ... on ExecutionStepFailureEvent { error { message } } } } } }""",
        {"id": run_id},
    )
    events = data["logsForRun"].get("events") or []
    return [
        " ".join(
            str(part).strip()[:600]
            for part in (e.get("message"), (e.get("error") or {}).get("message"))
            if part
        )
        for e in events
        if "Failure" in e["__typename"] or "Failed" in e["__typename"]
    ]


def wait_for_backfill(stack: Stack, backfill_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    while True:
        data = graphql(
            stack.ui,
            """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
                 __typename ... on PartitionBackfill { status numPartitions
                   runs { runId status tags { key value } } } } }""",
            {"id": backfill_id},
        )
        backfill = data["partitionBackfillOrError"]
        status = backfill.get("status")
        if status not in ("REQUESTED", None) or time.monotonic() > deadline:
            return dict(backfill)
        time.sleep(2)


# --- 1. the asset graph ---------------------------------------------------------------------


def test_the_ingest_chain_is_one_group_on_the_asset_graph(page: Any, stack: Stack) -> None:
    page.goto(stack.ui)
    page.get_by_role("link", name="Lineage").first.click()
    page.wait_for_url(re.compile(r"/asset-groups"))
    group = page.locator(f"svg [data-tooltip='{GROUP}']")
    expect(group.first).to_be_visible(timeout=60_000)
    page.screenshot(path=screenshot_path("1-lineage"))
    groups = asset_groups(stack)
    assert {a: groups.get(a) for a in CHAIN} == dict.fromkeys(CHAIN, GROUP), (
        "the ingest chain is split over groups, so the graph shows it collapsed in several "
        f"boxes: {', '.join(f'{a} in {groups.get(a)!r}' for a in CHAIN)}"
    )
    # Expanding the group shows the whole chain inside it.
    group.first.click()
    for asset in CHAIN:
        expect(page.locator(f"svg [data-tooltip='{asset}']").first).to_be_attached()
    box = group_box(page, GROUP)
    assert box is not None, f"no expanded group box titled {GROUP!r}"
    outside_group = [a for a in CHAIN if not inside(node_box(page, a), box)]
    assert not outside_group, f"shown outside the {GROUP!r} group: {outside_group}"
    page.screenshot(path=screenshot_path("1-lineage-expanded"))

    # The group's own lineage page: the four nodes on screen, upstream to the left.
    page.goto(f"{stack.ui}/locations/{stack.location()}/asset-groups/{GROUP}")
    nodes = [page.locator(f"svg [data-tooltip='{a}']").first for a in CHAIN]
    for node in nodes:
        expect(node).to_be_in_viewport(timeout=60_000)
    page.screenshot(path=screenshot_path("1-ingest-group"))
    xs = [node_box(page, a)["x"] for a in CHAIN]
    assert xs == sorted(xs) and len(set(xs)) == len(xs), (
        f"the chain is not laid out upstream to downstream: {dict(zip(CHAIN, xs, strict=True))}"
    )


# --- 4. each tenant's check outcome ---------------------------------------------------------


def check_state(stack: Stack, check: str) -> str:
    """What Dagster holds of a check of validated_events: each tenant's partition status
    and its latest executions (for assertion messages)."""
    data = graphql(
        stack.ui,
        """query($check: String!) {
             assetNodeOrError(assetKey: {path: ["validated_events"]}) { ... on AssetNode {
               assetChecksOrError { ... on AssetChecks { checks { name partitionStatuses {
                 ... on AssetCheckDefaultPartitionStatuses { succeededPartitions
                   failedPartitions inProgressPartitions skippedPartitions
                   executionFailedPartitions } } } } } } }
             assetCheckExecutions(assetKey: {path: ["validated_events"]}, checkName: $check,
                                  limit: 10) {
               runId status partition evaluation { success targetMaterialization { runId } }
             } }""",
        {"check": check},
    )
    checks = data["assetNodeOrError"]["assetChecksOrError"]["checks"]
    statuses = next(c["partitionStatuses"] for c in checks if c["name"] == check)
    executions = [
        f"{e['partition']}: {e['status']} in run {e['runId'][:8]}, target "
        f"{((e.get('evaluation') or {}).get('targetMaterialization') or {}).get('runId')}"
        for e in data["assetCheckExecutions"]
    ]
    return f"partition statuses {statuses}; latest executions {executions}"


def open_check(page: Any, stack: Stack, check: str) -> None:
    page.goto(f"{stack.ui}/assets/validated_events?view=checks")
    page.get_by_text(check, exact=True).first.click()
    expect(page.get_by_role("tab", name="Execution history")).to_be_visible()


def test_a_check_of_validated_events_shows_each_tenants_evaluation(page: Any, stack: Stack) -> None:
    open_check(page, stack, CHECK)
    page.locator("button[role=tab]", has_text="Execution history").click()
    rows = page.get_by_role("row")
    expect(rows.filter(has_text="Passed").first).to_be_visible()
    page.screenshot(path=screenshot_path("4-check-history"))
    for tenant in TENANTS:
        row = rows.filter(has=page.get_by_role("cell", name=tenant, exact=True))
        expect(row.first, f"no evaluation row of {CHECK} for {tenant}").to_be_visible()
        expect(row.first).to_contain_text("Passed")


def test_a_check_of_validated_events_shows_each_tenants_partition_status(
    page: Any, stack: Stack
) -> None:
    """The check's Partitions tab: each tenant partition with its latest outcome (passed),
    not "missing" (as when the evaluation does not target the partition's materialisation)."""
    open_check(page, stack, CHECK)
    tab = page.locator("button[role=tab]", has_text="Partitions")
    assert tab.count() == 1, (
        f"{CHECK} has no Partitions tab (not partitioned per tenant); {check_state(stack, CHECK)}"
    )
    tab.click()
    summary = page.get_by_text(re.compile(r"^\d+ Partitions Selected$"))
    expect(summary).to_be_visible()
    for tenant in TENANTS:
        expect(page.get_by_text(tenant, exact=True).first).to_be_visible()
    page.screenshot(path=screenshot_path("4-check-partitions"))
    counts = page.get_by_text(re.compile(r"^(Passed|Missing) \(\d+\)$"))
    try:
        expect(counts).to_have_text(["Missing (0)", f"Passed ({len(TENANTS)})"])
    except AssertionError as exc:
        raise AssertionError(
            f"the Partitions tab of {CHECK} shows {counts.all_inner_texts()}, expected every "
            f"tenant passed; {check_state(stack, CHECK)}"
        ) from exc


# --- 2. a backfill of hub_records -----------------------------------------------------------


def test_a_backfill_of_hub_records_for_every_tenant_from_the_ui(page: Any, stack: Stack) -> None:
    page.goto(f"{stack.ui}/assets/hub_records")
    page.get_by_role("button", name="Materialize…").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Launch runs to materialize hub_records")
    dialog.get_by_role("button", name="All", exact=True).click()
    expect(dialog).to_contain_text(f"{len(TENANTS)} partitions")
    page.screenshot(path=screenshot_path("2-backfill-dialog"))
    with page.expect_response(
        lambda r: "/graphql" in r.url and "LaunchPartitionBackfill" in (r.request.post_data or "")
    ) as launched:
        dialog.get_by_role("button", name="Launch backfill").click()
    answer = launched.value.json()["data"]["launchPartitionBackfill"]
    assert answer["__typename"] == "LaunchBackfillSuccess", answer
    backfill_id = answer["backfillId"]
    expect(page.get_by_text(f"Created backfill {backfill_id}")).to_be_visible()

    started = time.monotonic()
    backfill = wait_for_backfill(stack, backfill_id)
    stack.timings["backfill_s"] = time.monotonic() - started
    runs = backfill.get("runs") or []
    partitions = sorted(
        t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition"
    )
    failed = {r["runId"]: run_failures(stack, r["runId"]) for r in runs if r["status"] != "SUCCESS"}
    assert backfill.get("status") == "COMPLETED_SUCCESS", (
        f"backfill {backfill_id}: {backfill.get('status')} after "
        f"{time.monotonic() - started:.0f} s; runs not succeeded: {failed}"
    )
    assert partitions == sorted(TENANTS), partitions

    page.goto(f"{stack.ui}/runs/b/{backfill_id}")
    expect(page.get_by_text("Succeeded", exact=True).first).to_be_visible()
    expect(page.get_by_text("100% completed")).to_be_visible()
    page.screenshot(path=screenshot_path("2-backfill-done"))
    for tenant in TENANTS:
        assert stack.hub(tenant) == stack.workload.expected_hub(tenant, stack.replayed), tenant


# --- 3. a quarantine replay from the launchpad ----------------------------------------------


def test_a_quarantine_replay_from_the_launchpad_applies_the_fixed_part(
    page: Any, stack: Stack
) -> None:
    tenant = REPLAY_TENANT
    before = stack.quarantine(tenant)
    assert len(before) == stack.workload.quarantined[tenant], [q["reason"] for q in before]
    # The operator's fix: the tenant's Processes without lineage are fine after all.
    stack.write_config(FIXED_CONFIG)

    # Jobs → quarantine_replay_job → ▾ (beside "Materialize all…") → Open launchpad; an
    # asset job's launchpad opens as a dialog in Dagster 1.13.
    page.goto(stack.ui)
    page.get_by_role("link", name="Jobs").first.click()
    page.get_by_text("quarantine_replay_job", exact=True).first.click()
    page.wait_for_url(re.compile(r"/jobs/quarantine_replay_job"))
    expect(page.get_by_role("button", name="Materialize all…")).to_be_visible()
    page.locator("button:has([aria-label='arrow_drop_down'])").last.click()
    page.get_by_role("menuitem", name="Open launchpad").click()
    # The modal only: the menu's popover, closing, is a dialog too and says "launchpad".
    launchpad = page.locator("[role=dialog][aria-modal=true]").filter(has_text="Launchpad")
    expect(launchpad).to_be_visible()
    partition = launchpad.get_by_placeholder("Partition")
    partition.click()
    partition.fill(tenant)
    page.get_by_role("menuitem", name=tenant, exact=True).click()
    # The job's own config for the partition: a replay of every reason.
    editor = launchpad.locator(".CodeMirror").first
    expect(editor).to_contain_text("replay: true")
    expect(editor).to_contain_text("replay_reasons: []")
    page.screenshot(path=screenshot_path("3-launchpad"))
    with page.expect_response(
        lambda r: "/graphql" in r.url and "LaunchPipelineExecution" in (r.request.post_data or "")
    ) as launched:
        launchpad.get_by_role("button", name=re.compile(r"(Materialize|Launch Run)$")).click()
    answer = launched.value.json()["data"]["launchPipelineExecution"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    assert answer["run"]["pipelineName"] == "quarantine_replay_job", answer
    run_id = answer["run"]["id"]
    page.wait_for_url(re.compile(rf"/runs/{run_id}"))

    status = wait_for_run(stack, run_id)
    if status != "SUCCESS":
        page.screenshot(path=screenshot_path("3-replay-run"))
    assert status == "SUCCESS", (
        f"the replay run {run_id} of {tenant} ended {status}: {run_failures(stack, run_id)}"
    )
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=30_000)
    page.screenshot(path=screenshot_path("3-replay-run"))
    stack.replayed = True

    assert stack.hub(tenant) == stack.workload.expected_hub(tenant, replayed=True)
    after = stack.quarantine(tenant)
    fixed = {r["event_id"] for r in stack.workload.replayable.values()}
    kept = [q for q in before if q["event_id"] not in fixed]
    assert len(after) == stack.workload.still_invalid, [q["reason"] for q in after]
    assert sorted((q["raw"], q["reason"]) for q in after) == sorted(
        (q["raw"], q["reason"]) for q in kept
    )


# --- 5. the stack stops -----------------------------------------------------------------------


def test_sigterm_stops_the_whole_stack(stack: Stack) -> None:
    lily = stack.lily
    assert lily.proc.poll() is None, f"`lily dev` is not running:\n{lily.output()[-2000:]}"
    before = proctree.family(lily.pid)
    groups = {lily.pid} | {p.pgid for p in before}
    assert any("dagster" in p.cmdline for p in before), proctree.describe(before)
    sent = time.monotonic()
    os.kill(lily.pid, signal.SIGTERM)  # to `lily dev` alone, as `kill PID` does
    try:
        code = lily.proc.wait(30)
    except subprocess.TimeoutExpired:
        left = proctree.describe(proctree.family(lily.pid))
        raise AssertionError(f"`lily dev` still runs 30 s after SIGTERM: {left}") from None
    stack.timings["stop_s"] = time.monotonic() - sent
    stack.stopped = True
    assert code == 128 + signal.SIGTERM, f"exit status {code}:\n{lily.output()[-2000:]}"
    survivors = [p for p in before if proctree.still_alive(p)]
    assert not survivors, f"left after SIGTERM: {proctree.describe(survivors)}"
    # Its process group and those of its children (each started in its own) are empty.
    in_groups = [p for p in proctree.table().values() if p.alive and p.pgid in groups]
    assert not in_groups, f"left in the stack's process groups: {proctree.describe(in_groups)}"
    left = processes_with_home(stack.home)
    assert not left, f"processes with LILY_HOME={stack.home}: {proctree.describe(left)}"
    deadline = time.monotonic() + 5
    while (
        still := [p for p in stack.ports if outside.port_open(p)]
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not still, (
        f"ports still open after the stop: {still} (ui, webhook, broker: {stack.ports})"
    )
    with pytest.raises(Exception):  # noqa: B017 - the UI is gone
        graphql(stack.ui, "{ version }")
