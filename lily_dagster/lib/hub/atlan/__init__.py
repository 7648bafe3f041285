"""Atlan as the hub (LILY_HUB=atlan): `hub.py` holds the hub, `ledger.py` what Lily knows
Atlan holds, `entities.py` the Atlan entities of hub records, `transport.py` the HTTP calls
(pyatlan, imported only when Atlan is first called) and `rate.py` their pacing."""

from lily_dagster.lib.hub.atlan.hub import AtlanHub
from lily_dagster.settings import AtlanOptions

__all__ = ["AtlanHub", "AtlanOptions"]
