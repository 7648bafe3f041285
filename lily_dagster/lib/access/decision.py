"""The policy decision point: whether a principal may take an action on a tenant's data.

Every bearer-token route of the receiver (CONTRACT.md §4, §6), the CLI's operator commands
and the Dagster jobs that change state ask `decide` (vendor webhooks are authenticated by
their signature, configured per tenant, instead); what a permitted reader may see of each
record is then `policy.Visibility`. Roles are scopes (RBAC): each action needs one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

READ_SCOPE = "lily:read"
PII_SCOPE = "lily:read:pii"
AUDIT_SCOPE = "lily:audit"
INGEST_SCOPE = "lily:ingest"
# Held by the operator's own identities (the CLI on the machine, a Dagster run), never
# needed by a token: operator actions are not HTTP routes.
OPERATE_SCOPE = "lily:operate"


class Action(StrEnum):
    """What a principal does; the audit log's `action`."""

    ASSETS_LIST = "assets.list"
    ASSETS_GET = "assets.get"
    LINEAGE_READ = "lineage.read"
    CHANGES_READ = "changes.read"
    AUDIT_READ = "audit.read"
    EVENTS_INGEST = "events.ingest"
    WEBHOOK_INGEST = "webhook.ingest"
    QUARANTINE_REPLAY = "quarantine.replay"
    DLQ_REPLAY = "dlq.replay"
    GDPR_ERASE = "gdpr.erase"
    TENANT_DELETE = "tenant.delete"
    KEYS_ROTATE = "keys.rotate"
    EVENTS_TRACE = "events.trace"


REQUIRED_SCOPE: dict[Action, str] = {
    Action.ASSETS_LIST: READ_SCOPE,
    Action.ASSETS_GET: READ_SCOPE,
    Action.LINEAGE_READ: READ_SCOPE,
    Action.CHANGES_READ: READ_SCOPE,
    Action.AUDIT_READ: AUDIT_SCOPE,
    Action.EVENTS_INGEST: INGEST_SCOPE,
    Action.QUARANTINE_REPLAY: OPERATE_SCOPE,
    Action.DLQ_REPLAY: OPERATE_SCOPE,
    Action.GDPR_ERASE: OPERATE_SCOPE,
    Action.TENANT_DELETE: OPERATE_SCOPE,
    Action.KEYS_ROTATE: OPERATE_SCOPE,
    Action.EVENTS_TRACE: OPERATE_SCOPE,
}


@dataclass(frozen=True)
class Principal:
    """Who asks: a verified token, or an operator's own identity."""

    subject: str
    tenants: frozenset[str]  # the tenants it names; `ALL_TENANTS` for an operator
    scopes: frozenset[str]
    expires_at: float = float("inf")
    groups: frozenset[str] = frozenset()

    def names(self, tenant: str) -> bool:
        return ALL_TENANTS in self.tenants or tenant in self.tenants


ALL_TENANTS = "*"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    code: str = ""  # why not: insufficient_scope | wrong_tenant
    detail: str = ""

    @property
    def label(self) -> str:
        return "allow" if self.allowed else "deny"


def decide(principal: Principal, action: Action, tenant: str) -> Decision:
    """Whether `principal` may take `action` on `tenant`: it needs the action's scope and
    must name the tenant."""
    scope = REQUIRED_SCOPE[action]
    if scope not in principal.scopes:
        return Decision(False, "insufficient_scope", f"token lacks scope {scope!r}")
    if not principal.names(tenant):
        return Decision(False, "wrong_tenant", f"token does not grant tenant {tenant!r}")
    return Decision(True)


def operator(subject: str) -> Principal:
    """The operator's own identity (audit.operator_subject, audit.run_subject)."""
    return Principal(
        subject=subject,
        tenants=frozenset({ALL_TENANTS}),
        scopes=frozenset({OPERATE_SCOPE}),
    )
