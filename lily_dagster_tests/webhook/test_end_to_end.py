"""From HTTP to the hub: envelopes posted to a real receiver, picked up by the real
webhook_inbox_sensor, processed by tenant_ingest_job in a real Dagster instance; then chat
commands and vendor alerts change only what they name."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    RunRequest,
    SensorResult,
    SkipReason,
    instance_for_test,
)

from lily_dagster.defs.ingest.webhook_sensor import webhook_inbox_sensor
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster_tests import sensor_harness as harness
from lily_dagster_tests.webhook.conftest import Live, Tokens, envelope, iso, unique
from lily_dagster_tests.webhook.vendor_setup import CONNECTION, configure_vendors, slack_request

ORPHAN_WAIT_S = 1


def tick(instance: DagsterInstance, cursor: str | None) -> SensorResult | SkipReason:
    return harness.tick(webhook_inbox_sensor, instance, cursor)


def tick_and_run(instance: DagsterInstance, cursor: str | None) -> tuple[str, list[RunRequest]]:
    result = tick(instance, cursor)
    assert isinstance(result, SensorResult), result
    runs = harness.run_requested(instance, result)
    assert result.cursor
    return result.cursor, runs


def hub(live: Live, tenant: str = "acme") -> dict[str, dict[str, Any]]:
    return {r["qualified_name"]: r for r in LocalHub.from_settings(live.settings).export(tenant)}


def test_webhook_to_hub_then_chat_command_and_alert_patch_only_what_they_name(
    webhook_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    serve: Callable[[], Live],
    tokens: Tokens,
) -> None:
    secrets = configure_vendors(tmp_path, monkeypatch)
    monkeypatch.setenv("LILY_ORPHAN_WAIT_S", str(ORPHAN_WAIT_S))
    live = serve()
    an_hour_ago = iso(datetime.now(UTC) - timedelta(hours=1))
    table_qn = f"{CONNECTION}/ANALYTICS/PROD/ORDERS"
    table = envelope(
        qualified_name=table_qn,
        event_time=an_hour_ago,
        attributes={
            "description": "one row per order",
            "owner_users": ["JDoe"],
            "row_count": 1200,
            "certificate_status": "DRAFT",
        },
        classifications=["Finance"],
    )
    columns = [
        envelope(
            qualified_name=f"{table_qn}/{name}",
            type_name="Column",
            event_time=an_hour_ago,
            attributes={
                "description": f"the {name.lower()}",
                "parent_qualified_name": table_qn,
                "data_type": "VARCHAR",
                "order": i,
            },
            classifications=["PII"] if name == "EMAIL" else [],
        )
        for i, name in enumerate(["ID", "EMAIL"])
    ]
    response = live.post_events("acme", [table, *columns], tokens.rs256())
    assert response.status_code == 202, response.text

    with instance_for_test() as instance:
        # 1. Full upserts reach the hub.
        cursor, runs = tick_and_run(instance, None)
        assert [r.partition_key for r in runs] == ["acme"]
        assert "acme" in instance.get_dynamic_partitions("tenants")
        records = hub(live)
        assert set(records) == {table_qn, f"{table_qn}/ID", f"{table_qn}/EMAIL"}
        before = records[table_qn]
        assert before["status"] == "ACTIVE"
        assert before["type_name"] == "Table"
        assert before["attributes"] == {
            "description": "one row per order",
            "owner_users": ["jdoe"],  # normalised on the way in
            "row_count": 1200,
            "certificate_status": "DRAFT",
        }
        assert before["classifications"] == ["Finance"]
        # The default pre-ingest chain classifies personal data; ID stays untagged.
        assert records[f"{table_qn}/EMAIL"]["classifications"] == [
            "PII",
            "GDPR:personal-data",
            "PII:email",
        ]
        assert records[f"{table_qn}/ID"]["classifications"] == []
        assert records[f"{table_qn}/ID"]["attributes"]["parent_qualified_name"] == table_qn

        # 2. A Slack certify and a Monte Carlo alert on the table: partial changes.
        certify = slack_request(live.client, secrets.slack, f"certify {table_qn} VERIFIED")
        assert certify.status_code == 200, certify.text
        incident = json.dumps(
            {
                "type": "incident",
                "payload": {
                    "incident_id": unique("inc"),
                    "incident_type": "freshness",
                    "state": "open",
                    "severity": "SEV-1",
                    "created_time": iso(datetime.now(UTC) - timedelta(minutes=10)),
                    "event_list": [{"full_table_id": "analytics:prod.orders"}],
                },
            }
        ).encode()
        alert = live.client.post(
            "/v1/webhooks/monte-carlo/acme",
            content=incident,
            headers={
                "Content-Type": "application/json",
                "x-mcd-signature": hmac.new(
                    secrets.monte_carlo.encode(), incident, hashlib.sha512
                ).hexdigest(),
            },
        )
        assert alert.status_code == 202, alert.text
        cursor, runs = tick_and_run(instance, cursor)
        assert len(runs) == 1
        after = hub(live)
        patched = after[table_qn]
        assert patched["attributes"]["certificate_status"] == "VERIFIED"
        assert patched["attributes"]["certificate_updated_by"] == "jdoe"
        assert patched["attributes"]["data_quality"]["type"] == "freshness"
        unchanged = {
            k: v
            for k, v in patched["attributes"].items()
            if k not in ("certificate_status", "certificate_updated_by", "data_quality")
        }
        assert unchanged == {
            k: v for k, v in before["attributes"].items() if k != "certificate_status"
        }
        for key in ("type_name", "name", "status", "classifications"):
            assert patched[key] == before[key], key
        # The columns were not touched; the incident is a record of its own.
        for column in (f"{table_qn}/ID", f"{table_qn}/EMAIL"):
            assert after[column] == records[column]
        [incident_record] = [r for r in after.values() if r["type_name"] == "MCIncident"]
        assert incident_record["attributes"]["mc_asset_qualified_names"] == [table_qn]
        assert QuarantineStore.from_settings(live.settings).read("acme").is_empty()

        # 3. A command for an asset the hub does not hold waits for it (events arrive in
        # any order), then, after LILY_ORPHAN_WAIT_S, ends in the quarantine as orphan.
        missing_qn = f"{CONNECTION}/ANALYTICS/PROD/{unique('NOPE')}"
        certify_missing = slack_request(
            live.client, secrets.slack, f"certify {missing_qn} VERIFIED"
        )
        assert certify_missing.status_code == 200
        cursor, runs = tick_and_run(instance, cursor)
        assert len(runs) == 1
        assert missing_qn not in hub(live)
        assert QuarantineStore.from_settings(live.settings).read("acme").is_empty()
        time.sleep(ORPHAN_WAIT_S + 0.2)
        describe = slack_request(live.client, secrets.slack, f"describe {table_qn} Orders")
        assert describe.status_code == 200
        cursor, runs = tick_and_run(instance, cursor)  # any later batch expires the wait
        assert len(runs) == 1
        assert missing_qn not in hub(live)
        quarantined = QuarantineStore.from_settings(live.settings).read("acme")
        assert quarantined.get_column("reason").to_list() == ["orphan"]
        raw = json.loads(quarantined.get_column("raw")[0])
        assert raw["asset"]["qualified_name"] == missing_qn
        final = hub(live)[table_qn]
        assert final["attributes"] == {**patched["attributes"], "description": "Orders"}

        # 4. Nothing new: the next tick skips and keeps the cursor.
        idle = tick(instance, cursor)
        assert isinstance(idle, SkipReason), idle
        assert "no new" in (idle.skip_message or "")
