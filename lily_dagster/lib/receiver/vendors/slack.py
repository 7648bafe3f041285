"""Slack slash commands (`/lily certify <qualified_name> VERIFIED`, see commands.py).

Verified with Slack's signing secret, version v0: `X-Slack-Signature` = `v0=` + hex
HMAC-SHA256 of `v0:<X-Slack-Request-Timestamp>:<body>`; the timestamp must be within
5 minutes, and a signature seen before within that window is refused as a replay.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs

from lily_dagster.lib.receiver.commands import CommandError, command_envelope
from lily_dagster.lib.receiver.signing import ReplayGuard, bad_signature, body_id, hmac_hex, same
from lily_dagster.lib.receiver.vendors import VendorRequest, VendorResult, register_vendor

MAX_SKEW_S = 300


@register_vendor("slack")
class SlackCommands:
    name = "slack"
    content_types = ("application/x-www-form-urlencoded",)
    signature_headers = ("x-slack-request-timestamp", "x-slack-signature")
    answers = (200,)  # the reply shown to the user

    def __init__(self) -> None:
        self.replays = ReplayGuard(MAX_SKEW_S)

    def verify(self, request: VendorRequest) -> None:
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        if not timestamp.isdigit() or abs(request.received_at - int(timestamp)) > MAX_SKEW_S:
            raise bad_signature("X-Slack-Request-Timestamp missing or more than 5 minutes off")
        base = b"v0:" + timestamp.encode() + b":" + request.body
        expected = "v0=" + hmac_hex(request.config.secret().encode(), base, "sha256")
        given = request.headers.get("x-slack-signature")
        if not same(given, expected):
            raise bad_signature("X-Slack-Signature does not match")
        self.replays.check(expected)

    def normalise(self, request: VendorRequest) -> VendorResult:
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        text = form.get("text", "")
        user = form.get("user_name") or form.get("user_id") or "slack"
        try:
            envelope = command_envelope(
                text,
                body_id("slack", request.body),
                "slack",
                user,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(request.received_at)),
            )
        except CommandError as exc:
            return VendorResult(
                reply={"response_type": "ephemeral", "text": str(exc)}, ignored=[str(exc)]
            )
        return VendorResult(
            envelopes=[envelope],
            reply={"response_type": "ephemeral", "text": f"Lily: `{text.strip()}` queued"},
        )
