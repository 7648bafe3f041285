"""Outbound targets: where hub changes are delivered (dbt, Snowflake, Slack, Teams, webhooks).

A target is one module that registers itself: in `lily_dagster.lib.targets.builtin`, or in
a third-party package through the entry point group `lily_dagster.targets`:

    @register_target("webhook")
    class WebhookTarget:
        class Options(PluginOptions): ...   # its own options, beside the common ones
        def configure(self, config: TargetConfig) -> Any:
            options = parse_options(self.Options, config.model_extra)  # ConfigError when wrong
            ...
        def deliver(self, changes: pl.DataFrame, config: Any, ctx: DeliveryContext) -> None: ...

`deliver` gets a batch of changes (CHANGE_SCHEMA, in change-log order) and either delivers
all of it, or raises `TargetUnavailableError` (5xx, timeout, refused connection: retried
with backoff, then left for the next run) or `TargetRejectedError` (any other 4xx: the batch
goes to the target's dead-letter queue). The same `ctx.idempotency_key` is given on every
retry of the same batch.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from lily_dagster.lib.hub.changelog import CHANGE_SCHEMA
from lily_dagster.lib.plugins import registry
from lily_dagster.lib.strict_json import finite_loads
from lily_dagster.settings import ConfigError, TargetConfig, env_secret

__all__ = [
    "CHANGE_SCHEMA",
    "DeliveryContext",
    "Target",
    "TargetRejectedError",
    "TargetUnavailableError",
    "change_objects",
    "get_target",
    "post_json",
    "register_target",
    "secret_of",
    "target_types",
]


class TargetUnavailableError(Exception):
    """The target could not take the batch now (5xx, timeout, refused): retry later."""


class TargetRejectedError(Exception):
    """The target refused the batch (4xx other than 408/429): dead-letter it, no retry."""


@dataclass(frozen=True)
class DeliveryContext:
    tenant: str
    target: str  # the configured target's name
    idempotency_key: str  # unique per batch, identical on its retries
    timeout_s: float


class Target(Protocol):
    name: str

    def configure(self, config: TargetConfig) -> Any:
        """Check the target's configuration at load; return what `deliver` needs."""
        ...

    def deliver(self, changes: pl.DataFrame, config: Any, ctx: DeliveryContext) -> None: ...


_REGISTRY = registry("target type", "lily_dagster.lib.targets.builtin", "lily_dagster.targets")
register_target = _REGISTRY.register
target_types = _REGISTRY.names


def get_target(type_name: str) -> Target:
    target: Target = _REGISTRY.get(type_name)
    return target


def change_objects(changes: pl.DataFrame) -> list[dict[str, Any]]:
    """The changes as CONTRACT.md §5 change objects (a NaN an earlier release let into the
    hub reads as null: delivered bodies are RFC 8259 JSON)."""
    return [finite_loads(raw) for raw in changes.get_column("raw").to_list()]


def post_json(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
) -> None:
    """POST a JSON body; 2xx is delivered. 5xx, 408, 429, timeouts and refused connections
    raise TargetUnavailableError; other answers raise TargetRejectedError."""
    import httpx

    try:
        response = _client().post(
            url,
            content=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=timeout_s,
        )
    except httpx.TimeoutException as exc:
        raise TargetUnavailableError(f"no answer from {url} within {timeout_s:g} s") from exc
    except httpx.TransportError as exc:
        raise TargetUnavailableError(f"cannot reach {url}: {exc}") from exc
    status = response.status_code
    if 200 <= status < 300:
        return
    if status >= 500 or status in (408, 429):
        raise TargetUnavailableError(f"{url} answered {status}: {_error_code(response.text)}")
    # Kept with the dead letters, sealed under the tenant's key.
    raise TargetRejectedError(f"{url} answered {status}: {response.text[:200]}")


def _error_code(body: str) -> str:
    """The body of a 5xx/429 answer as the run's failure may say it: Dagster's event log
    keeps that in plaintext, so only a short error code or message (Slack's `rate_limited`),
    never a body that may echo what was sent (CONTRACT.md §7)."""
    text = body.strip()
    if len(text) <= 64 and re.fullmatch(r"[\w .,:;()/'-]*", text):
        return text
    return f"({len(body.encode())} bytes not shown)"


@functools.cache
def _client() -> Any:
    """One HTTP client for every delivery: its connection pool and TLS context are made
    once (a TLS context per request costs ~25 ms)."""
    import httpx

    return httpx.Client()


def secret_of(config: TargetConfig) -> str:
    """The value of the variable the target's `secret_env` names."""
    if not config.secret_env:
        raise ConfigError("needs secret_env (the name of the variable holding its secret)")
    return env_secret(config.secret_env)
