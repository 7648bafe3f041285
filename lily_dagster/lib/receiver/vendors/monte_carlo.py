"""Monte Carlo webhooks: `x-mcd-signature` = hex HMAC-SHA512 of the body with the secret.

An incident or alert becomes an `MCIncident` asset (pyatlan's type for Monte Carlo
incidents) naming the affected tables in `mc_asset_qualified_names`, plus a partial change
on each affected table setting its `data_quality` attribute, so the incident shows on the
table. Options: `connection_qualified_name`, the Atlan connection of the monitored
warehouse (`default/snowflake/1700000000`), which turns Monte Carlo's `db:schema.table`
ids into Atlan qualified names.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from lily_dagster.lib.receiver.body import parse_json_body
from lily_dagster.lib.receiver.signing import bad_signature, hmac_hex, same
from lily_dagster.lib.receiver.vendors import (
    PluginOptions,
    VendorRequest,
    VendorResult,
    register_vendor,
    vendor_options,
)


def table_qualified_name(connection: str, full_table_id: str) -> str:
    """`db:schema.table` (Monte Carlo) -> `<connection>/DB/SCHEMA/TABLE` (Atlan)."""
    database, _, rest = full_table_id.partition(":")
    schema, _, table = rest.partition(".")
    return "/".join([connection.rstrip("/"), database.upper(), schema.upper(), table.upper()])


def incident_envelopes(
    incident: dict[str, Any], connection: str, received_at: float
) -> list[dict[str, Any]]:
    """Envelopes for one Monte Carlo incident/alert (the `payload` of a webhook, or a polled
    alert, which has the same fields)."""
    incident_id = str(
        incident.get("incident_id") or incident.get("uuid") or incident.get("id") or ""
    )
    kind = str(incident.get("incident_type") or incident.get("type") or "anomaly")
    state = str(incident.get("state") or incident.get("status") or "open")
    event_time = str(
        incident.get("created_time") or incident.get("createdTime") or ""
    ) or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(received_at))
    tables = []
    for item in incident.get("event_list") or incident.get("tables") or []:
        table_id = (
            item.get("full_table_id") or item.get("table_name") if isinstance(item, dict) else item
        )
        if isinstance(table_id, str) and ":" in table_id:
            tables.append(table_qualified_name(connection, table_id))
    summary = {
        "incident_id": incident_id,
        "type": kind,
        "state": state,
        "severity": incident.get("severity"),
        "url": incident.get("url") or incident.get("report_url"),
        "at": event_time,
    }
    version = f"{state}-{event_time}"
    envelopes: list[dict[str, Any]] = [
        {
            "event_id": f"mc-{incident_id}-{version}",
            "source": "monte-carlo",
            "op": "upsert",
            "event_time": event_time,
            "asset": {
                "type_name": "MCIncident",
                "qualified_name": f"{connection.rstrip('/')}/monte-carlo/incident/{incident_id}",
                "name": f"{kind} incident {incident_id}",
                "attributes": {
                    "mc_incident_id": incident_id,
                    "mc_incident_type": kind,
                    "mc_incident_state": state,
                    "mc_incident_severity": summary["severity"],
                    "mc_incident_url": summary["url"],
                    "mc_asset_qualified_names": tables,
                },
            },
        }
    ]
    for table in sorted(set(tables)):
        envelopes.append(
            {
                "event_id": f"mc-{incident_id}-{version}-{table}",
                "source": "monte-carlo",
                "op": "upsert",
                "event_time": event_time,
                "asset": {
                    "type_name": "Table",
                    "qualified_name": table,
                    "name": table.rsplit("/", 1)[-1],
                    "attributes": {"lily_patch": {"set": {"data_quality": summary}}},
                },
            }
        )
    return envelopes


@register_vendor("monte-carlo")
class MonteCarloWebhook:
    name = "monte-carlo"
    content_types = ("application/json",)

    class Options(PluginOptions):
        connection_qualified_name: str = Field(
            "default/monte-carlo/0", description="The connection incidents are filed under."
        )

    signature_headers = ("x-mcd-signature",)
    answers = (202,)

    def verify(self, request: VendorRequest) -> None:
        given = request.headers.get("x-mcd-signature", "").removeprefix("sha512=")
        expected = hmac_hex(request.config.secret().encode(), request.body, "sha512")
        if not same(given, expected):
            raise bad_signature("x-mcd-signature does not match")

    def normalise(self, request: VendorRequest) -> VendorResult:
        data = parse_json_body(request.body)
        connection = vendor_options(self.name, request.config).connection_qualified_name
        if not isinstance(data, dict):
            return VendorResult(ignored=["body is not an object"])
        incident = data.get("payload") if isinstance(data.get("payload"), dict) else data
        if not isinstance(incident, dict) or not any(
            k in incident for k in ("incident_id", "uuid", "id")
        ):
            return VendorResult(ignored=[f"event type {data.get('type')!r} has no incident"])
        return VendorResult(envelopes=incident_envelopes(incident, connection, request.received_at))
