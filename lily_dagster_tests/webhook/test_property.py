"""Property: whatever a token holder posts to /v1/tenants/{tenant}/events, the receiver never
fails with a 5xx, answers with a contract status, and the inbox holds exactly what it said it
accepted."""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from lily_dagster_tests.webhook.conftest import Live, Tokens, envelope, live_server

ALLOWED = {202, 400, 403, 413}
# Hypothesis keeps caches in ./.hypothesis by default; keep the work tree clean.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "lily-tests-hypothesis")

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)

# Envelopes close to valid, so the 202 path is exercised as much as the 400 one.
type_names = st.sampled_from(["Table", "Column", "Process", "table", "", "X" * 200]) | st.text(
    max_size=8
)
assets = st.fixed_dictionaries(
    {
        "type_name": type_names,
        "qualified_name": st.text(max_size=40) | st.just("default/snowflake/1/DB/S/T"),
        "name": st.text(max_size=10) | st.just("T"),
    },
    optional={
        "attributes": st.dictionaries(
            st.sampled_from(["description", "owner_users", "order", "lily_patch", "x"]),
            json_values,
            max_size=3,
        ),
        "classifications": st.lists(st.text(max_size=6), max_size=3) | json_values,
    },
)
envelopes = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=0, max_size=12),
        "tenant": st.sampled_from(["acme", "acme", "acme", "globex", "ACME", ""]),
        "source": st.text(max_size=8) | st.just("prop"),
        "op": st.sampled_from(["upsert", "delete", "merge"]),
        "event_time": st.sampled_from(
            ["2026-11-23T10:00:00Z", "2026-11-23T10:00:00+01:00", "2026-11-23", "0", ""]
        ),
        "asset": assets | json_values,
    },
    optional={"extra": json_values},
)
bodies = (
    envelopes
    | st.lists(envelopes, max_size=5)
    | json_values
    | st.lists(envelopes | json_values, max_size=4)
)


@pytest.fixture
def prop_live(webhook_env: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LILY_WEBHOOK_RATE_PER_S", "100000")
    with live_server() as live:
        yield live


def _post(live: Live, token: str, content: bytes, fresh_ids: bool) -> int:
    """Post `content`; check the status and that the inbox gained exactly what was accepted.

    `fresh_ids`: the body's event ids are new to the inbox (and unique within the body)."""
    before = live.last_seq()
    response = live.client.post(
        "/v1/tenants/acme/events",
        content=content,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    assert response.status_code < 500, (content[:300], live.server_log.errors)
    assert response.status_code in ALLOWED, (response.status_code, response.text[:300])
    body = response.json()
    assert isinstance(body, dict)
    new = live.inbox_after(before)
    if response.status_code != 202:
        assert set(body) >= {"error", "detail"}
        assert new == [], "a refused request stored events"
        return int(response.status_code)
    accepted: list[str] = body["accepted"]
    assert all(e.tenant == "acme" and e.source == "tenants-api" for e in new)
    assert len(new) + body["duplicates"] == len(accepted)
    if fresh_ids:
        assert [e.event_id for e in new] == accepted
    else:
        assert {e.event_id for e in new} <= set(accepted)
    posted = json.loads(content)
    items = posted if isinstance(posted, list) else [posted]
    assert len(body["rejected"]) + len(accepted) == len(items)
    assert sorted(r["index"] for r in body["rejected"]) == [r["index"] for r in body["rejected"]]
    # Each accepted event is stored exactly as posted (the same JSON value).
    for event in new:
        stored = json.loads(event.payload)
        assert stored["tenant"] == "acme"
        candidates = [
            i for i in items if isinstance(i, dict) and i.get("event_id") == stored["event_id"]
        ]
        assert stored in candidates
    return 202


_unique = itertools.count()


def test_arbitrary_json_never_breaks_the_receiver(prop_live: Live, tokens: Tokens) -> None:
    token = tokens.hs256()

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(body=bodies)
    @example(body=envelope())
    @example(body=[envelope(), {"event_id": 1}])
    @example(body={"tenant": "globex"})
    def check(body: Any) -> None:
        # Fresh event ids per example, so "accepted" can be compared with what is new.
        n = next(_unique)
        items = body if isinstance(body, list) else [body]
        for i, item in enumerate(items):
            if isinstance(item, dict) and isinstance(item.get("event_id"), str):
                item["event_id"] = f"p{n}-{i}-{item['event_id']}"
        statuses.append(_post(prop_live, token, json.dumps(body).encode(), fresh_ids=True))

    statuses: list[int] = []
    check()
    # The strategies reach both sides: stored events and refused ones.
    assert {202, 400} <= set(statuses), sorted(set(statuses))


def test_arbitrary_bytes_never_break_the_receiver(prop_live: Live, tokens: Tokens) -> None:
    token = tokens.hs256()

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(body=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
    @example(body=b"")
    @example(body=b"\xef\xbb\xbf{}")
    def check(body: bytes) -> None:
        _post(prop_live, token, body, fresh_ids=False)

    check()
