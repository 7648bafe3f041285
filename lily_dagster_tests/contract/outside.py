"""What a user's script has to drive Lily from outside: the installed `lily` console script
as subprocesses, environment variables, HTTP, Kafka through confluent_kafka, a loopback
webhook target, and the Atlan emulator's HTTP admin API. Nothing here imports lily_dagster."""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

LILY = Path(sys.executable).with_name("lily")

# Every process started here until it is stopped: each runs in its own session (so that
# stopping it stops what it started), hence out of reach of a Ctrl-C to the test run; what a
# test run interrupted before its teardown leaves is stopped when Python exits.
_live: set[subprocess.Popen[Any]] = set()
_live_lock = threading.Lock()


def _spawn(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[Any]:
    proc: subprocess.Popen[Any] = subprocess.Popen(
        [str(LILY), *args], env=env, start_new_session=True, **kwargs
    )
    with _live_lock:
        _live.add(proc)
    return proc


def stop_all() -> None:
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        stop(proc)


atexit.register(stop_all)

# Variables of Lily, Atlan and Dagster that the caller's environment must not leak into a
# scenario: every setting a scenario relies on is set explicitly.
_OWN_PREFIXES = ("LILY_", "ATLAN_", "DAGSTER_")


def clean_environment(**settings: str) -> dict[str, str]:
    """os.environ without Lily's, Atlan's and Dagster's variables, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env.update(settings)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- one-shot commands ------------------------------------------------------------------------


def lily(
    *args: str, env: dict[str, str], timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`lily ARGS…` to completion (in `cwd`, else here), output captured as text; killed
    after `timeout` seconds (then returncode -9 and a note on stderr)."""
    try:
        return subprocess.run(
            [str(LILY), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        note = f"(still running after {timeout} s, killed)\n"
        return subprocess.CompletedProcess([str(LILY), *args], -9, out, err + note)


def lily_ok(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    """stdout of `lily ARGS…`, which must exit 0."""
    proc = lily(*args, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"`lily {' '.join(args)}` exited {proc.returncode}: {proc.stderr[-3000:]}"
        )
    return proc.stdout


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def strict_json(text: str | bytes) -> Any:
    """json.loads refusing NaN, Infinity and -Infinity, which RFC 8259 does not allow."""
    return json.loads(text, parse_constant=_no_constants)


def lenient_json(text: str | bytes) -> Any:
    """json.loads reading NaN, Infinity and -Infinity as the strings "<NaN>" etc. (so that
    values stay comparable: a float NaN is not equal to itself)."""
    return json.loads(text, parse_constant=lambda name: f"<{name}>")


def json_lines(text: str, strict: bool = True) -> list[dict[str, Any]]:
    """Every non-empty line of `text` as a JSON object; `strict`: RFC 8259 JSON, else as
    lenient as Python's json module (NaN and Infinity accepted)."""
    out: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = strict_json(line) if strict else lenient_json(line)
        except ValueError as exc:
            raise AssertionError(
                f"line {number} is not strict JSON ({exc}): {line[:300]}"
            ) from None
        assert isinstance(value, dict), f"line {number} is not a JSON object: {line[:300]}"
        out.append(value)
    return out


def hub_export(env: dict[str, str], tenant: str) -> list[dict[str, Any]]:
    return json_lines(lily_ok("hub", "export", "--tenant", tenant, env=env))


def quarantine_export(env: dict[str, str], tenant: str) -> list[dict[str, Any]]:
    return json_lines(lily_ok("quarantine", "export", "--tenant", tenant, env=env))


def token(env: dict[str, str], tenant: str, scope: str | None = None) -> str:
    args = ["token", "--tenant", tenant]
    if scope is not None:
        args += ["--scope", scope]
    return lily_ok(*args, env=env).strip()


def post_events(api: str, env: dict[str, str], tenant: str, events: list[dict[str, Any]]) -> None:
    """POST `events` to the tenant's §4 events route with an ingest token; 202 expected."""
    answer = httpx.post(
        f"{api}/v1/tenants/{tenant}/events",
        content=json.dumps(events).encode(),
        headers={"Authorization": f"Bearer {token(env, tenant, 'lily:ingest')}",
                 "Content-Type": "application/json"},
        timeout=30,
    )  # fmt: skip
    assert answer.status_code == 202, answer.text


@dataclass
class IdleRun:
    """One `lily run --until-idle`: its exit code, output, and when it returned."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    returned_at: float  # time.monotonic() when the process had exited

    def summary(self) -> dict[str, Any]:
        value = strict_json(self.stdout)
        assert isinstance(value, dict), self.stdout[:500]
        return value


def run_until_idle(env: dict[str, str], timeout_s: int = 240) -> IdleRun:
    started = time.monotonic()
    proc = _spawn(
        ["run", "--until-idle", "--timeout", str(timeout_s)],
        env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s + 120)
    except subprocess.TimeoutExpired:
        stop(proc)
        stdout, stderr = proc.communicate()
    finally:
        stop(proc)  # (only forgets it when it has exited by itself)
    returned_at = time.monotonic()
    return IdleRun(proc.returncode, stdout, stderr, returned_at - started, returned_at)


# --- long-running processes -------------------------------------------------------------------


def start(
    args: list[str],
    env: dict[str, str],
    log: Path,
    ready: Callable[[], bool],
    timeout_s: float = 60,
) -> subprocess.Popen[bytes]:
    """`lily ARGS…` in the background, in its own process group (so that whatever it starts
    is stopped with it), returned once `ready()`; fails with its output otherwise."""
    with log.open("ab") as out:
        proc = _spawn(args, env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise AssertionError(
                f"`lily {' '.join(args)}` was not ready within {timeout_s} s "
                f"(exit code {proc.returncode}); its output:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen[Any]) -> None:
    """Ctrl-C to the process group we started, then SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        for sig, wait_s in ((signal.SIGINT, 10.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
    # The group may outlive its leader (a child that ignored the signal): end it too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with _live_lock:
        _live.discard(proc)


def http_ready(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return httpx.get(url, timeout=1).is_success
        except httpx.TransportError:
            return False

    return ready


def start_broker(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`lily broker --port N`: ready once it listens and has created the watched topics."""
    from confluent_kafka.admin import AdminClient

    topics = {t for t in env.get("LILY_KAFKA_TOPICS", "").split(",") if t}

    def ready() -> bool:
        if not port_open(port):
            return False
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        try:
            return topics <= set(admin.list_topics(timeout=2).topics)
        except Exception:
            return False

    return start(["broker", "--port", str(port)], env, log, ready)


def start_webhook(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return start(
        ["webhook", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        log,
        http_ready(f"http://127.0.0.1:{port}/healthz"),
    )


def start_atlan_emulator(port: int, api_key: str, env: dict[str, str], log: Path) -> Any:
    return start(
        ["atlan-emulator", "--port", str(port), "--api-key", api_key],
        env,
        log,
        http_ready(f"http://127.0.0.1:{port}/_emulator/health"),
    )


def emulator_entities(base_url: str) -> list[dict[str, Any]]:
    """Every entity the Atlan emulator holds, soft-deleted ones included (its admin API)."""
    response = httpx.get(f"{base_url}/_emulator/entities", timeout=30)
    response.raise_for_status()
    entities: list[dict[str, Any]] = response.json()
    return entities


# --- Kafka ------------------------------------------------------------------------------------


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Messages (key, value) to `topic`, in order, each acknowledged by the broker."""
    from confluent_kafka import Producer

    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "message.max.bytes": 4_000_000,
            "linger.ms": 5,
            "acks": "all",
        }
    )
    for key, value in messages:
        producer.produce(topic, value=value, key=key, on_delivery=delivered)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0 and not errors, f"{remaining} undelivered, errors: {errors[:3]}"


def create_topics(bootstrap: str, topics: list[str]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, num_partitions=1) for t in topics]).values():
        future.result(30)


# --- the webhook target -----------------------------------------------------------------------


@dataclass
class Delivery:
    """One request the target received."""

    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int  # what the target answered
    received_at: float  # time.monotonic()

    def json(self) -> dict[str, Any]:
        value = lenient_json(self.body)
        assert isinstance(value, dict)
        return value

    def signature_valid(self, secret: str) -> bool:
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-lily-signature", ""), expected)


@dataclass
class WebhookTarget:
    """A loopback HTTP server standing in for a user's webhook endpoint. Per path, a list of
    statuses answered to the first requests (then 200), or one status for every request."""

    first_answers: dict[str, list[int]] = field(default_factory=dict)
    always: dict[str, int] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str | None = None, before: float | None = None) -> list[Delivery]:
        with self._lock:
            return [
                d
                for d in self.deliveries
                if (path is None or d.path == path) and (before is None or d.received_at <= before)
            ]

    def _answer(self, path: str) -> int:
        with self._lock:
            queued = self.first_answers.get(path)
            if queued:
                return queued.pop(0)
            return self.always.get(path, 200)

    def __enter__(self) -> WebhookTarget:
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = target._answer(self.path)
                with target._lock:
                    target.deliveries.append(
                        Delivery(
                            path=self.path,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                            status=status,
                            received_at=time.monotonic(),
                        )
                    )
                answer = json.dumps({"status": status}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


# --- small helpers ----------------------------------------------------------------------------


def rfc3339(value: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime (a trailing Z accepted)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, f"{value!r} has no time zone"
    return parsed


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[Any]]]:
    """A list to put started processes in; every one of them is stopped on exit, last first."""
    started: list[subprocess.Popen[Any]] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            stop(proc)


@dataclass
class SmallStack:
    """`lily broker` and `lily webhook serve` for one scenario module, with a loopback
    webhook target (its `refuse_path` answering 400) and a LILY_CONFIG file."""

    root: Path
    env: dict[str, str]
    api: str  # the receiver's base URL
    target: WebhookTarget


@contextlib.contextmanager
def small_stack(
    root: Path,
    topic: str,
    config: Callable[[WebhookTarget], dict[str, Any]],
    refuse_path: str,
    **env: str,
) -> Iterator[SmallStack]:
    """The stack of `SmallStack`: `config(target)` is the LILY_CONFIG document, `env` more
    variables (a JWT secret, the targets' secrets)."""
    with processes() as started, WebhookTarget() as target:
        target.always[refuse_path] = 400
        broker_port, webhook_port = free_port(), free_port()
        (root / "lily.yaml").write_text(json.dumps(config(target)))  # JSON is YAML
        settings = clean_environment(
            LILY_HOME=str(root / "home"),
            LILY_CONFIG=str(root / "lily.yaml"),
            LILY_KAFKA_BOOTSTRAP=f"127.0.0.1:{broker_port}",
            LILY_KAFKA_TOPICS=topic,
            **env,
        )
        started.append(start_broker(broker_port, settings, root / "broker.log"))
        started.append(start_webhook(webhook_port, settings, root / "webhook.log"))
        yield SmallStack(root, settings, f"http://127.0.0.1:{webhook_port}", target)


@contextlib.contextmanager
def idle_stack(
    root: Path,
    topic: str,
    config: Callable[[WebhookTarget], dict[str, Any]],
    refuse_path: str,
    feed: Callable[[SmallStack], None],
    **env: str,
) -> Iterator[SmallStack]:
    """A `small_stack` that `feed` sent its workload to, then drained by `lily run
    --until-idle` (which must succeed)."""
    with small_stack(root, topic, config, refuse_path, **env) as small:
        feed(small)
        run = run_until_idle(small.env, 240)
        assert run.returncode == 0, run.stderr[-3000:]
        yield small


def table_envelope(
    tenant: str, via: str, i: int, connection: str = "default/snowflake/1", **asset: Any
) -> dict[str, Any]:
    """An upsert of Table `<VIA>_<i>` (its own record per via and i), fields of `asset` added."""
    return {
        "event_id": f"{via}-{tenant}-{i}-{uuid.uuid4().hex[:6]}",
        "tenant": tenant,
        "source": "snowflake",
        "op": "upsert",
        "event_time": datetime(2026, 11, 1, 10, i % 60, tzinfo=UTC).isoformat(),
        "asset": {
            "type_name": "Table",
            "qualified_name": f"{connection}/DB/SCH/{via.upper()}_{i}",
            "name": f"{via.upper()}_{i}",
            **asset,
        },
    }


def refusing_target_config(
    target: WebhookTarget, tenants: Sequence[str], refuse_path: str, secret_env: str
) -> dict[str, Any]:
    """LILY_CONFIG of `tenants` with one webhook target, `refusing`, for the first tenant only,
    at `refuse_path` of `target` (which answers 400 there: every change dead-lettered)."""
    return {
        "tenants": [{"name": t} for t in tenants],
        "targets": [
            {
                "name": "refusing",
                "type": "webhook",
                "url": target.url(refuse_path),
                "secret_env": secret_env,
                "tenants": [tenants[0]],
                "backoff_s": 0.05,
            }
        ],
    }


def start_prometheus(port: int, api: str, rules: Path, root: Path) -> subprocess.Popen[Any]:
    """Debian's Prometheus on loopback, scraping the receiver at `api` every second and
    evaluating the alerting rules of `rules`; returned once ready."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise AssertionError(
            "Debian's prometheus is not installed: `make test` installs it "
            "(apt-get install prometheus), or install it by hand"
        )
    target = api.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "lily", "static_configs": [{"targets": [target]}]}],
    }
    (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    args = [binary, f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    with (root / "prometheus.log").open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    with _live_lock:
        _live.add(proc)
    ready, deadline = http_ready(f"http://127.0.0.1:{port}/-/ready"), time.monotonic() + 60
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            log = (root / "prometheus.log").read_text()[-3000:]
            raise AssertionError(f"Prometheus did not start; its output:\n{log}")
        time.sleep(0.2)
    return proc


def prometheus_query(port: int, query: str) -> list[dict[str, Any]]:
    """The result vector of an instant query through Prometheus' HTTP API."""
    answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=10)
    body = answer.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result
