"""One scenario per hub, driven from outside as a user would (CONTRACT.md §1 to §5).

For each hub (`local`, `atlan`): `lily broker`, `lily webhook serve` (and for Atlan `lily
atlan-emulator`) as processes, a loopback webhook target, a LILY_CONFIG file; the workload
(`workload.py`) produced to Kafka and posted to the receiver with tokens from `lily token`;
then ONE `lily run --until-idle` and the exports; then everything again (Kafka in reverse
order) plus late stale events and two new changes per tenant, a second `lily run
--until-idle` and the exports again.
The tests read what was recorded; the receiver stays up for the HTTP tests."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from lily_dagster_tests.contract import outside
from lily_dagster_tests.contract.outside import Delivery, IdleRun, WebhookTarget
from lily_dagster_tests.contract.workload import (
    BOUND_TENANT,
    BOUND_TOPIC,
    MAX_EVENT_BYTES,
    SHARED_TOPIC,
    TENANTS,
    UNROUTED,
    WebhookPost,
    Workload,
    generate,
)
from lily_dagster_tests.xdist_groups import keep_on_one_worker

HUBS = ("local", "atlan")
JWT_SECRET = "contract-suite-hs256-secret-0123456789abcdef"
AUDIT_SECRET = "contract-audit-hook-secret"
ACME_SECRET = "contract-acme-hook-secret"
EMULATOR_KEY = "contract-emulator-key"
MAX_BODY_BYTES = 1_000_000
# The webhook target's paths: every tenant (its first request answered 503, so a retry
# happens), acme only, and one that refuses everything of initech with a 4xx.
ALL_PATH, ACME_PATH, REFUSE_PATH = "/hooks/all", "/hooks/acme", "/hooks/refuse"
TARGET_SECRETS = {ALL_PATH: AUDIT_SECRET, ACME_PATH: ACME_SECRET, REFUSE_PATH: ACME_SECRET}
TARGET_TENANTS = {ALL_PATH: TENANTS, ACME_PATH: ("acme",), REFUSE_PATH: ("initech",)}
TARGET_NAMES = {ALL_PATH: "audit-all", ACME_PATH: "audit-acme", REFUSE_PATH: "refusing"}
RUN_TIMEOUT_S = 240
QUARANTINES = (*TENANTS, UNROUTED)


@dataclass
class Answer:
    """The receiver's answer to one POST of the workload."""

    post: WebhookPost
    status: int
    body: Any


@dataclass
class Snapshot:
    """The outputs of the export commands at one moment, as text. The tests parse them
    leniently (NaN and Infinity accepted), so that a line that is not strict JSON fails the
    test of that rule only, not every test that reads the export."""

    hub: dict[str, str] = field(default_factory=dict)
    quarantine: dict[str, str] = field(default_factory=dict)
    atlan: list[dict[str, Any]] | None = None


@dataclass
class Scenario:
    hub: str
    env: dict[str, str]
    home: Path
    workload: Workload
    webhook_url: str
    atlan_url: str | None
    target: WebhookTarget
    answers: list[Answer]  # to the workload's posts
    answers2: list[Answer]  # to the same posts again, before run 2
    fresh_answers: list[Answer]  # to the posts of new changes, before run 2
    run1: IdleRun
    deliveries1: list[Delivery]  # what the target had received when run 1 returned
    after1: Snapshot
    run2: IdleRun
    deliveries2: list[Delivery]  # ... when run 2 returned (run 1's included)
    after2: Snapshot

    def hub_records(self, tenant: str, snapshot: Snapshot | None = None) -> list[dict[str, Any]]:
        return outside.json_lines((snapshot or self.after1).hub[tenant], strict=False)

    def hub_by_name(self, tenant: str, snapshot: Snapshot | None = None) -> dict[str, Any]:
        records = self.hub_records(tenant, snapshot)
        by_name = {r["qualified_name"]: r for r in records}
        assert len(by_name) == len(records), f"{tenant}: a qualified name exported twice"
        return by_name

    def quarantined(self, tenant: str) -> list[dict[str, Any]]:
        return outside.json_lines(self.after1.quarantine[tenant], strict=False)


