"""kill -9 the webhook receiver during a burst: every event that got a 202 survives and
reaches the hub exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import jwt
from dagster import instance_for_test

from lily_dagster.defs.ingest.webhook_sensor import webhook_inbox_sensor
from lily_dagster.lib.broker import free_port
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.inbox.sqlite import SqliteInbox
from lily_dagster_tests import sensor_harness as harness
from lily_dagster_tests.support.envelopes import SCHEMA, envelope
from lily_dagster_tests.support.sealed import ciphers_at

SECRET = "durability-test-secret-0123456789abcdef"


def _serve(port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LILY_JWT_HS256_SECRET": SECRET, "LILY_WEBHOOK_RATE_PER_S": "100000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lily_dagster.cli", "webhook", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("webhook receiver did not start")


def _envelope(i: int) -> dict[str, object]:
    return envelope(f"{SCHEMA}/T{i:06d}", event_id=f"burst-{i:06d}", source="burst")


def test_every_acknowledged_event_survives_kill_9_and_reaches_the_hub_once(lily_home: Path) -> None:
    port = free_port()
    token = jwt.encode(
        {"scope": "lily:ingest", "tenant": "acme", "aud": "lily", "exp": time.time() + 600},
        SECRET,
        algorithm="HS256",
    )
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    url = f"http://127.0.0.1:{port}/v1/tenants/acme/events"
    acknowledged: set[str] = set()
    lock = threading.Lock()
    next_id = iter(range(1_000_000))
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=5) as http:
            while not stop.is_set():
                with lock:
                    i = next(next_id)
                try:
                    response = http.post(url, content=json.dumps(_envelope(i)), headers=headers)
                except httpx.HTTPError:
                    continue  # the server died under us: not acknowledged
                if response.status_code == 202:
                    with lock:
                        acknowledged.add(f"burst-{i:06d}")

    server = _serve(port)
    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    server.send_signal(signal.SIGKILL)  # mid-burst, no chance to flush anything
    server.wait(10)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(acknowledged) > 100, "the burst was too small to mean anything"

    settings_inbox = lily_home / "inbox" / "inbox.sqlite"
    restarted = _serve(port)  # recovery: the inbox opens cleanly after the crash
    try:
        stored = {
            e.event_id
            for e in SqliteInbox(settings_inbox, ciphers_at(lily_home)).read_after(0, 10_000_000)
        }
        assert acknowledged <= stored, f"{len(acknowledged - stored)} acknowledged events lost"
    finally:
        restarted.terminate()
        restarted.wait(10)

    with instance_for_test() as instance:
        harness.drain(webhook_inbox_sensor, instance, None)
    records = list(LocalHub(lily_home / "hub", ciphers=ciphers_at(lily_home)).export("acme"))
    names = {r["qualified_name"].rsplit("/", 1)[-1] for r in records}
    assert {f"T{a.removeprefix('burst-')}" for a in acknowledged} <= names
    assert len(records) == len(stored)  # one record per stored event: nothing applied twice
