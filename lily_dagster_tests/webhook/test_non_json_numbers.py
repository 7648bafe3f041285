"""NaN, Infinity and -Infinity are not JSON (RFC 8259), though Python reads them: an event
holding one is malformed_json (a single envelope: 400; in an array: that event is refused
and the others are accepted, as any invalid event of an array is), and is quarantined."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lily_dagster_tests.webhook.conftest import Live, Tokens, envelope


def with_token(event: dict[str, Any], token: str) -> bytes:
    """`event` as JSON whose attribute `score` (in a list, in an object) is `token`."""
    event = json.loads(json.dumps(event))
    event["asset"]["attributes"]["stats"] = {"values": [1.5, "__TOKEN__"]}
    return json.dumps(event).replace('"__TOKEN__"', token).encode()


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_single_envelope_with_nan_or_infinity_is_400_and_quarantined(
    live: Live, tokens: Tokens, token: str
) -> None:
    event = envelope()
    body = with_token(event, token)
    response = live.post_events("acme", body, tokens.hs256())
    assert response.status_code == 400, response.text
    error = response.json()
    assert error == {
        "error": "malformed_json",
        "detail": f"asset.attributes.stats.values.1: Invalid JSON: {token} is not a JSON value "
        "(RFC 8259)",
        "pointer": "/asset/attributes/stats/values/1",
    }
    assert live.inbox() == []
    quarantined = live.quarantine("acme")
    assert quarantined.select("event_id", "reason").rows() == [
        (event["event_id"], "malformed_json")
    ]
    assert token in quarantined.get_column("raw")[0]


def test_array_with_a_nan_event_refuses_that_event_and_accepts_the_rest(
    live: Live, tokens: Tokens
) -> None:
    good_a, bad, good_b = envelope(), envelope(), envelope()
    body = b"[" + b",".join([json.dumps(good_a).encode(), with_token(bad, "NaN"),
                             json.dumps(good_b).encode()]) + b"]"  # fmt: skip
    response = live.post_events("acme", body, tokens.hs256())
    assert response.status_code == 202, response.text
    result = response.json()
    assert result["accepted"] == [good_a["event_id"], good_b["event_id"]]
    assert [(r["index"], r["event_id"], r["reason"], r["pointer"]) for r in result["rejected"]] == [
        (1, bad["event_id"], "malformed_json", "/1/asset/attributes/stats/values/1")
    ]
    assert set(live.inbox_by_id()) == {good_a["event_id"], good_b["event_id"]}
    assert live.quarantine("acme").get_column("event_id").to_list() == [bad["event_id"]]


def test_nan_as_text_is_only_text(live: Live, tokens: Tokens) -> None:
    event = envelope(attributes={"description": "NaN", "unit": "-Infinity"})
    response = live.post_events("acme", event, tokens.hs256())
    assert response.status_code == 202, response.text
    assert live.inbox_by_id()[event["event_id"]] == event
