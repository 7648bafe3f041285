"""A LILY_CONFIG with every vendor webhook configured for tenant acme, and request signers
that follow each vendor's own documented scheme."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

CONNECTION = "default/snowflake/1700000000"


@dataclass(frozen=True)
class VendorSecrets:
    atlan: str
    monte_carlo: str
    slack: str
    teams_b64: str  # Teams issues the security token base64-encoded


def configure_vendors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra_yaml: str = ""
) -> VendorSecrets:
    found = VendorSecrets(
        atlan=secrets.token_urlsafe(24),
        monte_carlo=secrets.token_hex(32),
        slack=secrets.token_hex(16),
        teams_b64=base64.b64encode(secrets.token_bytes(32)).decode(),
    )
    config = tmp_path / "lily-vendors.yaml"
    config.write_text(
        f"""
tenants:
  - name: acme
    webhooks:
      atlan:
        secret_env: TEST_ATLAN_SECRET
      monte-carlo:
        secret_env: TEST_MC_SECRET
        connection_qualified_name: {CONNECTION}
      slack:
        secret_env: TEST_SLACK_SECRET
      teams:
        secret_env: TEST_TEAMS_SECRET
  - name: globex
{extra_yaml}"""
    )
    monkeypatch.setenv("LILY_CONFIG", str(config))
    monkeypatch.setenv("TEST_ATLAN_SECRET", found.atlan)
    monkeypatch.setenv("TEST_MC_SECRET", found.monte_carlo)
    monkeypatch.setenv("TEST_SLACK_SECRET", found.slack)
    monkeypatch.setenv("TEST_TEAMS_SECRET", found.teams_b64)
    return found


def slack_request(
    client: httpx.Client,
    secret: str,
    text: str,
    *,
    tenant: str = "acme",
    user: str = "jdoe",
    timestamp: int | None = None,
    signature: str | None = None,
    body: bytes | None = None,
) -> httpx.Response:
    """A slash command as Slack sends it: form body, v0 signature over `v0:<ts>:<body>`."""
    if body is None:
        body = urlencode(
            {
                "token": "deprecated-verification-token",
                "team_id": "T0001",
                "channel_name": "data",
                "user_id": "U2147483697",
                "user_name": user,
                "command": "/lily",
                "text": text,
                "response_url": "https://hooks.slack.com/commands/1234/5678",
                "trigger_id": secrets.token_hex(8),  # every real command differs
            }
        ).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    expected = (
        "v0="
        + hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    )
    return client.post(
        f"/v1/webhooks/slack/{tenant}",
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature or expected,
        },
    )
