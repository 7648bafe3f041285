"""Chat commands (Slack slash commands, Teams outgoing webhooks) to change an asset:

    certify <qualified_name> <VERIFIED|DRAFT|DEPRECATED>
    describe <qualified_name> <text…>
    tag <qualified_name> <Tag>

Each becomes a partial-change envelope (`lily_patch`): only what the command names changes.
"""

from __future__ import annotations

import re
from typing import Any

USAGE = (
    "usage: certify <qualified_name> <VERIFIED|DRAFT|DEPRECATED> | "
    "describe <qualified_name> <text> | tag <qualified_name> <Tag>"
)
CERTIFICATES = ("VERIFIED", "DRAFT", "DEPRECATED")
_TAG = re.compile(r"^[A-Za-z][\w -]{0,63}$")


class CommandError(ValueError):
    """The text is not a command; the message is what the user is told."""


def command_patch(text: str, user: str) -> tuple[str, dict[str, Any]]:
    """(qualified_name, lily_patch) for a command text."""
    parts = text.strip().split(maxsplit=2)
    if len(parts) < 3:
        raise CommandError(USAGE)
    verb, qualified_name, rest = parts[0].lower(), parts[1], parts[2].strip()
    if verb == "certify":
        status = rest.split()[0].upper()
        if status not in CERTIFICATES:
            raise CommandError(f"certificate must be one of {', '.join(CERTIFICATES)}")
        return qualified_name, {
            "set": {"certificate_status": status, "certificate_updated_by": user}
        }
    if verb == "describe":
        return qualified_name, {"set": {"description": rest}}
    if verb == "tag":
        if not _TAG.match(rest):
            raise CommandError(f"{rest!r} is not a tag name")
        return qualified_name, {"add_classifications": [rest]}
    raise CommandError(USAGE)


def command_envelope(
    text: str, event_id: str, source: str, user: str, event_time: str
) -> dict[str, Any]:
    qualified_name, patch = command_patch(text, user)
    return {
        "event_id": event_id,
        "source": source,
        "op": "upsert",
        "event_time": event_time,
        "asset": {
            # A patch never changes type or name; these only satisfy the envelope.
            "type_name": "Asset",
            "qualified_name": qualified_name,
            "name": qualified_name.rsplit("/", 1)[-1],
            "attributes": {"lily_patch": patch},
        },
    }