def write_config(path: Path, target: WebhookTarget) -> None:
    """LILY_CONFIG: globex bound to its own topic, three webhook targets."""
    config = {
        "tenants": [
            {"name": "acme"},
            {"name": BOUND_TENANT, "kafka_topics": [BOUND_TOPIC]},
            {"name": "initech"},
        ],
        "targets": [
            {
                "name": TARGET_NAMES[ALL_PATH],
                "type": "webhook",
                "url": target.url(ALL_PATH),
                "secret_env": "CONTRACT_AUDIT_SECRET",
                "batch_size": 20,
                "backoff_s": 0.2,
            },
            {
                "name": TARGET_NAMES[ACME_PATH],
                "type": "webhook",
                "url": target.url(ACME_PATH),
                "secret_env": "CONTRACT_ACME_SECRET",
                "tenants": ["acme"],
            },
            {
                "name": TARGET_NAMES[REFUSE_PATH],
                "type": "webhook",
                "url": target.url(REFUSE_PATH),
                "secret_env": "CONTRACT_ACME_SECRET",
                "tenants": ["initech"],
            },
        ],
    }
    # JSON is YAML: no YAML library needed to write it.
    path.write_text(json.dumps(config, indent=2))


def post_workload(url: str, tokens: dict[str, str], posts: list[WebhookPost]) -> list[Answer]:
    answers = []
    with httpx.Client(timeout=60) as client:
        for post in posts:
            response = client.post(
                f"{url}/v1/tenants/{post.tenant}/events",
                content=json.dumps(post.body).encode(),
                headers={
                    "Authorization": f"Bearer {tokens[post.tenant]}",
                    "Content-Type": "application/json",
                },
            )
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            answers.append(Answer(post, response.status_code, body))
    return answers


def _export(env: dict[str, str], *args: str) -> str:
    """stdout of an export command; when it fails, a line saying so (which no test reading
    the export will take for JSON), so that only those tests fail."""
    proc = outside.lily(*args, env=env)
    if proc.returncode != 0:
        return f"<`lily {' '.join(args)}` exited {proc.returncode}: {proc.stderr[-1000:]}>\n"
    return proc.stdout


def snapshot(env: dict[str, str], atlan_url: str | None) -> Snapshot:
    snap = Snapshot()
    for tenant in TENANTS:
        snap.hub[tenant] = _export(env, "hub", "export", "--tenant", tenant)
    for tenant in QUARANTINES:
        snap.quarantine[tenant] = _export(env, "quarantine", "export", "--tenant", tenant)
    if atlan_url is not None:
        snap.atlan = outside.emulator_entities(atlan_url)
    return snap


