"""POST /v1/tenants/{tenant}/events (CONTRACT.md §4) on a real uvicorn server: what a client
sees (status, error body), what the inbox and quarantine hold afterwards, and /metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lily_dagster_tests.webhook.conftest import (
    Live,
    Tokens,
    bearer,
    claims,
    envelope,
    unique,
)

# --- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize("issuer", ["hs256", "rs256-jwks", "es256-pem"])
def test_single_envelope_is_accepted_and_stored(
    serve: Callable[[], Live],
    tokens: Tokens,
    issuer: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    if issuer == "es256-pem":
        pem = tmp_path / "issuer.pem"
        pem.write_text(tokens.keys.ec_public_pem())
        monkeypatch.delenv("LILY_JWT_JWKS_URL")
        monkeypatch.setenv("LILY_JWT_PUBLIC_KEY_FILE", str(pem))
    live = serve()
    token = {"hs256": tokens.hs256, "rs256-jwks": tokens.rs256, "es256-pem": tokens.es256}[issuer]()
    event = envelope()
    response = live.post_events("acme", event, token)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == [event["event_id"]]
    assert body["rejected"] == []
    assert body["duplicates"] == 0
    stored = live.inbox()
    assert [(e.tenant, e.event_id, e.source) for e in stored] == [
        ("acme", event["event_id"], "tenants-api")
    ]
    assert json.loads(stored[0].payload) == event
    assert live.quarantine_tenants() == []


def test_array_is_accepted_in_order(live: Live, tokens: Tokens) -> None:
    events = [envelope() for _ in range(5)]
    response = live.post_events("acme", events, tokens.hs256())
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == [e["event_id"] for e in events]
    assert [e.event_id for e in live.inbox()] == [e["event_id"] for e in events]
    assert live.inbox_by_id() == {e["event_id"]: e for e in events}


def test_same_event_id_twice_is_stored_once_and_counted_as_duplicate(
    live: Live, tokens: Tokens
) -> None:
    event = envelope()
    first = live.post_events("acme", event, tokens.hs256())
    second = live.post_events("acme", event, tokens.hs256())
    assert first.status_code == second.status_code == 202
    assert first.json()["duplicates"] == 0
    assert second.json()["duplicates"] == 1
    # Within one array too.
    other = envelope()
    third = live.post_events("acme", [other, other, event], tokens.hs256())
    assert third.status_code == 202
    assert third.json()["duplicates"] == 2
    assert sorted(e.event_id for e in live.inbox()) == sorted(
        [event["event_id"], other["event_id"]]
    )
    assert live.metric("lily_webhook_events_duplicate_total", tenant="acme") == 3


def test_same_event_id_in_two_tenants_is_two_events(live: Live, tokens: Tokens) -> None:
    token = tokens.hs256(claims(tenant=None, tenants=["acme", "globex"]))
    event_id = unique()
    for tenant in ("acme", "globex"):
        response = live.post_events(tenant, envelope(event_id, tenant=tenant), token)
        assert response.status_code == 202 and response.json()["duplicates"] == 0
    assert sorted((e.tenant, e.event_id) for e in live.inbox()) == [
        ("acme", event_id),
        ("globex", event_id),
    ]


def test_token_naming_several_tenants_works_for_each(live: Live, tokens: Tokens) -> None:
    token = tokens.rs256(claims(tenant=None, tenants=["acme", "globex"]))
    for tenant in ("acme", "globex"):
        event = envelope(tenant=tenant)
        response = live.post_events(tenant, event, token)
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == [event["event_id"]]
    assert sorted(e.tenant for e in live.inbox()) == ["acme", "globex"]
    assert live.post_events("initech", envelope(tenant="initech"), token).status_code == 403


# --- refused: authentication and authorisation --------------------------------------------------


def _now() -> int:
    return int(time.time())


REFUSALS: dict[str, tuple[int, str, Callable[[Tokens], dict[str, str]]]] = {
    # case: (status, error code, headers)
    "missing-token": (401, "unauthenticated", lambda t: {}),
    "not-bearer": (401, "unauthenticated", lambda t: {"Authorization": "Basic dXNlcjpwdw=="}),
    "garbage-token": (401, "unauthenticated", lambda t: bearer("not.a.jwt")),
    "forged-rs256-same-kid": (401, "unauthenticated", lambda t: bearer(t.rs256(forged=True))),
    "forged-hs256-other-secret": (
        401,
        "unauthenticated",
        lambda t: bearer(t.hs256(secret="another-secret-which-is-long-enough-000")),
    ),
    "alg-none": (
        401,
        "unauthenticated",
        lambda t: bearer(jwt_none(claims())),
    ),
    "expired": (
        401,
        "unauthenticated",
        lambda t: bearer(t.hs256(claims(iat=_now() - 3600, exp=_now() - 120))),
    ),
    "not-yet-valid": (
        401,
        "unauthenticated",
        lambda t: bearer(t.rs256(claims(nbf=_now() + 600))),
    ),
    "wrong-audience": (401, "unauthenticated", lambda t: bearer(t.hs256(claims(aud="other")))),
    "no-exp": (401, "unauthenticated", lambda t: bearer(t.hs256(claims(exp=None)))),
    "no-scope": (403, "insufficient_scope", lambda t: bearer(t.hs256(claims(scope=None)))),
    "other-scope": (
        403,
        "insufficient_scope",
        lambda t: bearer(t.rs256(claims(scope="lily:read lily:admin"))),
    ),
    "other-tenant": (403, "wrong_tenant", lambda t: bearer(t.hs256(claims(tenant="globex")))),
    "no-tenant": (403, "wrong_tenant", lambda t: bearer(t.hs256(claims(tenant=None)))),
}


def jwt_none(payload: dict[str, Any]) -> str:
    import jwt

    return jwt.encode(payload, None, algorithm="none")


def assert_nothing_stored(live: Live) -> None:
    assert live.inbox() == []
    assert live.quarantine_tenants() == []
    assert not live.settings.staging_dir.exists()


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_tokens_get_the_contract_status_and_store_nothing(
    live: Live, tokens: Tokens, case: str
) -> None:
    status, code, headers = REFUSALS[case]
    response = live.client.post(
        "/v1/tenants/acme/events",
        content=json.dumps(envelope()).encode(),
        headers={"Content-Type": "application/json", **headers(tokens)},
    )
    assert_error(response, status, code)
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert_nothing_stored(live)
    assert live.metric("lily_webhook_rejected_total", reason=code) == 1
    assert (
        live.metric("lily_webhook_requests_total", endpoint="tenant_events", status=str(status))
        == 1
    )
    assert live.metric("lily_webhook_events_accepted_total") == 0


def test_wrong_or_missing_issuer_is_refused_when_an_issuer_is_required(
    serve: Callable[[], Live], tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LILY_JWT_ISSUER", "https://issuer.example")
    live = serve()
    for token in (
        tokens.rs256(claims(iss="https://evil.example")),
        tokens.hs256(claims()),  # no iss at all
    ):
        assert_error(live.post_events("acme", envelope(), token), 401, "unauthenticated")
    assert_nothing_stored(live)
    good = live.post_events("acme", envelope(), tokens.rs256(claims(iss="https://issuer.example")))
    assert good.status_code == 202, good.text


def test_custom_audience_is_required(
    serve: Callable[[], Live], tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LILY_JWT_AUDIENCE", "metadata-ingest")
    live = serve()
    assert_error(live.post_events("acme", envelope(), tokens.hs256()), 401, "unauthenticated")
    ok = live.post_events("acme", envelope(), tokens.hs256(claims(aud="metadata-ingest")))
    assert ok.status_code == 202, ok.text


def test_es256_token_from_another_key_is_refused(
    serve: Callable[[], Live],
    tokens: Tokens,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    pem = tmp_path / "issuer.pem"
    pem.write_text(tokens.keys.ec_public_pem())
    monkeypatch.delenv("LILY_JWT_JWKS_URL")
    monkeypatch.setenv("LILY_JWT_PUBLIC_KEY_FILE", str(pem))
    live = serve()
    assert_error(
        live.post_events("acme", envelope(), tokens.es256(forged=True)), 401, "unauthenticated"
    )
    assert_nothing_stored(live)


def test_no_issuer_configured_refuses_every_token(
    serve: Callable[[], Live], tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LILY_JWT_HS256_SECRET")
    monkeypatch.delenv("LILY_JWT_JWKS_URL")
    live = serve()
    assert_error(live.post_events("acme", envelope(), tokens.hs256()), 401, "unauthenticated")
    assert_nothing_stored(live)


@pytest.mark.parametrize("shape", ["single", "array"])
def test_body_naming_another_tenant_is_refused_whole(
    live: Live, tokens: Tokens, shape: str
) -> None:
    foreign = envelope(tenant="globex")
    body: Any = foreign if shape == "single" else [envelope(), foreign]
    response = live.post_events("acme", body, tokens.hs256(claims(tenants=["acme", "globex"])))
    error = assert_error(response, 403, "tenant_mismatch")
    assert error["pointer"] == ("/tenant" if shape == "single" else "/1/tenant")
    assert_nothing_stored(live)
    assert live.metric("lily_webhook_rejected_total", reason="tenant_mismatch") == 1


# --- refused: limits and malformed bodies -------------------------------------------------------


@pytest.fixture
def small_body_live(serve: Callable[[], Live], monkeypatch: pytest.MonkeyPatch) -> Live:
    monkeypatch.setenv("LILY_WEBHOOK_MAX_BODY_BYTES", "2000")
    return serve()


def _big_array() -> bytes:
    body = json.dumps([envelope() for _ in range(20)]).encode()
    assert len(body) > 2000
    return body


def test_body_over_the_limit_with_content_length_is_413(
    small_body_live: Live, tokens: Tokens
) -> None:
    response = small_body_live.post_events("acme", _big_array(), tokens.hs256())
    assert_error(response, 413, "too_large")
    assert_nothing_stored(small_body_live)
    # A body just under the limit still goes through.
    assert small_body_live.post_events("acme", envelope(), tokens.hs256()).status_code == 202


def test_body_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not(
    small_body_live: Live, tokens: Tokens
) -> None:
    event = envelope()
    exact = json.dumps(event).encode()
    exact += b" " * (2000 - len(exact))  # JSON allows trailing whitespace
    assert len(exact) == 2000
    assert small_body_live.post_events("acme", exact, tokens.hs256()).status_code == 202
    over = json.dumps(envelope()).encode()
    over += b" " * (2001 - len(over))
    assert_error(small_body_live.post_events("acme", over, tokens.hs256()), 413, "too_large")
    assert list(small_body_live.inbox_by_id()) == [event["event_id"]]


def test_more_than_ten_thousand_events_in_one_request_is_413(live: Live, tokens: Tokens) -> None:
    body = b"[" + b",".join([b"{}"] * 10_001) + b"]"
    assert_error(live.post_events("acme", body, tokens.hs256()), 413, "too_large")
    assert_nothing_stored(live)


def test_streamed_body_over_the_limit_is_413(small_body_live: Live, tokens: Tokens) -> None:
    body = _big_array()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 500):
            yield body[i : i + 500]

    response = small_body_live.client.post(
        "/v1/tenants/acme/events",
        content=chunks(),
        headers={"Content-Type": "application/json", **bearer(tokens.hs256())},
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "too_large")
    assert_nothing_stored(small_body_live)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(live: Live, tokens: Tokens, content_type: str | None) -> None:
    headers = bearer(tokens.hs256())
    if content_type:
        headers["Content-Type"] = content_type
    response = live.client.post(
        "/v1/tenants/acme/events", content=json.dumps(envelope()).encode(), headers=headers
    )
    assert_error(response, 415, "unsupported_media_type")
    assert_nothing_stored(live)


def test_json_with_charset_parameter_is_accepted(live: Live, tokens: Tokens) -> None:
    response = live.post_events(
        "acme", envelope(), tokens.hs256(), {"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 202, response.text


def test_over_the_rate_is_429_with_retry_after(
    serve: Callable[[], Live], tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LILY_WEBHOOK_RATE_PER_S", "1")
    live = serve()
    token = tokens.hs256()
    first = live.post_events("acme", envelope(), token)
    assert first.status_code == 202, first.text
    refused = envelope()
    second = live.post_events("acme", refused, token)
    assert_error(second, 429, "rate_limited")
    assert int(second.headers["retry-after"]) >= 1
    assert refused["event_id"] not in live.inbox_by_id()
    # Another tenant has its own bucket.
    globex = live.post_events(
        "globex", envelope(tenant="globex"), tokens.hs256(claims(tenant="globex"))
    )
    assert globex.status_code == 202, globex.text
    assert live.metric("lily_webhook_rejected_total", reason="rate_limited") == 1
    # And the bucket refills.
    time.sleep(1.1)
    assert live.post_events("acme", refused, token).status_code == 202


def test_per_tenant_rate_from_lily_config(
    serve: Callable[[], Live], tokens: Tokens, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "lily.yaml"
    config.write_text("tenants:\n  - name: acme\n    webhook_rate_per_s: 0.5\n")
    monkeypatch.setenv("LILY_CONFIG", str(config))
    live = serve()
    token = tokens.hs256(claims(tenants=["acme", "globex"], tenant=None))
    assert live.post_events("acme", envelope(), token).status_code == 202
    refused = live.post_events("acme", envelope(), token)
    assert_error(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 2  # 0.5 requests/s: a token every 2 s
    # globex keeps the default rate
    for _ in range(5):
        assert live.post_events("globex", envelope(tenant="globex"), token).status_code == 202


@pytest.mark.parametrize(
    "body",
    [b"{oops", b"", b"[1,", b'{"event_id": "\xff"}', b'{"event_id": "x",}', b"nul\x00"],
    ids=["truncated", "empty", "open-array", "not-utf8", "trailing-comma", "nul"],
)
def test_malformed_json_is_400_with_pointer(live: Live, tokens: Tokens, body: bytes) -> None:
    error = assert_error(live.post_events("acme", body, tokens.hs256()), 400, "malformed_json")
    assert error["pointer"] == ""
    assert_nothing_stored(live)


@pytest.mark.parametrize("body", [b"42", b'"a string"', b"null", b"true"])
def test_json_that_is_not_an_envelope_or_array_is_400(
    live: Live, tokens: Tokens, body: bytes
) -> None:
    error = assert_error(live.post_events("acme", body, tokens.hs256()), 400, "malformed_json")
    assert "pointer" in error
    assert live.inbox() == []


def test_huge_integer_literal_is_a_400_not_a_server_error(live: Live, tokens: Tokens) -> None:
    # Python's json refuses integers of more than 4300 digits with a plain ValueError.
    body = b'{"event_id": ' + b"1" * 5000 + b"}"
    response = live.post_events("acme", body, tokens.hs256())
    assert response.status_code == 400, live.server_log.errors
    assert response.json()["error"] == "malformed_json"


@pytest.mark.parametrize(
    "body",
    [b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000],
    ids=["nested-arrays", "nested-objects"],
)
def test_deeply_nested_json_is_a_400_not_a_server_error(
    live: Live, tokens: Tokens, body: bytes
) -> None:
    # 5000 levels: Python's json raises RecursionError (not a ValueError) long before the end.
    response = live.post_events("acme", body, tokens.hs256())
    assert response.status_code == 400, live.server_log.errors
    assert response.json()["error"] == "malformed_json"


def test_lone_surrogate_escape_is_a_400_not_a_server_error(live: Live, tokens: Tokens) -> None:
    # Valid JSON (RFC 8259 allows the escape) that decodes to a string UTF-8 cannot encode.
    event = envelope()
    body = json.dumps(event).replace(event["event_id"], "\\ud800").encode()
    response = live.post_events("acme", body, tokens.hs256())
    assert response.status_code < 500, live.server_log.errors
    assert response.status_code == 400
    assert live.inbox() == []


def _without(event: dict[str, Any], *path: str) -> dict[str, Any]:
    out = json.loads(json.dumps(event))
    target = out
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return out


@pytest.mark.parametrize(
    ("mutate", "reason", "pointer"),
    [
        (lambda e: _without(e, "asset", "name"), "missing_field", "/asset/name"),
        (lambda e: _without(e, "event_id"), "missing_field", "/event_id"),
        (lambda e: {**e, "op": "merge"}, "unknown_op", "/op"),
        (lambda e: {**e, "event_time": "yesterday"}, "bad_event_time", "/event_time"),
        (lambda e: {**e, "asset": {**e["asset"], "name": "  "}}, "empty_field", "/asset/name"),
        (
            lambda e: {**e, "asset": {**e["asset"], "attributes": {"owner_users": "jdoe"}}},
            "wrong_type",
            "/asset/attributes/owner_users",
        ),
    ],
    ids=["no-name", "no-event-id", "bad-op", "bad-time", "blank-name", "owner-not-list"],
)
def test_single_invalid_envelope_is_400_with_pointer_and_quarantined(
    live: Live,
    tokens: Tokens,
    mutate: Callable[[dict[str, Any]], dict[str, Any]],
    reason: str,
    pointer: str,
) -> None:
    bad = mutate(envelope())
    error = assert_error(live.post_events("acme", bad, tokens.hs256()), 400, reason)
    assert error["pointer"] == pointer
    assert live.inbox() == []
    quarantined = live.quarantine("acme")
    assert quarantined.height == 1
    row = quarantined.row(0, named=True)
    assert row["reason"] == reason
    assert json.loads(row["raw"]) == bad
    assert live.metric("lily_webhook_rejected_total", reason=reason) == 1


def test_array_with_one_invalid_item_accepts_the_rest_and_quarantines_it(
    live: Live, tokens: Tokens
) -> None:
    good_a, good_b = envelope(), envelope()
    bad = _without(envelope(), "asset", "name")
    response = live.post_events("acme", [good_a, bad, good_b], tokens.hs256())
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == [good_a["event_id"], good_b["event_id"]]
    assert len(body["rejected"]) == 1
    rejected = body["rejected"][0]
    assert rejected["index"] == 1
    assert rejected["event_id"] == bad["event_id"]
    assert rejected["reason"] == "missing_field"
    assert rejected["pointer"] == "/1/asset/name"
    assert set(live.inbox_by_id()) == {good_a["event_id"], good_b["event_id"]}
    quarantined = live.quarantine("acme")
    assert quarantined.get_column("event_id").to_list() == [bad["event_id"]]
    assert json.loads(quarantined.get_column("raw")[0]) == bad


def test_event_over_max_event_bytes_is_quarantined_as_oversized(
    serve: Callable[[], Live], tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LILY_MAX_EVENT_BYTES", "600")
    live = serve()
    big = envelope(attributes={"description": "x" * 1000})
    small = envelope()
    response = live.post_events("acme", [small, big], tokens.hs256())
    assert response.status_code == 202, response.text
    assert [r["reason"] for r in response.json()["rejected"]] == ["oversized"]
    assert set(live.inbox_by_id()) == {small["event_id"]}
    assert live.quarantine("acme").get_column("reason").to_list() == ["oversized"]


# --- tenant in the path -------------------------------------------------------------------------


def _files(root: Path, skip: Path) -> set[Path]:
    return {p for p in root.rglob("*") if skip not in p.parents and p != skip}


@pytest.mark.parametrize(
    "target",
    [
        "/v1/tenants/../events",
        "/v1/tenants/..%2f..%2fetc/events",
        "/v1/tenants/a%2f..%2fb/events",
        "/v1/tenants/%2e%2e/events",
        "/v1/tenants/ACME/events",
        "/v1/tenants/acme%00/events",
        "/v1/tenants/acme%0a/events",
        "/v1/tenants/-acme/events",
        "/v1/tenants/acme;drop/events",
        "/v1/tenants/%27%20OR%201=1--/events",
        "/v1/tenants/" + "a" * 64 + "/events",
        "/v1/tenants/" + "a" * 5000 + "/events",
    ],
)
def test_hostile_tenant_in_the_path_is_refused_and_writes_nothing(
    live: Live, tokens: Tokens, target: str, tmp_path: Path
) -> None:
    home = live.settings.home
    outside_before = _files(tmp_path, home)
    inside_before = _files(home, home / "inbox")
    global_audit = home / "audit" / "_global.jsonl"
    audited_before = global_audit.read_text().count("\n") if global_audit.exists() else 0
    # The raw request target, exactly as written (httpx would normalise "..").
    token = tokens.hs256(claims(tenant=None, tenants=["acme", "..", "ACME", "a/../b"]))
    response = live.client.post(
        live.url + "/v1/tenants/x/events",
        content=json.dumps(envelope()).encode(),
        headers={"Content-Type": "application/json", **bearer(token)},
        extensions={"target": target.encode()},
    )
    assert response.status_code in (400, 404), response.text
    body = response.json()
    assert set(body) >= {"error", "detail"}
    assert live.inbox() == []
    assert _files(tmp_path, home) == outside_before
    # Under $LILY_HOME only the audit trail changed: the refusal is in the global log (the
    # path names no tenant whose log it could go to).
    assert _files(home, home / "inbox") - inside_before <= {home / "audit", global_audit}
    entries = [json.loads(line) for line in global_audit.read_text().splitlines()]
    assert len(entries) == audited_before + 1
    assert entries[-1]["decision"] == "deny" and entries[-1]["status"] == response.status_code
    assert live.quarantine_tenants() == []


def test_odd_qualified_name_is_stored_verbatim_and_harmless(live: Live, tokens: Tokens) -> None:
    nasty = (
        'default/snowflake/1/DB/SCH/x\'); DROP TABLE inbox; -- "q" `b` '
        "../../../../etc/passwd \\\\server\\share %00 ${HOME} $(id) <script>é漢</script>"
    )
    # A type whose qualified names have no fixed structure (a Table's must have 6 segments).
    event = envelope(
        qualified_name=nasty, name="x'; DELETE FROM inbox; --", type_name="TableauDashboard"
    )
    response = live.post_events("acme", event, tokens.hs256())
    assert response.status_code == 202, response.text
    stored = live.inbox_by_id()[event["event_id"]]
    assert stored["asset"]["qualified_name"] == nasty
    assert stored["asset"]["name"] == "x'; DELETE FROM inbox; --"
    # The inbox still works, and nothing appeared outside LILY_HOME's own directories.
    after = envelope()
    assert live.post_events("acme", after, tokens.hs256()).status_code == 202
    assert set(live.inbox_by_id()) == {event["event_id"], after["event_id"]}
    # The inbox, the audit log of the requests and the tenant's data key (sealing the
    # payloads): no file is named after the record.
    assert sorted(p.name for p in live.settings.home.iterdir()) == ["audit", "inbox", "keys"]
    assert sorted(p.name for p in (live.settings.home / "audit").iterdir()) == ["acme.jsonl"]


def test_event_ids_with_unicode_and_quotes_round_trip(live: Live, tokens: Tokens) -> None:
    ids = [unique("é漢字"), unique("q'\"`"), unique("a b\tc")]
    events = [envelope(event_id=i) for i in ids]
    response = live.post_events("acme", events, tokens.hs256())
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == ids
    assert set(live.inbox_by_id()) == set(ids)


# --- health, metrics, OpenAPI, unknown routes ---------------------------------------------------


def test_healthz(live: Live, tokens: Tokens) -> None:
    response = live.client.get("/healthz")
    assert response.status_code == 200
    before = response.json()
    assert before["status"] == "ok"
    live.post_events("acme", [envelope(), envelope()], tokens.hs256())
    after = live.client.get("/healthz").json()
    assert after["status"] == "ok"
    # The inbox position moves when events are stored (its form is the inbox's own).
    assert set(after) == set(before)
    assert after != before


def test_metrics_are_prometheus_text_with_counts_and_latency(live: Live, tokens: Tokens) -> None:
    live.post_events("acme", [envelope(), envelope()], tokens.hs256())
    live.post_events("acme", envelope(), None)
    response = live.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE lily_webhook_requests_total counter" in text
    assert "# TYPE lily_webhook_request_seconds histogram" in text
    assert "lily_webhook_request_seconds_bucket{" in text
    assert live.metric("lily_webhook_requests_total", endpoint="tenant_events", status="202") == 1
    assert live.metric("lily_webhook_requests_total", endpoint="tenant_events", status="401") == 1
    assert live.metric("lily_webhook_request_seconds_count", endpoint="tenant_events") == 2
    assert live.metric("lily_webhook_events_accepted_total", tenant="acme") == 2
    assert live.metric("lily_webhook_inbox_depth") == 2


def test_openapi_document(live: Live) -> None:
    response = live.client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert "/v1/tenants/{tenant}/events" in document["paths"]
    # One operation per vendor, each with its own content type and signature.
    for vendor in ("atlan", "monte-carlo", "slack", "teams"):
        assert f"/v1/webhooks/{vendor}/{{tenant}}" in document["paths"]
    post = document["paths"]["/v1/tenants/{tenant}/events"]["post"]
    assert set(post["responses"]) == {"202", "400", "401", "403", "413", "415", "429"}
    assert post["parameters"][0]["schema"]["pattern"] == "^[a-z0-9][a-z0-9-]{0,62}$"
    assert post["security"] == [{"bearer": []}]
    assert "WWW-Authenticate" in post["responses"]["401"]["headers"]
    assert "Retry-After" in post["responses"]["429"]["headers"]
    metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4; charset=utf-8"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert live.client.get("/openapi.json").json() == document


def test_openapi_refs_resolve_in_every_app_of_the_process(serve: Callable[[], Live]) -> None:
    # Two receivers in one process (tests, reloads): each one's document must be whole.
    documents = [serve().client.get("/openapi.json").json() for _ in range(2)]
    for document in documents:
        text = json.dumps(document)
        schemas = document.get("components", {}).get("schemas", {})
        for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
            assert ref.rsplit("/", 1)[1] in schemas, ref


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/v1/tenants/acme", 404),
        ("GET", "/v1/tenants/acme/events", 405),
        ("DELETE", "/healthz", 405),
    ],
)
def test_unknown_routes_answer_with_the_error_body(
    live: Live, method: str, path: str, status: int
) -> None:
    response = live.client.request(method, path)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] in ("not_found", "method_not_allowed")
    if status == 405:  # RFC 9110: the methods the path takes
        assert response.headers["allow"] in ("GET", "POST")
