"""Microsoft Teams outgoing webhooks (`@Lily certify <qualified_name> VERIFIED`).

Verified as Teams signs them: `Authorization: HMAC <base64>` where the signature is
HMAC-SHA256 of the body keyed with the base64-decoded security token Teams issued.
Redeliveries carry the same activity id, which becomes the event id (stored once).
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import time
from typing import Any

from lily_dagster.lib.receiver.body import parse_json_body
from lily_dagster.lib.receiver.commands import CommandError, command_envelope
from lily_dagster.lib.receiver.signing import bad_signature, body_id, hmac_b64, same
from lily_dagster.lib.receiver.vendors import VendorRequest, VendorResult, register_vendor

_MENTION = re.compile(r"<at>.*?</at>", re.S)
_TAGS = re.compile(r"<[^>]+>")


def message_text(activity: dict[str, Any]) -> str:
    text = str(activity.get("text") or "")
    return html.unescape(_TAGS.sub(" ", _MENTION.sub(" ", text))).strip()


@register_vendor("teams")
class TeamsOutgoingWebhook:
    name = "teams"
    content_types = ("application/json",)
    signature_headers = ("authorization",)
    answers = (200,)  # the reply shown to the user

    def verify(self, request: VendorRequest) -> None:
        try:
            key = base64.b64decode(request.config.secret(), validate=True)
        except binascii.Error:
            raise bad_signature("the configured Teams security token is not base64") from None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme != "HMAC" or not same(given.strip(), hmac_b64(key, request.body, "sha256")):
            raise bad_signature("Authorization HMAC does not match")

    def normalise(self, request: VendorRequest) -> VendorResult:
        activity = parse_json_body(request.body)
        if not isinstance(activity, dict):
            return VendorResult(
                reply={"type": "message", "text": "not an activity"}, ignored=["not an activity"]
            )
        sender = activity.get("from") or {}
        user = (
            str(sender.get("name") or sender.get("id") or "teams")
            if isinstance(sender, dict)
            else "teams"
        )
        activity_id = activity.get("id")
        try:
            envelope = command_envelope(
                message_text(activity),
                f"teams-{activity_id}" if activity_id else body_id("teams", request.body),
                "teams",
                user,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(request.received_at)),
            )
        except CommandError as exc:
            return VendorResult(reply={"type": "message", "text": str(exc)}, ignored=[str(exc)])
        return VendorResult(
            envelopes=[envelope], reply={"type": "message", "text": "Lily: change queued"}
        )
