"""SIGTERM, SIGINT and SIGHUP sent to a long-running `lily` command (to its pid alone, as
`kill PID` does, or to the whole process group of `make run`) stop everything it started:
the command exits with 128 + the signal within a bound, and no process it started, nor any
of theirs (Tansu, the Dagster daemon, its code server, run workers, `dagster dev`'s
webserver, the webhook receiver), survives it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from lily_dagster.lib.broker import free_port, port_open, produce
from lily_dagster.lib.demo import generate_demo
from lily_dagster_tests.chaos.outcome import run_until_idle
from lily_dagster_tests.chaos.proctree import (
    LILY,
    Lily,
    chaos_env,
    describe,
    family,
    marked,
    still_alive,
    stop_and_check,
)
from lily_dagster_tests.chaos.proctree import _default_signals as default_signals
from lily_dagster_tests.support.chaos import chaos_pause_config

SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
SECRET = "chaos-test-secret-0123456789abcdef0123"


def _ids(sig: signal.Signals) -> str:
    return sig.name


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def daemon_up(lily: Lily) -> bool:
    """The Dagster daemon and a code server run below `lily`."""
    lines = [p.cmdline for p in family(lily.pid)]
    daemon = any("dagster._daemon" in line for line in lines)
    code_server = any("api grpc" in line or "code-server" in line for line in lines)
    return daemon and code_server


@pytest.mark.parametrize("sig", SIGNALS, ids=_ids)
def test_lily_broker_stops_tansu(sig: signal.Signals, tmp_path: Path) -> None:
    port = free_port()
    with chaos_env() as (env, mark):
        env["LILY_HOME"] = str(tmp_path / "lily")
        lily = Lily(["broker", "--port", str(port)], env, tmp_path / "broker.log")
        lily.wait_for(lambda: "stops it" in lily.output(), 30, "serving")
        assert lily.has("tansu")
        stop_and_check(lily, sig, mark, bound_s=20)
        assert not port_open("127.0.0.1", port), "the broker's port is still taken"


@pytest.mark.parametrize("sig", SIGNALS, ids=_ids)
def test_lily_run_stops_its_daemon_code_server_and_run_workers(
    sig: signal.Signals, lily_home: Path, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    env_extra: dict[str, str] = {}
    pause = tmp_path / "pause"
    if sig == signal.SIGTERM:
        # Hold the first run inside a step, so that a run worker is alive at the signal.
        env_extra["LILY_CONFIG"] = str(chaos_pause_config(tmp_path / "lily.yaml", pause))
    traffic = generate_demo(tenants=("acme",), tables_per_tenant=1, columns_per_table=2, seed=3)
    produce(kafka_bootstrap, topic, traffic.messages)
    with chaos_env() as (env, mark):
        env.update(env_extra)
        lily = Lily(["run", "--until-idle", "--timeout", "300"], env, tmp_path / "run.log")
        lily.wait_for(lambda: daemon_up(lily), 60, "running its daemon and code server")
        if sig == signal.SIGTERM:
            lily.wait_for(lambda: (pause / "reached").exists(), 90, "running a run")
            worker = int((pause / "reached").read_text())
            assert worker in {p.pid for p in family(lily.pid)}
        stop_and_check(lily, sig, mark)
        assert not (lily_home / "run" / "daemon.pid").exists(), "the pidfile is left behind"
        if sig != signal.SIGTERM:
            return
        # The run stopped mid-step is a dead run, not a failed step: the next `lily run`
        # takes its batch to the hub (nothing held for an operator).
        summary = run_until_idle(env)
        assert summary["tenants"]["acme"]["pending_batches"] == 0, summary
        assert summary["tenants"]["acme"]["hub_active"] == sum(
            1 for r in traffic.expected_state()["acme"].values() if r["status"] == "ACTIVE"
        )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=_ids)
def test_lily_dev_stops_broker_receiver_webserver_and_daemon(
    sig: signal.Signals, lily_home: Path, tmp_path: Path
) -> None:
    ui, webhook, broker = free_port(), free_port(), free_port()
    with chaos_env() as (env, mark):
        env.pop("LILY_KAFKA_BOOTSTRAP", None)  # its own embedded broker, on --broker-port
        env["LILY_JWT_HS256_SECRET"] = SECRET
        args = ["dev", "--no-demo", "--port", str(ui), "--webhook-port", str(webhook)]
        lily = Lily([*args, "--broker-port", str(broker)], env, tmp_path / "dev.log")

        def up() -> bool:
            return (
                http_ok(f"http://127.0.0.1:{webhook}/healthz")
                and http_ok(f"http://127.0.0.1:{ui}/server_info")
                and daemon_up(lily)
            )

        lily.wait_for(up, 90, "serving the UI and webhooks with its daemon")
        assert lily.has("tansu", "dagster dev", "dagster_webserver", "webhook serve")
        stop_and_check(lily, sig, mark)
        for port in (ui, webhook, broker):
            assert not port_open("127.0.0.1", port), f"port {port} is still taken"


@pytest.mark.parametrize("sig", SIGNALS, ids=_ids)
def test_lily_webhook_serve_stops(sig: signal.Signals, tmp_path: Path) -> None:
    port = free_port()
    with chaos_env() as (env, mark):
        env.update(LILY_HOME=str(tmp_path / "lily"), LILY_JWT_HS256_SECRET=SECRET)
        lily = Lily(["webhook", "serve", "--port", str(port)], env, tmp_path / "webhook.log")
        lily.wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30, "serving")
        stop_and_check(lily, sig, mark, bound_s=20, children=False)
        assert not port_open("127.0.0.1", port)


@pytest.mark.parametrize("sig", SIGNALS, ids=_ids)
def test_lily_atlan_emulator_stops(sig: signal.Signals, tmp_path: Path) -> None:
    port = free_port()
    with chaos_env() as (env, mark):
        env["LILY_HOME"] = str(tmp_path / "lily")
        lily = Lily(["atlan-emulator", "--port", str(port)], env, tmp_path / "emulator.log")
        lily.wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/_emulator/health"), 30, "serving")
        stop_and_check(lily, sig, mark, bound_s=20, children=False)
        assert not port_open("127.0.0.1", port)


def test_lily_demo_stops_its_broker_and_daemon(tmp_path: Path) -> None:
    with chaos_env() as (env, mark):
        env.pop("LILY_KAFKA_BOOTSTRAP", None)
        env.update(LILY_HOME=str(tmp_path / "lily"))
        lily = Lily(["demo", "--tables", "1"], env, tmp_path / "demo.log")
        lily.wait_for(lambda: daemon_up(lily) and lily.has("tansu"), 60, "processing")
        stop_and_check(lily, signal.SIGTERM, mark)


def test_under_nohup_sighup_stays_ignored(tmp_path: Path) -> None:
    """A signal ignored when `lily` starts (SIGHUP under nohup) is not made a stop signal."""
    port = free_port()
    with chaos_env() as (env, mark):
        env["LILY_HOME"] = str(tmp_path / "lily")
        lily = Lily(["broker", "--port", str(port)], env, tmp_path / "broker.log", via=["nohup"])
        lily.wait_for(lambda: "stops it" in lily.output(), 30, "serving")
        os.kill(lily.pid, signal.SIGHUP)
        time.sleep(1)
        assert lily.proc.poll() is None and port_open("127.0.0.1", port)
        stop_and_check(lily, signal.SIGTERM, mark, bound_s=20)


def test_lily_dev_of_make_run_stops_when_make_is_killed(lily_home: Path, tmp_path: Path) -> None:
    """`make run` execs `lily dev --stop-with-parent`: make killed -9 (it cannot pass the
    signal on) stops the stack as a hangup would. Here a shell stands in for make."""
    ui, webhook, broker = free_port(), free_port(), free_port()
    with chaos_env() as (env, mark):
        env.pop("LILY_KAFKA_BOOTSTRAP", None)
        env["LILY_JWT_HS256_SECRET"] = SECRET
        command = (
            f"{LILY} dev --stop-with-parent --no-demo --port {ui} --webhook-port {webhook} "
            f"--broker-port {broker} & wait"
        )
        make = Lily([], env, tmp_path / "make.log", via=["sh", "-c", command, "sh"])
        make.wait_for(lambda: daemon_up(make) and make.has("tansu", "webhook serve"), 90, "up")
        [dev] = [p for p in family(make.pid) if p.ppid == make.pid]
        assert "dev --stop-with-parent" in dev.cmdline
        before = family(make.pid)
        os.kill(make.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while marked(mark) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not marked(mark), f"left behind: {describe(marked(mark))}"
        assert not any(still_alive(p) for p in before)
        assert "lily: stopped by SIGHUP" in make.output()


def with_home(home: Path) -> list[int]:
    """Live processes whose environment names this LILY_HOME."""
    needle = f"LILY_HOME={home}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def make_available() -> bool:
    return shutil.which("make") is not None


class Group(Lily):
    """A parent of `lily dev` (make, or a shell) started in a session and process group of
    its own, as a terminal or a CI job starts `make run`."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.log = command, log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                command,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=default_signals,
            )


