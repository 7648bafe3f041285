"""The receiver's /openapi.json is exact: schemathesis (`st run --checks all`) generates
requests from it, valid and invalid, sends them to the real receiver (`lily webhook serve`
in a subprocess, on loopback) and fails on any answer the document does not describe: an
undocumented status, content type, header or body, a valid request refused, an invalid one
accepted, a 405 without `Allow`, a success without credentials.

Credentials and the rules JSON Schema cannot state come from schemathesis_hooks.py. The run
is bounded and reproducible: fixed seed, one worker, a fixed number of examples per
operation, and a time limit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from lily_dagster.lib.broker import free_port
from lily_dagster_tests.webhook.schemathesis_hooks import seed_records
from lily_dagster_tests.webhook.vendor_setup import configure_vendors

SECRET = "openapi-conformance-secret-0123456789abcdef"  # >= 32 characters
REPO = Path(__file__).resolve().parents[2]
HOOKS = "lily_dagster_tests.webhook.schemathesis_hooks"
SEED = 20261204
EXAMPLES_PER_OPERATION = 30
RUN_LIMIT_S = 150  # the run takes about 15 s on two cores

# schemathesis's defaults for negative_data_rejection, plus 413: more than 10,000 events
# (`maxItems`) is refused as too large, as the document says.
NEGATIVE_STATUSES = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"
]  # fmt: skip

# What a run that is not silently refused everywhere reaches: each operation's success.
SUCCESSES = {
    ("POST", "/v1/tenants/{tenant}/events"): {202},
    ("GET", "/v1/tenants/{tenant}/assets"): {200},
    ("GET", "/v1/tenants/{tenant}/assets/{qualified_name}"): {200, 404},
    ("GET", "/v1/tenants/{tenant}/lineage/{qualified_name}"): {200, 404},
    ("GET", "/v1/tenants/{tenant}/changes"): {200},
    ("GET", "/v1/tenants/{tenant}/audit"): {200},
    ("POST", "/v1/webhooks/atlan/{tenant}"): {202},
    ("POST", "/v1/webhooks/monte-carlo/{tenant}"): {202},
    ("POST", "/v1/webhooks/slack/{tenant}"): {200},
    ("POST", "/v1/webhooks/teams/{tenant}"): {200},
    ("GET", "/healthz"): {200},
    ("GET", "/metrics"): {200},
}


def _config(path: Path) -> Path:
    statuses = ", ".join(f'"{s}"' for s in NEGATIVE_STATUSES)
    path.write_text(
        f"""seed = {SEED}
workers = 1
[cache]
enabled = false
[generation]
max-examples = {EXAMPLES_PER_OPERATION}
database = "none"
[checks.negative_data_rejection]
expected-statuses = [{statuses}]
"""
    )
    return path


def _template(url: str) -> str:
    """The documented path a request went to."""
    path = httpx.URL(url).path
    if path.startswith("/v1/tenants/"):
        route = path.split("/")[4]
        named = (
            "/{qualified_name}" if route in ("assets", "lineage") and path.count("/") > 4 else ""
        )
        return f"/v1/tenants/{{tenant}}/{route}{named}"
    if path.startswith("/v1/webhooks/"):
        return "/v1/webhooks/" + path.split("/")[3] + "/{tenant}"
    return path


def _start_receiver(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "lily_dagster.cli", "webhook", "serve"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    proc.wait(10)
    raise AssertionError(f"the receiver did not start:\n{log.read_text()[-3000:]}")


def _failures(output: str) -> str:
    """schemathesis's report, from its failures on, each line cut short (a request body
    can be 10,000 items long)."""
    start = output.find("FAILURES")
    text = output[start:] if start >= 0 else output
    return "\n".join(line[:400] for line in text.splitlines())[-20_000:]


@pytest.mark.timeout(300)
def test_the_openapi_document_is_exact_for_the_live_receiver(
    lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("LILY_", "SCHEMATHESIS_")) and name != "LILY_HOME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("LILY_JWT_HS256_SECRET", SECRET)
    configure_vendors(tmp_path, monkeypatch)  # every vendor for tenant acme, secrets in env
    seed_records(lily_home)
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    receiver, url = _start_receiver(env, tmp_path / "receiver.log")
    har = tmp_path / "requests.har"
    config = _config(tmp_path / "schemathesis.toml")
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"]
    report = ["--report", "har", "--report-har-path", str(har)]
    # A qualified name in a path is any string; schemathesis drops the generated ones a URL
    # path cannot carry as they are (with `/`, `.`, `..`), often enough to trip Hypothesis's
    # filter health check for `GET .../assets/{qualified_name}`.
    report += ["--suppress-health-check", "filter_too_much"]
    try:
        run = subprocess.run(
            [*command, f"{url}/openapi.json", "--checks", "all", "--no-color", *report],
            env={**env, "SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": str(REPO)},
            cwd=tmp_path,  # nothing of the run lands in the working tree
            capture_output=True,
            text=True,
            timeout=RUN_LIMIT_S,
        )
    finally:
        receiver.terminate()
        receiver.wait(20)
    assert run.returncode == 0, (
        f"schemathesis found the document and the receiver disagree:\n{_failures(run.stdout)}"
        f"\n{run.stderr[-3000:]}"
    )
    summary = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    operations = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    assert summary and operations, run.stdout[-3000:]
    assert operations.group(1) == operations.group(2) == str(len(SUCCESSES))

    # The hooks' credentials worked: every operation got past authentication to success.
    answered: Counter[tuple[str, str, int]] = Counter()
    for entry in json.loads(har.read_text())["log"]["entries"]:
        request = entry["request"]
        answered[(request["method"], _template(request["url"]), entry["response"]["status"])] += 1
    for (method, path), statuses in SUCCESSES.items():
        seen = {status for (m, p, status), _ in answered.items() if (m, p) == (method, path)}
        assert statuses <= seen, f"{method} {path}: only {sorted(seen)}"
    print(
        f"schemathesis: {operations.group(1)} operations, {summary.group(1)} test cases, "
        f"{sum(answered.values())} requests, all conform"
    )
