"""What the receiver's routes share: configuration, token verifier, inbox, quarantine,
quota and metrics (one `ReceiverState` per app, at `app.state.receiver`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from lily_dagster.api.metrics import Metrics
from lily_dagster.lib.access.cursor import CursorSigner
from lily_dagster.lib.access.snapshot import SnapshotStore
from lily_dagster.lib.audit import AuditLog, AuditWriter
from lily_dagster.lib.hub import open_hub
from lily_dagster.lib.inbox import Inbox, open_inbox
from lily_dagster.lib.metrics import MetricsStore
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.receiver.auth import AuthConfig, TokenVerifier, auth_config_from_env
from lily_dagster.lib.receiver.body import CheckedBody, quarantine_rejects
from lily_dagster.lib.receiver.rate_limit import RateLimiter
from lily_dagster.lib.receiver.vendors import check_vendor_config
from lily_dagster.settings import LilyConfigFile, Settings, jwt_environment

# The `source` of events posted to the tenants API (vendors' events carry the vendor's).
INGEST_SOURCE = "tenants-api"


@dataclass
class ReceiverState:
    settings: Settings
    config: LilyConfigFile
    verifier: TokenVerifier
    inbox: Inbox
    quarantine: QuarantineStore
    limiter: RateLimiter
    metrics: Metrics
    snapshots: SnapshotStore
    cursors: CursorSigner
    audit: AuditWriter

    async def store(self, tenant: str, checked: CheckedBody) -> dict[str, Any]:
        """Quarantine the rejected events, commit the valid ones, and say which were which."""
        quarantine_rejects(self.quarantine, tenant, checked)
        for rejected in checked.rejected:
            self.metrics.rejected.labels(rejected["reason"]).inc()
        result = await asyncio.wrap_future(self.inbox.append(checked.valid))
        source = checked.valid[0].source if checked.valid else INGEST_SOURCE
        self.metrics.accepted.labels(tenant, source).inc(result.stored)
        self.metrics.duplicates.labels(tenant).inc(result.duplicates)
        return {
            "accepted": [e.event_id for e in checked.valid],
            "duplicates": result.duplicates,
            "rejected": checked.rejected,
        }


def build_state(
    settings: Settings,
    inbox: Inbox | None = None,
    auth: AuthConfig | None = None,
    audit: AuditWriter | None = None,
) -> ReceiverState:
    """The state, configuration checked first: a bad vendor or token setting fails here."""
    config = settings.config
    check_vendor_config(config)
    # What Lily wrote to the hub: the access API's source.
    records = open_hub(settings).read_store()
    return ReceiverState(
        settings=settings,
        config=config,
        verifier=TokenVerifier(auth or auth_config_from_env(jwt_environment())),
        inbox=inbox or open_inbox(settings),
        quarantine=QuarantineStore.from_settings(settings),
        limiter=RateLimiter(
            settings.webhook_rate_per_s,
            {t.name: t.webhook_rate_per_s for t in config.tenants if t.webhook_rate_per_s},
        ),
        metrics=Metrics(MetricsStore.from_settings(settings)),
        snapshots=SnapshotStore(records),
        cursors=CursorSigner(settings.home / "keys" / "cursor-signing.key"),
        audit=audit or AuditWriter(AuditLog(settings.audit_dir)),
    )
