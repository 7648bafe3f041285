"""webhook: the outbound webhook target of CONTRACT.md §5.

Each batch is one `POST url` with the JSON body `{"tenant", "target", "changes": [change
objects in change-log order]}`, the header `X-Lily-Signature: sha256=<hex HMAC-SHA256 of the
raw body with the secret>` and the header `Idempotency-Key` (identical on retries).
Receivers check the signature with `verify_signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from lily_dagster.lib.plugins import NoOptions, parse_options
from lily_dagster.lib.targets import (
    DeliveryContext,
    change_objects,
    post_json,
    register_target,
    secret_of,
)
from lily_dagster.lib.targets.render import http_url
from lily_dagster.settings import TargetConfig

if TYPE_CHECKING:
    from lily_dagster.lib.alerts import Alert

SIGNATURE_HEADER = "X-Lily-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_PREFIX = "sha256="


def sign(body: bytes, secret: str) -> str:
    """The `X-Lily-Signature` value of a body: `sha256=<hex HMAC-SHA256 of body>`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return _PREFIX + digest


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """Whether `header` (an `X-Lily-Signature` value) signs `body` with `secret`; compared
    in constant time."""
    if not header:
        return False
    expected = sign(body, secret).encode("ascii")
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


def webhook_body(changes: pl.DataFrame, ctx: DeliveryContext) -> bytes:
    """The request body: compact JSON, UTF-8 (sign exactly these bytes)."""
    payload = {"tenant": ctx.tenant, "target": ctx.target, "changes": change_objects(changes)}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    secret: str = field(repr=False)


@register_target("webhook")
class WebhookTarget:
    """Options: url (http/https, required), secret_env (the name of the variable holding
    the HMAC key, required); nothing else."""

    name = "webhook"

    def configure(self, config: TargetConfig) -> WebhookConfig:
        parse_options(NoOptions, config.model_extra)
        url = http_url(config.url)
        return WebhookConfig(url=url, secret=secret_of(config))

    def deliver(self, changes: pl.DataFrame, config: WebhookConfig, ctx: DeliveryContext) -> None:
        body = webhook_body(changes, ctx)
        headers = {
            SIGNATURE_HEADER: sign(body, config.secret),
            IDEMPOTENCY_HEADER: ctx.idempotency_key,
        }
        post_json(config.url, body, headers, ctx.timeout_s)

    def alert(self, alert: Alert, config: WebhookConfig, ctx: DeliveryContext) -> None:
        """An alert of the alert sensor: `{"alert": {key, status, value, threshold, at,
        text}}`, signed as deliveries are."""
        body = json.dumps({"alert": alert.as_dict()}).encode()
        headers = {
            SIGNATURE_HEADER: sign(body, config.secret),
            IDEMPOTENCY_HEADER: ctx.idempotency_key,
        }
        post_json(config.url, body, headers, ctx.timeout_s)
