"""Monte Carlo incidents, polled from its GraphQL API (`getIncidents`, relay paging).

Options (LILY_CONFIG, tenants[].pollers.monte-carlo):
  url                        GraphQL endpoint (default https://api.getmontecarlo.com/graphql)
  id_env, token_env          variables holding the API key id and token (x-mcd-id, x-mcd-token)
  connection_qualified_name  Atlan connection of the monitored warehouse
  page_size                  incidents per request (default 100)

The cursor is the `createdTime` of the newest incident seen; each poll asks for incidents
created since then and pages through all of them. Incidents become the same envelopes as
the Monte Carlo webhook (an MCIncident asset plus a data-quality change on each table).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from lily_dagster.lib.pollers import PollError, PollResult, register_poller
from lily_dagster.lib.webhooks.vendors.monte_carlo import incident_envelopes
from lily_dagster.settings import PollerConfig

DEFAULT_URL = "https://api.getmontecarlo.com/graphql"
QUERY = """
query getIncidents($first: Int!, $after: String, $startTime: DateTime) {
  getIncidents(first: $first, after: $after, startTime: $startTime) {
    pageInfo { hasNextPage endCursor }
    edges {
      node {
        uuid
        incidentType
        severity
        createdTime
        feedback
        events(first: 100) { edges { node { table { fullTableId } } } }
      }
    }
  }
}
"""


def _incident(node: dict[str, Any]) -> dict[str, Any]:
    tables = [
        edge["node"]["table"]["fullTableId"]
        for edge in (node.get("events") or {}).get("edges") or []
        if (edge.get("node") or {}).get("table")
    ]
    return {
        "incident_id": node.get("uuid"),
        "incident_type": node.get("incidentType"),
        "severity": node.get("severity"),
        "state": node.get("feedback") or "open",
        "created_time": node.get("createdTime"),
        "tables": tables,
    }


@register_poller("monte-carlo")
class MonteCarloIncidents:
    name = "monte-carlo"
    interval_s = 60

    def poll(self, tenant: str, config: PollerConfig, cursor: str | None) -> PollResult:
        url = config.option("url", DEFAULT_URL) or DEFAULT_URL
        headers = {"x-mcd-id": config.secret("id_env"), "x-mcd-token": config.secret("token_env")}
        connection = config.option("connection_qualified_name", "default/monte-carlo/0") or ""
        page_size = int(config.option("page_size", "100") or 100)
        envelopes: list[dict[str, Any]] = []
        newest = cursor
        after: str | None = None
        with httpx.Client(timeout=30) as client:
            while True:
                variables = {"first": page_size, "after": after, "startTime": cursor}
                try:
                    response = client.post(
                        url, json={"query": QUERY, "variables": variables}, headers=headers
                    )
                except httpx.HTTPError as exc:
                    raise PollError(f"Monte Carlo API unreachable: {exc}") from None
                if response.status_code in (401, 403):
                    raise PollError(f"Monte Carlo API refused the key ({response.status_code})")
                if response.status_code != 200:
                    raise PollError(f"Monte Carlo API answered {response.status_code}")
                body = response.json()
                if body.get("errors"):
                    raise PollError(f"Monte Carlo API error: {body['errors'][0].get('message')}")
                page = (body.get("data") or {}).get("getIncidents") or {}
                for edge in page.get("edges") or []:
                    incident = _incident(edge.get("node") or {})
                    created = incident["created_time"]
                    if cursor is not None and isinstance(created, str) and created <= cursor:
                        continue  # seen in an earlier poll (startTime is inclusive)
                    envelopes.extend(incident_envelopes(incident, connection, time.time()))
                    if isinstance(created, str) and (newest is None or created > newest):
                        newest = created
                info = page.get("pageInfo") or {}
                if not info.get("hasNextPage"):
                    break
                after = info.get("endCursor")
        return PollResult(envelopes=envelopes, cursor=newest)