@pytest.mark.parametrize(
    "parent",
    [
        pytest.param("make", marks=pytest.mark.skipif(not make_available(), reason="no make")),
        "sh",
    ],
)
def test_lily_dev_stops_when_its_whole_process_group_is_signalled(
    parent: str, lily_home: Path, tmp_path: Path
) -> None:
    """`kill -TERM -PGID` of `make run`: make (or a shell standing in for it) and `lily dev`
    get the signal at once (make passes it on once more); the children `lily dev` started
    in sessions of their own do not, and must still stop, with their ports closed."""
    ui, webhook, broker = free_port(), free_port(), free_port()
    command = (
        f"{LILY} dev --stop-with-parent --no-demo --port {ui} --webhook-port {webhook} "
        f"--broker-port {broker}"
    )
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"run:\n\texec {command}\n")  # as the project's Makefile does
    shell = ["sh", "-c", f"{command}\nexit $?"]  # two commands: sh stays lily's parent
    with chaos_env() as (env, mark):
        env.pop("LILY_KAFKA_BOOTSTRAP", None)
        env["LILY_JWT_HS256_SECRET"] = SECRET
        via = ["make", "-f", str(makefile), "run"] if parent == "make" else shell
        group = Group(via, env, tmp_path / "group.log")

        def up() -> bool:
            return http_ok(f"http://127.0.0.1:{ui}/server_info") and daemon_up(group)

        group.wait_for(up, 90, "serving the UI with its daemon")
        assert group.has("tansu", "webhook serve", "dagster dev")
        os.killpg(group.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while (with_home(lily_home) or marked(mark)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not with_home(lily_home), f"left behind: {with_home(lily_home)}"
        assert not marked(mark), f"left behind: {describe(marked(mark))}"
        for port in (ui, webhook, broker):
            assert not port_open("127.0.0.1", port), f"port {port} is still taken"
        # Under a shell, which dies at once, `lily dev` may act on the parent-death SIGHUP
        # (--stop-with-parent) before the SIGTERM: the same stop either way.
        assert re.search(r"lily: stopped by SIG(TERM|HUP)", group.output()), group.output()
