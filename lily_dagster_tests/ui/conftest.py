"""The browser suite's stack and browser: ONE `lily dev` per module (its own LILY_HOME, free
ports, no demo traffic) fed a known workload (`workload.py`), and Debian's Chromium driven
by Playwright. Nothing is downloaded at test time: the browser is /usr/bin/chromium (`make
setup` installs Debian's package when it can); without it the browser tests are skipped
with a message naming it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from lily_dagster_tests.chaos import proctree
from lily_dagster_tests.contract import outside
from lily_dagster_tests.ui.workload import (
    BLOCK_MIN_EVENTS,
    CONFIG,
    TENANTS,
    Workload,
    comparable,
    config_text,
    generate,
)
from lily_dagster_tests.xdist_groups import keep_on_one_worker

CHROMIUM = Path(os.environ.get("LILY_UI_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOPIC = "lily.metadata.events"  # the default LILY_KAFKA_TOPICS
JWT_SECRET = "ui-suite-hs256-secret-0123456789abcdef0123"
START_TIMEOUT_S = 120
INGEST_TIMEOUT_S = 120
SCREENSHOTS = Path("/tmp")


def screenshot_path(name: str) -> str:
    return str(SCREENSHOTS / f"ui-{name}.png")


def processes_with_home(home: Path) -> list[proctree.Proc]:
    """Live processes whose environment has LILY_HOME=home (every process of the stack)."""
    return proctree.with_env("LILY_HOME", str(home))


def graphql(ui_url: str, query: str, variables: dict[str, Any] | None = None) -> Any:
    response = httpx.post(
        f"{ui_url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
    )
    response.raise_for_status()
    body = response.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@dataclass
class Stack:
    """A running `lily dev` and what the tests need to talk to it."""

    root: Path
    home: Path
    config: Path
    env: dict[str, str]
    mark: str
    lily: proctree.Lily
    ui_port: int
    webhook_port: int
    broker_port: int
    workload: Workload
    timings: dict[str, float] = field(default_factory=dict)
    replayed: bool = False  # a quarantine replay of the fixed config has been applied
    stopped: bool = False

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def ports(self) -> tuple[int, int, int]:
        return (self.ui_port, self.webhook_port, self.broker_port)

    def hub(self, tenant: str) -> dict[str, dict[str, Any]]:
        return {r["qualified_name"]: comparable(r) for r in outside.hub_export(self.env, tenant)}

    def quarantine(self, tenant: str) -> list[dict[str, Any]]:
        return outside.quarantine_export(self.env, tenant)

    def write_config(self, config: dict[str, Any]) -> None:
        self.config.write_text(config_text(config))

    def location(self) -> str:
        data = graphql(
            self.ui, "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
        )
        (entry,) = data["workspaceOrError"]["locationEntries"]
        return str(entry["name"])


def _stack_ready(stack: Stack) -> bool:
    if not (
        http_ok(f"http://127.0.0.1:{stack.webhook_port}/healthz")
        and http_ok(f"{stack.ui}/server_info")
    ):
        return False
    lines = [p.cmdline for p in proctree.family(stack.lily.pid)]
    if not any("dagster._daemon" in line for line in lines):
        return False
    try:  # the code location loaded, with the ingest assets
        data = graphql(stack.ui, "{ assetNodes { assetKey { path } } }")
    except (httpx.HTTPError, AssertionError, ValueError):
        return False
    return any(n["assetKey"]["path"] == ["hub_records"] for n in data["assetNodes"])


def _ingested(stack: Stack) -> str | None:
    """None once every tenant's hub and quarantine are as the workload says; else what
    still differs."""
    for tenant in TENANTS:
        try:  # (an export may refuse a tenant no event has reached yet)
            hub, held = stack.hub(tenant), len(stack.quarantine(tenant))
        except AssertionError as exc:
            return str(exc)
        expected = stack.workload.expected_hub(tenant)
        if hub != expected:
            differ = sorted(
                k for k in hub.keys() | expected.keys() if hub.get(k) != expected.get(k)
            )
            return f"{tenant}: {len(hub)} hub records, {len(expected)} expected; differ: {differ}"
        if held != stack.workload.quarantined[tenant]:
            return f"{tenant}: {held} quarantined, expected {stack.workload.quarantined[tenant]}"
    return None


def stop_stack(stack: Stack) -> None:
    """SIGTERM to `lily dev`, SIGKILL to its group after a grace, then to every process
    still carrying the stack's mark (whatever group or session it ended up in)."""
    proc = stack.lily.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proctree.kill_marked(stack.mark)
    stack.stopped = True


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = time.monotonic()
    root = tmp_path_factory.mktemp("ui")
    config = root / "lily.yaml"
    config.write_text(config_text(CONFIG))
    home = root / "home"
    mark = uuid.uuid4().hex
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(outside.free_port())
    ui_port, webhook_port, broker_port = sorted(ports)
    env = outside.clean_environment(
        LILY_HOME=str(home),
        LILY_CONFIG=str(config),
        LILY_JWT_HS256_SECRET=JWT_SECRET,
        LILY_BLOCK_MIN_EVENTS=str(BLOCK_MIN_EVENTS),
        **{proctree.MARK_VAR: mark},
    )
    args = ["dev", "--no-demo", "--port", str(ui_port), "--webhook-port", str(webhook_port)]
    lily = proctree.Lily([*args, "--broker-port", str(broker_port)], env, root / "dev.log")
    stack = Stack(
        root=root,
        home=home,
        config=config,
        env=env,
        mark=mark,
        lily=lily,
        ui_port=ui_port,
        webhook_port=webhook_port,
        broker_port=broker_port,
        workload=generate(),
    )
    try:
        lily.wait_for(lambda: _stack_ready(stack), START_TIMEOUT_S, "serving the UI")
        stack.timings["start_s"] = time.monotonic() - started
        outside.produce(f"127.0.0.1:{broker_port}", TOPIC, stack.workload.messages)
        deadline = time.monotonic() + INGEST_TIMEOUT_S
        while (differs := _ingested(stack)) is not None:
            assert lily.proc.poll() is None, f"`lily dev` exited:\n{lily.output()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"the workload was not processed within {INGEST_TIMEOUT_S} s: {differs}"
            )
            time.sleep(1)
        stack.timings["ingest_s"] = time.monotonic() - started - stack.timings["start_s"]
        yield stack
    finally:
        stop_stack(stack)
        left = processes_with_home(home)
        timings = json.dumps({k: round(v, 1) for k, v in stack.timings.items()})
        print(f"\nui stack timings: {timings}, {time.monotonic() - started:.0f} s in all")
        assert not left, f"processes of the stack left behind: {proctree.describe(left)}"


# --- the browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: the UI tests drive Debian's chromium "
            "(`apt-get install chromium`, which `make setup` runs as root)"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    playwright = sync_api.sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(browser: Any, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context's page (no launchpad sessions or local state kept), 30 s
    timeouts; its screenshot at /tmp/ui-failed-<test>.png when the test fails."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        if request.node.stash.get(_FAILED, False):
            with contextlib.suppress(Exception):
                page.screenshot(path=screenshot_path(f"failed-{request.node.name}"))
        context.close()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `make test` (`--dist loadgroup`) the UI suite runs on one worker, so that its
    stack is started once."""
    keep_on_one_worker(config, items, Path(__file__).parent)
