"""Crash recovery: the time from a run worker's death (kill -9 inside a step) to its batches
being applied by another run, over several kills. Prints one JSON object.

Two cases: `worker` kills only the run worker (the daemon and code server live on), `stack`
kills every process of the LILY_HOME (lily run, daemon, code server, worker) and starts a
fresh `lily run --until-idle`, whose start is then part of the time.

    .venv/bin/python -m benchmarks.crash_recovery [--kills 10] [--stack-kills 3]

Needs the test hook package (`make setup` installs it): its `chaos-pause` hook holds the
first batch until the benchmark kills the run. Runs from the repository root as a module: it
imports the test support (`lily_dagster_tests.support`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lily_dagster.lib.broker import ensure_topics, free_port, produce, start_broker
from lily_dagster.lib.demo import generate_demo
from lily_dagster_tests.support.chaos import chaos_pause_config

LILY = [sys.executable, "-m", "lily_dagster.cli"]
TENANTS = ("acme", "globex")


def stack_pids(home: Path) -> list[int]:
    marker = f"LILY_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


def kill_stack(home: Path) -> None:
    deadline = time.monotonic() + 10
    while (left := stack_pids(home)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def all_applied(home: Path) -> bool:
    staging = home / "staging"
    pending = [p for t in TENANTS for p in (staging / t / "pending").glob("*.json")]
    applied = [p for t in TENANTS for p in (staging / t / "applied").glob("*.json")]
    return not pending and len(applied) > 0


def one_kill(root: Path, bootstrap: str, index: int, stack: bool) -> float:
    home, pause, topic = root / f"home{index}", root / f"pause{index}", f"lily.bench.crash{index}"
    ensure_topics(bootstrap, [topic])
    config = chaos_pause_config(root / f"lily{index}.yaml", pause)
    env = {
        **os.environ,
        "LILY_HOME": str(home),
        "LILY_CONFIG": str(config),
        "LILY_KAFKA_BOOTSTRAP": bootstrap,
        "LILY_KAFKA_TOPICS": topic,
    }
    produce(bootstrap, topic, generate_demo(tenants=TENANTS, seed=index).messages)
    run = subprocess.Popen([*LILY, "run", "--until-idle"], env=env, stdout=subprocess.DEVNULL)
    while not (pause / "reached").exists():
        if run.poll() is not None:
            raise RuntimeError(f"lily run exited with {run.returncode} before any run paused")
        time.sleep(0.05)
    if stack:
        kill_stack(home)
        run.wait()
        killed = time.monotonic()
        run = subprocess.Popen([*LILY, "run", "--until-idle"], env=env, stdout=subprocess.DEVNULL)
    else:
        os.kill(int((pause / "reached").read_text()), signal.SIGKILL)
        killed = time.monotonic()
    while not all_applied(home):
        if run.poll() is not None and not all_applied(home):
            raise RuntimeError(f"lily run exited with {run.returncode}, batches still pending")
        time.sleep(0.05)
    recovered = time.monotonic() - killed
    run.wait()
    kill_stack(home)
    return recovered


def figures(samples: list[float]) -> dict[str, object]:
    if not samples:
        return {"kills": 0}
    return {
        "kills": len(samples),
        "p50_s": round(statistics.median(samples), 2),
        "max_s": round(max(samples), 2),
        "samples_s": [round(s, 2) for s in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--stack-kills", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        broker = start_broker(port, root / "tansu.log")
        try:
            bootstrap = f"127.0.0.1:{port}"
            worker = [one_kill(root, bootstrap, i, stack=False) for i in range(args.kills)]
            stack = [
                one_kill(root, bootstrap, 1000 + i, stack=True) for i in range(args.stack_kills)
            ]
        finally:
            broker.terminate()
            broker.wait(10)
    print(json.dumps({"worker_killed": figures(worker), "stack_killed": figures(stack)}))


if __name__ == "__main__":
    main()
