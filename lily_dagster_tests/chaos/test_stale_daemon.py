"""kill -9 of `lily run` mid-way: what survives it, and how the next `lily run` finds and
stops it (`$LILY_HOME/run/daemon.pid`) instead of running a second daemon beside it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from lily_dagster.lib.broker import produce
from lily_dagster.lib.demo import generate_demo
from lily_dagster_tests.chaos.proctree import (
    LILY,
    Lily,
    Proc,
    chaos_env,
    describe,
    family,
    marked,
    still_alive,
    stop_and_check,
)
from lily_dagster_tests.support.chaos import chaos_pause_config


def paused_config(tmp_path: Path) -> tuple[Path, Path]:
    """A LILY_CONFIG whose chain holds the first run inside a step, and the directory where
    the hook reports the run worker's pid."""
    pause = tmp_path / "pause"
    return chaos_pause_config(tmp_path / "lily.yaml", pause), pause


def role(lily: Lily, needle: str) -> Proc:
    found = [p for p in family(lily.pid) if needle in p.cmdline]
    assert len(found) == 1, f"{needle}: {describe(found)}"
    return found[0]


def start_paused_run(env: dict[str, str], tmp_path: Path, pause: Path) -> tuple[Lily, Proc]:
    """`lily run --until-idle` with its first run held in a step: (it, the run worker)."""
    lily = Lily(["run", "--until-idle", "--timeout", "240"], env, tmp_path / "first.log")
    lily.wait_for(lambda: (pause / "reached").exists(), 120, "holding a run in a step")
    worker = int((pause / "reached").read_text())
    found = [p for p in family(lily.pid) if p.pid == worker]
    assert found, f"run worker {worker} is not below lily run: {describe(family(lily.pid))}"
    return lily, found[0]


def daemons(mark: str) -> list[Proc]:
    return [p for p in marked(mark) if "dagster._daemon" in p.cmdline]


def test_kill_9_of_lily_run_takes_its_daemon_along_and_the_next_run_stops_the_rest(
    lily_home: Path, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Linux sends the daemon SIGTERM when `lily run` dies (PR_SET_PDEATHSIG) and it exits.
    A run in flight survives: its run worker is the code server's child, and the code
    server waits for it before it shuts down; the next `lily run` stops both."""
    config, pause = paused_config(tmp_path)
    produce(kafka_bootstrap, topic, generate_demo(tenants=("acme",), tables_per_tenant=1).messages)
    with chaos_env() as (env, mark):
        env["LILY_CONFIG"] = str(config)
        first, worker = start_paused_run(env, tmp_path, pause)
        daemon, code_server = role(first, "dagster._daemon"), role(first, "api grpc")
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(10)
        deadline = time.monotonic() + 15
        while still_alive(daemon) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not still_alive(daemon), "the daemon outlived lily run by 15 s"
        assert still_alive(worker), "the run worker was expected to survive (README)"
        left = [p for p in (code_server, worker) if still_alive(p)]
        record = json.loads((lily_home / "run" / "daemon.pid").read_text())
        assert record["pgid"] == daemon.pid and record["owner"] == "lily run"

        second = Lily(["run", "--until-idle", "--timeout", "240"], env, tmp_path / "second.log")
        second.wait_for(lambda: "stopping a Dagster daemon left" in second.output(), 30, "said")
        for proc, name in ((code_server, "code server"), (worker, "run worker")):
            assert (f"{name} {proc.pid}" in second.output()) == (proc in left)
        second.wait_for(lambda: len(daemons(mark)) == 1, 60, "running its own daemon")
        assert not any(still_alive(p) for p in left)  # stopped before its daemon started
        stop_and_check(second, signal.SIGTERM, mark)  # and a SIGTERM stops it cleanly


def test_a_daemon_left_alive_is_stopped_before_a_new_one_starts(
    lily_home: Path, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """A daemon that did not die with its `lily run` (stopped here with SIGSTOP, as a hung
    one, or one started by a Lily without the parent-death signal) keeps its code server
    and run worker: the next `lily run` stops all three, says so, and only then starts its
    own daemon; it then takes the dead run's batches to the hub. Never two daemons."""
    config, pause = paused_config(tmp_path)
    traffic = generate_demo(tenants=("acme", "globex"), tables_per_tenant=1, seed=11)
    produce(kafka_bootstrap, topic, traffic.messages)
    with chaos_env() as (env, mark):
        env["LILY_CONFIG"] = str(config)
        first, worker = start_paused_run(env, tmp_path, pause)
        daemon, code_server = role(first, "dagster._daemon"), role(first, "api grpc")
        os.kill(daemon.pid, signal.SIGSTOP)
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(10)
        time.sleep(1)
        assert still_alive(daemon) and still_alive(code_server) and still_alive(worker)

        most = [0]
        done = threading.Event()

        def watch() -> None:  # how many daemons of this LILY_HOME run at once
            while not done.is_set():
                most[0] = max(most[0], len(daemons(mark)))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            started = time.monotonic()
            again = subprocess.run(
                [str(LILY), "run", "--until-idle", "--timeout", "240"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            took = time.monotonic() - started
        finally:
            done.set()
            watcher.join(5)
        said = [line for line in again.stderr.splitlines() if "stopping a Dagster daemon" in line]
        assert len(said) == 1, again.stderr[-3000:]
        for proc, name in ((daemon, "Dagster daemon"), (code_server, "code server")):
            assert f"{name} {proc.pid}" in said[0]
        assert f"run worker {worker.pid}" in said[0]
        assert most[0] == 1, f"{most[0]} daemons ran at once"
        assert again.returncode in (0, 1), again.stderr[-3000:]  # 1: the dead run failed
        summary = json.loads(again.stdout)
        expected = traffic.expected_state()
        for tenant in ("acme", "globex"):
            assert summary["tenants"][tenant]["pending_batches"] == 0
            out = subprocess.run(
                [str(LILY), "hub", "export", "--tenant", tenant],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            records = [json.loads(line) for line in out.stdout.splitlines()]
            for record in records:
                del record["updated_at"]
            got = {r["qualified_name"]: r for r in records}
            assert got == expected[tenant]
        assert not marked(mark), describe(marked(mark))
        assert not (lily_home / "run" / "daemon.pid").exists()
        print(f"restarted run: {took:.1f} s")


def test_a_second_owner_is_refused_while_the_first_runs(lily_home: Path, tmp_path: Path) -> None:
    """A second `lily run` (or `lily dev`) on a LILY_HOME whose daemon runs: one line, exit
    2, and the running one untouched."""
    with chaos_env() as (env, mark):
        env["LILY_KAFKA_BOOTSTRAP"] = "127.0.0.1:1"  # never idle: it runs until stopped
        first = Lily(["run", "--until-idle", "--timeout", "120"], env, tmp_path / "first.log")
        first.wait_for(lambda: len(daemons(mark)) == 1, 60, "running its daemon")
        second = subprocess.run(
            [str(LILY), "run", "--until-idle"], env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 2
        assert second.stderr.startswith("lily: error: a Dagster daemon already runs for")
        assert f"pid {first.pid}" in second.stderr and len(second.stderr.splitlines()) == 1
        assert len(daemons(mark)) == 1 and first.proc.poll() is None
        stop_and_check(first, signal.SIGTERM, mark)
