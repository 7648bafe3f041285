"""teams: one Microsoft Teams incoming-webhook message per batch (a Workflows webhook or a
connector), as an Adaptive Card 1.4.

The card: a title, the tenant and target, then a Container per change (a one-line summary
and a FactSet: type, name, qualified name, change, changed fields, certificate,
classifications) up to `max_shown`, and "and N more". Adaptive Cards show no HTML; user
text is escaped for their markdown (\\ * _ [ ] `), so names cannot make links.
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl

from lily_dagster.lib.targets import DeliveryContext, register_target
from lily_dagster.lib.targets.render import (
    ChangeView,
    ChatConfig,
    ChatTarget,
    change_views,
    clip,
    headline,
    more_text,
    one_line,
)

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"
# Teams takes messages up to about 28 KB: keep cards well below.
MAX_SHOWN_LIMIT = 40
VALUE_CHARS = 500

_MARKDOWN = re.compile(r"([\\*_\[\]`])")


def escape(text: str) -> str:
    """Text shown as is in Adaptive Card markdown (CommonMark backslash escapes)."""
    return _MARKDOWN.sub(r"\\\1", one_line(text))


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def change_container(view: ChangeView) -> dict[str, Any]:
    facts = [
        ("Type", view.type_name),
        ("Name", view.name),
        ("Qualified name", view.qualified_name),
        ("Change", f"{view.change} (v{view.version})"),
        ("Changed", view.fields),
        ("Certificate", view.certificate or "-"),
    ]
    if view.classifications:
        facts.append(("Classifications", ", ".join(view.classifications)))
    return {
        "type": "Container",
        "separator": True,
        "items": [
            _text(escape(clip(view.summary, VALUE_CHARS)), weight="Bolder"),
            {
                "type": "FactSet",
                "facts": [
                    {"title": title, "value": escape(clip(value, VALUE_CHARS))}
                    for title, value in facts
                ],
            },
        ],
    }


def teams_message(
    changes: pl.DataFrame, config: ChatConfig, ctx: DeliveryContext
) -> dict[str, Any]:
    """The Teams message (an Adaptive Card attachment) for a batch."""
    views = change_views(changes)
    shown, hidden = views[: config.max_shown], len(views) - config.max_shown
    where = f"Tenant {ctx.tenant} · target {ctx.target}"
    if config.channel:
        where += f" · channel {config.channel}"
    body: list[dict[str, Any]] = [
        _text(escape(f"Lily: {headline(len(views), ctx.tenant)}"), size="Medium", weight="Bolder"),
        _text(escape(where), isSubtle=True, spacing="None"),
    ]
    body.extend(change_container(view) for view in shown)
    if hidden > 0:
        body.append(_text(escape(more_text(hidden)), isSubtle=True, separator=True))
    return card_message(body)


def card_message(body: list[dict[str, Any]]) -> dict[str, Any]:
    """A Teams message of one Adaptive Card with `body`."""
    card = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full"},
    }
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }


@register_target("teams")
class TeamsTarget(ChatTarget):
    """Options: url (the incoming webhook URL) or url_env (the name of the variable holding
    it), channel (display only), max_shown (changes listed per message, 1-40, default 20)."""

    name = "teams"
    max_shown_limit = MAX_SHOWN_LIMIT
    message = staticmethod(teams_message)

    def text_message(self, text: str) -> dict[str, Any]:
        return card_message([_text(escape(text), weight="Bolder")])
