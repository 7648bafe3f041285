"""POST /v1/webhooks/{vendor}/{tenant}: Monte Carlo, Slack and Teams payloads signed the way
each vendor signs them, through a real server, normalised to envelopes in the inbox."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from lily_dagster.api.app import create_app
from lily_dagster.lib.receiver.commands import USAGE
from lily_dagster.settings import ConfigError, Settings
from lily_dagster_tests.webhook.conftest import Live, unique
from lily_dagster_tests.webhook.vendor_setup import (
    CONNECTION,
    VendorSecrets,
    slack_request,
)


def assert_refused(live: Live, response: Any, status: int = 401) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "detail"}
    assert live.inbox() == []


# --- Monte Carlo --------------------------------------------------------------------------------


def mc_body(incident_id: str) -> bytes:
    return json.dumps(
        {
            "type": "incident",
            "payload": {
                "incident_id": incident_id,
                "incident_type": "anomalies",
                "state": "open",
                "severity": "SEV-2",
                "url": f"https://getmontecarlo.com/incidents/{incident_id}",
                "created_time": "2026-11-23T09:30:00Z",
                "event_list": [
                    {"full_table_id": "analytics:prod.orders"},
                    {"full_table_id": "analytics:prod.customers"},
                    {"full_table_id": "analytics:prod.orders"},
                ],
            },
        }
    ).encode()


def mc_post(live: Live, body: bytes, signature: str, tenant: str = "acme") -> Any:
    return live.client.post(
        f"/v1/webhooks/monte-carlo/{tenant}",
        content=body,
        headers={"Content-Type": "application/json", "x-mcd-signature": signature},
    )


def test_monte_carlo_incident_becomes_incident_and_table_patches(
    vendor_live: Live, vendor_secrets: VendorSecrets
) -> None:
    incident_id = unique("inc")
    body = mc_body(incident_id)
    signature = hmac.new(vendor_secrets.monte_carlo.encode(), body, hashlib.sha512).hexdigest()
    response = mc_post(vendor_live, body, signature)
    assert response.status_code == 202, response.text
    assert len(response.json()["accepted"]) == 3
    events = [json.loads(e.payload) for e in vendor_live.inbox()]
    assert {e["tenant"] for e in events} == {"acme"}
    assert {e["source"] for e in events} == {"monte-carlo"}
    incident = next(e for e in events if e["asset"]["type_name"] == "MCIncident")
    assert incident["op"] == "upsert"
    assert incident["asset"]["attributes"]["mc_incident_id"] == incident_id
    orders = f"{CONNECTION}/ANALYTICS/PROD/ORDERS"
    customers = f"{CONNECTION}/ANALYTICS/PROD/CUSTOMERS"
    assert sorted(incident["asset"]["attributes"]["mc_asset_qualified_names"]) == sorted(
        [orders, customers, orders]
    )
    patches = {
        e["asset"]["qualified_name"]: e["asset"]["attributes"]["lily_patch"]
        for e in events
        if e["asset"]["type_name"] == "Table"
    }
    assert set(patches) == {orders, customers}  # one patch per affected table
    for patch in patches.values():
        quality = patch["set"]["data_quality"]
        assert quality["incident_id"] == incident_id
        assert quality["state"] == "open"
        assert quality["severity"] == "SEV-2"
    # Monte Carlo redelivers: the same body again is stored once.
    again = mc_post(vendor_live, body, "sha512=" + signature)
    assert again.status_code == 202, again.text
    assert again.json()["duplicates"] == 3
    assert len(vendor_live.inbox()) == 3


@pytest.mark.parametrize("signature", ["", "deadbeef", "sha512=" + "0" * 128, "wrong-key"])
def test_monte_carlo_bad_signature_is_401(vendor_live: Live, signature: str) -> None:
    body = mc_body(unique("inc"))
    if signature == "wrong-key":
        signature = hmac.new(b"not the secret", body, hashlib.sha512).hexdigest()
    assert_refused(vendor_live, mc_post(vendor_live, body, signature))


def test_monte_carlo_signature_over_another_body_is_401(
    vendor_live: Live, vendor_secrets: VendorSecrets
) -> None:
    signed = mc_body(unique("inc"))
    signature = hmac.new(vendor_secrets.monte_carlo.encode(), signed, hashlib.sha512).hexdigest()
    assert_refused(vendor_live, mc_post(vendor_live, mc_body(unique("inc")), signature))


# --- Slack --------------------------------------------------------------------------------------


def test_slack_certify_command_queues_a_patch(
    vendor_live: Live, vendor_secrets: VendorSecrets
) -> None:
    qn = f"{CONNECTION}/DB/SCH/{unique('ORDERS')}"
    response = slack_request(vendor_live.client, vendor_secrets.slack, f"certify {qn} VERIFIED")
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["response_type"] == "ephemeral"
    assert qn in reply["text"] and "queued" in reply["text"]
    [stored] = vendor_live.inbox()
    event = json.loads(stored.payload)
    assert stored.source == "slack"
    assert event["tenant"] == "acme"
    assert event["op"] == "upsert"
    assert event["asset"]["qualified_name"] == qn
    assert event["asset"]["attributes"]["lily_patch"] == {
        "set": {"certificate_status": "VERIFIED", "certificate_updated_by": "jdoe"}
    }


def test_slack_describe_and_tag_commands(vendor_live: Live, vendor_secrets: VendorSecrets) -> None:
    qn = f"{CONNECTION}/DB/SCH/{unique('T')}"
    for text in (f"describe {qn} Orders, one row per order", f"tag {qn} PII"):
        assert slack_request(vendor_live.client, vendor_secrets.slack, text).status_code == 200
    patches = [
        json.loads(e.payload)["asset"]["attributes"]["lily_patch"] for e in vendor_live.inbox()
    ]
    assert patches == [
        {"set": {"description": "Orders, one row per order"}},
        {"add_classifications": ["PII"]},
    ]


def test_slack_old_timestamp_is_401(vendor_live: Live, vendor_secrets: VendorSecrets) -> None:
    response = slack_request(
        vendor_live.client,
        vendor_secrets.slack,
        f"certify {CONNECTION}/DB/SCH/{unique('T')} VERIFIED",
        timestamp=int(time.time()) - 600,
    )
    assert_refused(vendor_live, response)


def test_slack_replayed_request_is_401(vendor_live: Live, vendor_secrets: VendorSecrets) -> None:
    body = (
        f"command=%2Flily&text=certify+{CONNECTION}%2FDB%2FSCH%2F{unique('T')}+VERIFIED"
        "&user_name=jdoe"
    ).encode()
    ts = int(time.time())
    first = slack_request(vendor_live.client, vendor_secrets.slack, "", body=body, timestamp=ts)
    assert first.status_code == 200, first.text
    second = slack_request(vendor_live.client, vendor_secrets.slack, "", body=body, timestamp=ts)
    assert second.status_code == 401, second.text
    assert len(vendor_live.inbox()) == 1


@pytest.mark.parametrize("signature", ["v0=" + "0" * 64, "v1=abc", "garbage"])
def test_slack_bad_signature_is_401(
    vendor_live: Live, vendor_secrets: VendorSecrets, signature: str
) -> None:
    response = slack_request(
        vendor_live.client,
        vendor_secrets.slack,
        f"certify {CONNECTION}/DB/SCH/{unique('T')} VERIFIED",
        signature=signature,
    )
    assert_refused(vendor_live, response)


def test_slack_signed_with_another_secret_is_401(vendor_live: Live) -> None:
    response = slack_request(
        vendor_live.client, "not-the-signing-secret", f"certify {CONNECTION}/DB/T VERIFIED"
    )
    assert_refused(vendor_live, response)


@pytest.mark.parametrize(
    "text", ["help", "", "frobnicate a b", "certify onlyone", "certify qn SHINY", "tag qn 1bad"]
)
def test_slack_unknown_or_bad_command_answers_usage_and_stores_nothing(
    vendor_live: Live, vendor_secrets: VendorSecrets, text: str
) -> None:
    response = slack_request(vendor_live.client, vendor_secrets.slack, text)
    assert response.status_code == 200, response.text
    reply = response.json()["text"]
    assert reply == USAGE or "certificate must be" in reply or "not a tag name" in reply
    assert vendor_live.inbox() == []
    assert vendor_live.quarantine_tenants() == []


def test_slack_json_content_type_is_415(vendor_live: Live, vendor_secrets: VendorSecrets) -> None:
    response = vendor_live.client.post(
        "/v1/webhooks/slack/acme",
        content=b'{"text": "certify x VERIFIED"}',
        headers={"Content-Type": "application/json"},
    )
    assert_refused(vendor_live, response, 415)


# --- Teams --------------------------------------------------------------------------------------


def teams_activity(text: str, activity_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "type": "message",
            "id": activity_id or unique("1485983408511"),
            "timestamp": "2026-11-23T10:00:00.000Z",
            "serviceUrl": "https://smba.trafficmanager.net/emea/",
            "channelId": "msteams",
            "from": {"id": "29:1XJKJMvc5GBtc2JwZq0oj8tHZmzrQgFmB", "name": "Jane Doe"},
            "conversation": {"id": "19:channel@thread.skype"},
            "text": text,
        }
    ).encode()


def teams_post(live: Live, body: bytes, authorization: str) -> Any:
    return live.client.post(
        "/v1/webhooks/teams/acme",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": authorization},
    )


def teams_sign(secret_b64: str, body: bytes) -> str:
    key = base64.b64decode(secret_b64)
    return "HMAC " + base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


def test_teams_outgoing_webhook_queues_a_patch(
    vendor_live: Live, vendor_secrets: VendorSecrets
) -> None:
    qn = f"{CONNECTION}/DB/SCH/{unique('T')}"
    activity_id = unique("1485983408511")
    body = teams_activity(f"<at>Lily</at> certify {qn} deprecated", activity_id)
    response = teams_post(vendor_live, body, teams_sign(vendor_secrets.teams_b64, body))
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"
    [stored] = vendor_live.inbox()
    event = json.loads(stored.payload)
    assert stored.event_id == f"teams-{activity_id}"
    assert event["asset"]["qualified_name"] == qn
    assert event["asset"]["attributes"]["lily_patch"] == {
        "set": {"certificate_status": "DEPRECATED", "certificate_updated_by": "Jane Doe"}
    }
    # Teams redelivers the same activity: stored once.
    assert (
        teams_post(vendor_live, body, teams_sign(vendor_secrets.teams_b64, body)).status_code == 200
    )
    assert len(vendor_live.inbox()) == 1


@pytest.mark.parametrize("how", ["wrong-key", "bearer", "missing", "other-body"])
def test_teams_bad_hmac_is_401(vendor_live: Live, vendor_secrets: VendorSecrets, how: str) -> None:
    body = teams_activity(f"<at>Lily</at> tag {CONNECTION}/DB/SCH/T PII")
    authorization = {
        "wrong-key": teams_sign(base64.b64encode(b"k" * 32).decode(), body),
        "bearer": "Bearer " + teams_sign(vendor_secrets.teams_b64, body).split()[1],
        "missing": "",
        "other-body": teams_sign(vendor_secrets.teams_b64, body + b" "),
    }[how]
    assert_refused(vendor_live, teams_post(vendor_live, body, authorization))


# --- routing ------------------------------------------------------------------------------------


def test_unknown_vendor_is_404(vendor_live: Live) -> None:
    response = vendor_live.client.post(
        "/v1/webhooks/nope/acme", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert_refused(vendor_live, response, 404)
    assert response.json()["error"] == "unknown_vendor"


@pytest.mark.parametrize("tenant", ["globex", "initech"])
def test_vendor_not_configured_for_the_tenant_is_401(
    vendor_live: Live, vendor_secrets: VendorSecrets, tenant: str
) -> None:
    body = mc_body(unique("inc"))
    # Even correctly signed with acme's secret.
    signature = hmac.new(vendor_secrets.monte_carlo.encode(), body, hashlib.sha512).hexdigest()
    assert_refused(vendor_live, mc_post(vendor_live, body, signature, tenant=tenant))
    response = slack_request(vendor_live.client, vendor_secrets.slack, "help", tenant=tenant)
    assert_refused(vendor_live, response)


def test_vendor_path_with_a_bad_tenant_is_400(vendor_live: Live) -> None:
    response = vendor_live.client.post(
        "/v1/webhooks/slack/ACME",
        content=b"text=help",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_refused(vendor_live, response, 400)


def test_vendor_requests_are_counted_in_metrics(
    vendor_live: Live, vendor_secrets: VendorSecrets
) -> None:
    slack_request(vendor_live.client, vendor_secrets.slack, "help")
    slack_request(vendor_live.client, "wrong", "help")
    assert (
        vendor_live.metric("lily_webhook_requests_total", endpoint="vendor_webhook", status="200")
        == 1
    )
    assert (
        vendor_live.metric("lily_webhook_requests_total", endpoint="vendor_webhook", status="401")
        == 1
    )
    assert vendor_live.metric("lily_webhook_rejected_total", reason="bad_signature") == 1


def test_missing_vendor_secret_variable_fails_at_start_not_per_request(
    vendor_secrets: VendorSecrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `lily webhook serve` builds the app before binding so that bad vendor configuration is
    # a one-line error at start (CONTRACT §2), not a 500 on Slack's first command.
    monkeypatch.delenv("TEST_SLACK_SECRET")
    with pytest.raises(ConfigError, match="TEST_SLACK_SECRET"):
        create_app(Settings.from_env())
