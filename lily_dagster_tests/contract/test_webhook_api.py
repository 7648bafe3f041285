"""CONTRACT.md §4: the webhook receiver over HTTP, with tokens from `lily token`. The
workload's own posts are checked as they were answered; the error cases are sent to the
local scenario's receiver after its runs (nothing they send may be stored)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from lily_dagster_tests.contract import outside
from lily_dagster_tests.contract.conftest import MAX_BODY_BYTES, Scenario
from lily_dagster_tests.contract.workload import TENANTS, encode, table_qn
from lily_dagster_tests.support import envelopes


def test_the_workloads_posts_were_answered_202_listing_accepted_and_rejected(
    scenario: Scenario,
) -> None:
    assert len(scenario.answers) == len(scenario.workload.posts) == 3 * len(TENANTS)
    for answer in scenario.answers:
        assert answer.status == 202, answer.body
        assert set(answer.body["accepted"]) == set(answer.post.valid_ids), answer.body
        rejected = sorted((r["index"], r["reason"]) for r in answer.body["rejected"])
        assert rejected == sorted(answer.post.rejected), answer.body


def test_new_events_posted_after_a_run_are_answered_202(scenario: Scenario) -> None:
    for answer in scenario.fresh_answers:
        assert answer.status == 202, answer.body
        assert set(answer.body["accepted"]) == set(answer.post.valid_ids)
        assert answer.body["rejected"] == []


def test_posting_the_same_events_again_is_answered_alike(scenario: Scenario) -> None:
    """Event ids the receiver already holds are not an error: the same posts again get 202,
    nothing newly rejected (and the hub did not change, as the envelope tests check)."""
    for first, again in zip(scenario.answers, scenario.answers2, strict=True):
        assert again.status == 202, again.body
        assert set(again.body["accepted"]) <= set(first.post.valid_ids)
        assert sorted((r["index"], r["reason"]) for r in again.body["rejected"]) == sorted(
            first.post.rejected
        )


def test_every_event_a_202_accepted_reached_the_hub(scenario: Scenario) -> None:
    for answer in scenario.answers:
        tenant = answer.post.tenant
        hub = scenario.hub_by_name(tenant)
        bodies = answer.post.body if isinstance(answer.post.body, list) else [answer.post.body]
        by_id = {b["event_id"]: b for b in bodies}
        for event_id in answer.body["accepted"]:
            assert by_id[event_id]["asset"]["qualified_name"] in hub, (tenant, event_id)


@pytest.fixture(scope="module")
def receiver(local: Scenario) -> str:
    return local.webhook_url


@pytest.fixture(scope="module")
def acme_token(local: Scenario) -> str:
    return outside.token(local.env, "acme", "lily:ingest")


def _envelope(name: str, tenant: str = "acme") -> dict[str, Any]:
    return envelopes.envelope(
        table_qn(tenant, f"HTTP_{name.upper()}"),
        event_id=f"contract-http-{name}",
        tenant=tenant,
        source="contract-suite",
        event_time="2024-01-02T03:04:05Z",
        attributes={"description": "sent by the HTTP tests"},
    )


def _post(
    receiver: str,
    body: bytes,
    token: str | None,
    tenant: str = "acme",
    content_type: str = "application/json",
) -> httpx.Response:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(
        f"{receiver}/v1/tenants/{tenant}/events", content=body, headers=headers, timeout=30
    )


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = outside.strict_json(response.content)
    assert isinstance(body, dict) and {"error", "detail"} <= set(body), body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["detail"], str)
    return body


def test_malformed_json_is_400(receiver: str, acme_token: str) -> None:
    _error(_post(receiver, b'{"event_id": ', acme_token), 400)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_400_malformed_json(
    receiver: str, acme_token: str, literal: str
) -> None:
    envelope = _envelope(f"literal-{literal.strip('-').lower()}")
    envelope["asset"]["attributes"]["order"] = "__LITERAL__"
    single = encode(envelope).replace(b'"__LITERAL__"', literal.encode())
    assert _error(_post(receiver, single, acme_token), 400)["error"] == "malformed_json"
    # In an array: the whole body refused as malformed, or that event rejected as such.
    neighbour = _envelope(f"neighbour-{literal.strip('-').lower()}")
    array = b"[" + encode(neighbour) + b"," + single + b"]"
    response = _post(receiver, array, acme_token)
    if response.status_code == 202:
        body = response.json()
        assert envelope["event_id"] not in body["accepted"], body
        assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(1, "malformed_json")]
    else:
        assert _error(response, 400)["error"] == "malformed_json"


def test_a_single_invalid_envelope_is_400_with_its_reason(receiver: str, acme_token: str) -> None:
    envelope = _envelope("no-name")
    del envelope["asset"]["name"]
    assert _error(_post(receiver, encode(envelope), acme_token), 400)["error"] == "missing_field"


@pytest.mark.parametrize(
    "authorization", [None, "not-a-jwt", "tampered"], ids=["no-token", "garbage", "tampered"]
)
def test_no_or_bad_token_is_401(receiver: str, acme_token: str, authorization: str | None) -> None:
    token = authorization
    if authorization == "tampered":
        header, payload, signature = acme_token.split(".")
        token = f"{header}.{payload}.{signature[::-1]}"
    _error(_post(receiver, encode(_envelope("unauthenticated")), token), 401)


def test_a_token_of_another_tenant_is_403(receiver: str, local: Scenario) -> None:
    globex = outside.token(local.env, "globex", "lily:ingest")
    _error(_post(receiver, encode(_envelope("other-tenant")), globex, tenant="acme"), 403)


def test_a_token_without_the_ingest_scope_is_403(receiver: str, local: Scenario) -> None:
    reader = outside.token(local.env, "acme", "lily:read")
    _error(_post(receiver, encode(_envelope("no-scope")), reader), 403)


def test_an_event_naming_another_tenant_is_403(receiver: str, acme_token: str) -> None:
    body = json.dumps([_envelope("mine"), _envelope("theirs", tenant="globex")]).encode()
    _error(_post(receiver, body, acme_token), 403)


def test_a_body_over_the_limit_is_413(receiver: str, acme_token: str) -> None:
    one = _envelope("big")
    one["asset"]["attributes"]["description"] = "y" * 50_000
    body = json.dumps([{**one, "event_id": f"contract-http-big-{i}"} for i in range(25)]).encode()
    assert len(body) > MAX_BODY_BYTES
    _error(_post(receiver, body, acme_token), 413)


def test_a_body_that_is_not_json_by_content_type_is_415(receiver: str, acme_token: str) -> None:
    body = encode(_envelope("plain-text"))
    _error(_post(receiver, body, acme_token, content_type="text/plain"), 415)


def test_health_and_prometheus_metrics_are_served(receiver: str) -> None:
    assert httpx.get(f"{receiver}/healthz", timeout=10).status_code == 200
    metrics = httpx.get(f"{receiver}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE " in metrics.text


def test_requests_over_the_tenants_rate_are_429_with_retry_after(
    local: Scenario, tmp_path: Path
) -> None:
    """A receiver of its own (its own LILY_HOME) allowing 1 request per second per tenant."""
    env = {**local.env, "LILY_HOME": str(tmp_path / "home"), "LILY_WEBHOOK_RATE_PER_S": "1"}
    port = outside.free_port()
    with outside.processes() as started:
        started.append(outside.start_webhook(port, env, tmp_path / "webhook.log"))
        token = outside.token(env, "acme", "lily:ingest")
        answers = [
            _post(f"http://127.0.0.1:{port}", encode(_envelope(f"rate-{i}")), token)
            for i in range(8)
        ]
    statuses = [a.status_code for a in answers]
    assert statuses[0] == 202 and 429 in statuses, statuses
    limited = next(a for a in answers if a.status_code == 429)
    _error(limited, 429)
    assert float(limited.headers["Retry-After"]) > 0