@contextlib.contextmanager
def scenario_of(hub: str, root: Path, seed: int) -> Iterator[Scenario]:
    root.mkdir(parents=True, exist_ok=True)
    workload = generate(seed)
    with outside.processes() as started, WebhookTarget(first_answers={ALL_PATH: [503]}) as target:
        target.always[REFUSE_PATH] = 400
        broker_port, webhook_port = outside.free_port(), outside.free_port()
        config = root / "lily.yaml"
        write_config(config, target)
        env = outside.clean_environment(
            LILY_HOME=str(root / "home"),
            LILY_CONFIG=str(config),
            LILY_KAFKA_BOOTSTRAP=f"127.0.0.1:{broker_port}",
            LILY_KAFKA_TOPICS=f"{SHARED_TOPIC},{BOUND_TOPIC}",
            LILY_JWT_HS256_SECRET=JWT_SECRET,
            LILY_MAX_EVENT_BYTES=str(MAX_EVENT_BYTES),
            LILY_WEBHOOK_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
            CONTRACT_AUDIT_SECRET=AUDIT_SECRET,
            CONTRACT_ACME_SECRET=ACME_SECRET,
            LILY_HUB=hub,
        )
        atlan_url = None
        if hub == "atlan":
            port = outside.free_port()
            started.append(
                outside.start_atlan_emulator(port, EMULATOR_KEY, env, root / "emulator.log")
            )
            atlan_url = f"http://127.0.0.1:{port}"
            env.update(
                ATLAN_BASE_URL=atlan_url, ATLAN_API_KEY=EMULATOR_KEY, LILY_ATLAN_BACKOFF_S="0.05"
            )
        started.append(outside.start_broker(broker_port, env, root / "broker.log"))
        started.append(outside.start_webhook(webhook_port, env, root / "webhook.log"))
        webhook_url = f"http://127.0.0.1:{webhook_port}"
        bootstrap = env["LILY_KAFKA_BOOTSTRAP"]

        tokens = {t: outside.token(env, t, "lily:ingest") for t in TENANTS}
        answers = post_workload(webhook_url, tokens, workload.posts)
        for topic, messages in workload.kafka.items():
            outside.produce(bootstrap, topic, messages)
        run1 = outside.run_until_idle(env, RUN_TIMEOUT_S)
        deliveries1 = target.received(before=run1.returned_at)
        after1 = snapshot(env, atlan_url)

        # Everything again, Kafka in reverse order, then the late stale events.
        answers2 = post_workload(webhook_url, tokens, workload.posts)
        for topic, messages in workload.kafka.items():
            outside.produce(bootstrap, topic, messages[::-1])
        for topic, messages in workload.late_kafka.items():
            outside.produce(bootstrap, topic, messages)
        fresh_answers = post_workload(webhook_url, tokens, workload.fresh_posts)
        for topic, messages in workload.fresh_kafka.items():
            outside.produce(bootstrap, topic, messages)
        run2 = outside.run_until_idle(env, RUN_TIMEOUT_S)
        deliveries2 = target.received(before=run2.returned_at)
        after2 = snapshot(env, atlan_url)

        yield Scenario(
            hub=hub,
            env=env,
            home=root / "home",
            workload=workload,
            webhook_url=webhook_url,
            atlan_url=atlan_url,
            target=target,
            answers=answers,
            answers2=answers2,
            fresh_answers=fresh_answers,
            run1=run1,
            deliveries1=deliveries1,
            after1=after1,
            run2=run2,
            deliveries2=deliveries2,
            after2=after2,
        )


class Scenarios:
    """Each hub's scenario, built once, at the first test that asks for one; both are
    built side by side then (they wait mostly on Dagster's sensor ticks)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stack = contextlib.ExitStack()
        self.built: dict[str, Scenario] = {}
        self.failed: dict[str, BaseException] = {}
        self.lock = threading.Lock()
        self.lock_exits = threading.Lock()

    def _build(self, hub: str, seed: int) -> None:
        try:
            manager = scenario_of(hub, self.root / hub, seed)
            scenario = manager.__enter__()
            with self.lock_exits:
                self.stack.push(manager.__exit__)
            self.built[hub] = scenario
        except BaseException as exc:
            self.failed[hub] = exc

    def get(self, hub: str) -> Scenario:
        with self.lock:
            if hub not in self.built and hub not in self.failed:
                threads = [
                    threading.Thread(target=self._build, args=(h, seed), daemon=True)
                    for seed, h in enumerate(HUBS)
                    if h not in self.built and h not in self.failed
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
        if hub in self.failed:
            raise self.failed[hub]
        return self.built[hub]


@pytest.fixture(scope="package")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenarios]:
    built = Scenarios(tmp_path_factory.mktemp("contract"))
    try:
        with built.stack:
            yield built
    finally:
        outside.stop_all()  # whatever a build interrupted half-way had started


@pytest.fixture(scope="package", params=HUBS)
def scenario(request: pytest.FixtureRequest, scenarios: Scenarios) -> Scenario:
    """The scenario of each hub (tests using it run once per hub)."""
    return scenarios.get(request.param)


@pytest.fixture(scope="package")
def local(scenarios: Scenarios) -> Scenario:
    """The embedded hub's scenario, for what does not depend on the hub (HTTP answers)."""
    return scenarios.get("local")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `make test` (pytest-xdist, `--dist loadgroup`) the tests of the shared scenarios
    run on one worker, so its two stacks are built once (~1.5 min of CPU saved); a module
    with a stack of its own is a group of its own, free to run on the other worker."""
    keep_on_one_worker(config, items, Path(__file__).parent, fixture="scenarios")
