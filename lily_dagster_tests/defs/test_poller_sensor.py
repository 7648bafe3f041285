"""The Monte Carlo poller against a local HTTP server that speaks its GraphQL shape."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from dagster import SensorResult, instance_for_test

from lily_dagster.defs.ingest.poller_sensors import poller_sensors
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster_tests import sensor_harness as harness
from lily_dagster_tests.support.sealed import ciphers_at

INCIDENTS = [
    {
        "uuid": f"inc-{i}",
        "incidentType": "freshness_anomaly",
        "severity": "SEV-2",
        "createdTime": f"2026-11-23T10:0{i}:00+00:00",
        "feedback": None,
        "events": {"edges": [{"node": {"table": {"fullTableId": f"analytics:prod.orders_{i}"}}}]},
    }
    for i in range(5)
]


class FakeMonteCarlo:
    """Serves getIncidents with relay paging (2 per page) and checks the API key headers."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.incidents = list(INCIDENTS)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                owner.requests.append({"headers": dict(self.headers), "body": body})
                if (
                    self.headers.get("x-mcd-id") != "key-id"
                    or self.headers.get("x-mcd-token") != "key-token"
                ):
                    self.send_response(401)
                    self.end_headers()
                    return
                variables = body["variables"]
                start = variables.get("startTime")
                matching = [
                    n for n in owner.incidents if start is None or n["createdTime"] >= start
                ]
                offset = int(variables.get("after") or 0)
                page = matching[offset : offset + 2]
                data = {
                    "data": {
                        "getIncidents": {
                            "pageInfo": {
                                "hasNextPage": offset + 2 < len(matching),
                                "endCursor": str(offset + 2),
                            },
                            "edges": [{"node": n} for n in page],
                        }
                    }
                }
                raw = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/graphql"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def monte_carlo(
    lily_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeMonteCarlo]:
    fake = FakeMonteCarlo()
    config = tmp_path / "lily.yaml"
    config.write_text(
        "tenants:\n"
        "  - name: acme\n"
        "    pollers:\n"
        "      monte-carlo:\n"
        f"        url: {fake.url}\n"
        "        id_env: MCD_ID\n"
        "        token_env: MCD_TOKEN\n"
        "        connection_qualified_name: default/snowflake/1700000000\n"
    )
    monkeypatch.setenv("LILY_CONFIG", str(config))
    monkeypatch.setenv("MCD_ID", "key-id")
    monkeypatch.setenv("MCD_TOKEN", "key-token")
    monkeypatch.setenv("LILY_ORPHAN_WAIT_S", "0")
    yield fake
    fake.server.shutdown()


def _tick(instance: Any, cursor: str | None) -> SensorResult:
    (sensor,) = poller_sensors
    result = harness.tick(sensor, instance, cursor)
    assert isinstance(result, SensorResult)
    return result


def _run(instance: Any, result: SensorResult) -> None:
    harness.run_requested(instance, result)


def test_poller_pages_through_incidents_and_lands_them_in_the_hub(
    monte_carlo: FakeMonteCarlo, lily_home: Path
) -> None:
    with instance_for_test() as instance:
        first = _tick(instance, None)
        assert len(monte_carlo.requests) == 3  # 5 incidents, 2 per page
        assert json.loads(first.cursor or "{}") == {"acme": "2026-11-23T10:04:00+00:00"}
        _run(instance, first)
        records = {
            r["qualified_name"]: r
            for r in LocalHub(lily_home / "hub", ciphers=ciphers_at(lily_home)).export("acme")
        }
        incidents = [r for r in records.values() if r["type_name"] == "MCIncident"]
        assert len(incidents) == 5
        assert incidents[0]["attributes"]["mc_asset_qualified_names"] == [
            "default/snowflake/1700000000/ANALYTICS/PROD/ORDERS_0"
        ]
        # The tables are not in the hub and LILY_ORPHAN_WAIT_S=0: their data-quality
        # changes could not wait for them and are quarantined as orphans.
        reasons = QuarantineStore(lily_home / "quarantine", ciphers_at(lily_home)).counts_by_reason(
            "acme"
        )
        assert reasons == {"orphan": 5}

        # Next poll: only what is newer than the cursor.
        monte_carlo.incidents.append(
            {**INCIDENTS[0], "uuid": "inc-new", "createdTime": "2026-11-23T11:00:00+00:00"}
        )
        second = _tick(instance, first.cursor)
        assert (
            monte_carlo.requests[-1]["body"]["variables"]["startTime"]
            == "2026-11-23T10:04:00+00:00"
        )
        _run(instance, second)
        incidents_now = [
            r
            for r in LocalHub(lily_home / "hub", ciphers=ciphers_at(lily_home)).export("acme")
            if r["type_name"] == "MCIncident"
        ]
        assert len(incidents_now) == 6
        third = _tick(instance, second.cursor)
        assert not third.run_requests and third.cursor == second.cursor


def test_a_refused_key_keeps_the_cursor_and_says_why(
    monte_carlo: FakeMonteCarlo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCD_TOKEN", "revoked")
    cursor = json.dumps({"acme": "2026-11-23T10:01:00+00:00"})
    with instance_for_test() as instance:
        result = _tick(instance, cursor)
    assert not result.run_requests
    assert result.cursor == cursor
    assert "refused the key (401)" in (
        result.skip_reason.skip_message if result.skip_reason else ""
    )
