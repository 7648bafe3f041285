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
from pydantic import Field

from lily_dagster.lib.pollers import PluginOptions, PollError, PollResult, register_poller
from lily_dagster.lib.receiver.vendors.monte_carlo import incident_envelopes
from lily_dagster.settings import env_secret

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

    class Options(PluginOptions):
        id_env: str = Field(description="Name of the variable holding the API key id.")
        token_env: str = Field(description="Name of the variable holding the API token.")
        url: str = Field(DEFAULT_URL, description="Monte Carlo's GraphQL endpoint.")
        connection_qualified_name: str = Field(
            "default/monte-carlo/0", description="The connection incidents are filed under."
        )
        page_size: int = Field(100, ge=1, le=1000, description="Incidents per API request.")

    def poll(self, tenant: str, options: Options, cursor: str | None) -> PollResult:
        url = options.url
        headers = {
            "x-mcd-id": env_secret(options.id_env, "poller secret"),
            "x-mcd-token": env_secret(options.token_env, "poller secret"),
        }
        connection = options.connection_qualified_name
        page_size = options.page_size
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
