"""slack: one Slack incoming-webhook message per batch, in Block Kit.

The message: a header, a section per change (type, name, qualified name, change, version,
changed fields, certificate, classifications) up to `max_shown`, "and N more", and a context
line with the tenant and target. User text is escaped for mrkdwn (&, <, >), so names cannot
mention @channel or make links.

Slack answers 200 "ok"; 4xx such as invalid_payload, no_service, channel_is_archived are
rejected (dead letter); 5xx and 429 are retried.
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

# Slack's limits: 50 blocks a message, 150 characters a header, 3000 a section's text.
MAX_SHOWN_LIMIT = 45
HEADER_CHARS = 150
SECTION_CHARS = 3000
FALLBACK_SHOWN = 3


def escape(text: str) -> str:
    """Text safe in Slack mrkdwn: its control characters &, <, > as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    # A backtick would end the code span early.
    return "`" + escape(one_line(text).replace("`", "'")) + "`"


def section_text(view: ChangeView) -> str:
    lines = [
        f"*{escape(view.title)}* {escape(view.change)} · v{view.version}",
        _code(view.qualified_name),
        f"Changed: {escape(view.fields)} · Certificate: {escape(view.certificate or '-')}",
    ]
    if view.classifications:
        lines.append(f"Classifications: {escape(', '.join(view.classifications))}")
    return _clip_escaped("\n".join(lines), SECTION_CHARS)


def _clip_escaped(text: str, limit: int) -> str:
    # Clipping must not leave half an entity (&am…).
    return re.sub(r"&[a-z]{0,3}…$", "…", clip(text, limit))


def slack_message(
    changes: pl.DataFrame, config: ChatConfig, ctx: DeliveryContext
) -> dict[str, Any]:
    """The Block Kit message for a batch."""
    views = change_views(changes)
    shown, hidden = views[: config.max_shown], len(views) - config.max_shown
    title = f"Lily: {headline(len(views), ctx.tenant)}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(title, HEADER_CHARS)}}
    ]
    for view in shown:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": section_text(view)}})
    if hidden > 0:
        blocks.append(_context(f"_{more_text(hidden)}_"))
    where = f"Tenant *{escape(ctx.tenant)}* · target *{escape(ctx.target)}*"
    if config.channel:
        where += f" · channel {escape(config.channel)}"
    blocks.append(_context(where))
    fallback = "; ".join(v.summary for v in views[:FALLBACK_SHOWN])
    if len(views) > FALLBACK_SHOWN:
        fallback += f"; {more_text(len(views) - FALLBACK_SHOWN)}"
    text = _clip_escaped(escape(f"{title}: {fallback}"), SECTION_CHARS)
    return {"text": text, "blocks": blocks}


def _context(mrkdwn: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn}]}


@register_target("slack")
class SlackTarget(ChatTarget):
    """Options: url (the incoming webhook URL) or url_env (the name of the variable holding
    it), channel (display only), max_shown (changes listed per message, 1-45, default 20)."""

    name = "slack"
    max_shown_limit = MAX_SHOWN_LIMIT
    message = staticmethod(slack_message)

    def text_message(self, text: str) -> dict[str, Any]:
        return {"text": escape(text)}
