"""What the HTTP targets share: option checks, the chat targets' webhook URL (Slack, Teams)
and a human view of a change (one-line summary, changed fields, certificate).

Escaping is each chat's own (Slack mrkdwn, Teams markdown); the text here is raw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import polars as pl
from pydantic import Field

from lily_dagster.lib.plugins import PluginOptions, parse_options
from lily_dagster.lib.targets import (
    DeliveryContext,
    TargetRejectedError,
    TargetUnavailableError,
    post_json,
)
from lily_dagster.settings import ConfigError, TargetConfig, env_secret

if TYPE_CHECKING:
    from lily_dagster.lib.alerts import Alert

# Changes shown in one chat message by default; the rest are counted ("and N more").
DEFAULT_MAX_SHOWN = 20

# ---------------------------------------------------------------------------- options


def http_url(value: str | None, what: str = "url") -> str:
    """`value` checked as an absolute http(s) URL; ConfigError otherwise. The URL itself is
    never put in the message (chat webhook URLs are secrets)."""
    if not value or not value.strip():
        raise ConfigError(f"needs {what} (an http:// or https:// URL)")
    value = value.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{what} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} must be an absolute http:// or https:// URL")
    return value


def redacted(url: str) -> str:
    """The URL without its path and query (where chat webhooks keep their secret)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1] or "?"  # no user:password either
    return f"{parts.scheme}://{host}/…"


@dataclass(frozen=True)
class ChatConfig:
    """A chat target's incoming webhook (Slack, Teams), resolved at load."""

    url: str = field(repr=False)  # a secret: whoever has it can post to the channel
    channel: str | None = None  # display only
    max_shown: int = DEFAULT_MAX_SHOWN


class ChatOptions(PluginOptions):
    """A chat target's options (beside `url`, common to every target)."""

    url_env: str | None = Field(
        None, description="Name of the variable holding the incoming-webhook URL (or give url)."
    )
    channel: str | None = Field(None, description="The channel's name, for display only.")
    max_shown: int = Field(
        DEFAULT_MAX_SHOWN, ge=1, description="Changes listed in one message; the rest are counted."
    )


def chat_config(config: TargetConfig, max_shown_limit: int) -> ChatConfig:
    """The incoming webhook URL from `url` or `url_env`, `channel`, `max_shown`
    (1..max_shown_limit)."""
    options = parse_options(ChatOptions, config.model_extra)
    if config.url and options.url_env:
        raise ConfigError("give url or url_env (the variable holding the URL), not both")
    if options.url_env:
        value = env_secret(options.url_env, "webhook URL")
        url = http_url(value, f"the value of {options.url_env}")
    elif config.url:
        url = http_url(config.url)
    else:
        raise ConfigError("needs url or url_env (the name of the variable holding the URL)")
    if options.max_shown > max_shown_limit:
        raise ConfigError(f"max_shown={options.max_shown} must be between 1 and {max_shown_limit}")
    return ChatConfig(url=url, channel=options.channel, max_shown=options.max_shown)


def post_chat(payload: dict[str, Any], config: ChatConfig, ctx: DeliveryContext) -> None:
    """POST one chat message; errors as `post_json`'s, with the secret URL redacted."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )
    try:
        post_json(config.url, body, {"Idempotency-Key": ctx.idempotency_key}, ctx.timeout_s)
    except (TargetUnavailableError, TargetRejectedError) as exc:
        message = str(exc).replace(config.url, redacted(config.url))
        raise type(exc)(message) from None


# -------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class ChangeView:
    """One change as people read it (raw text: escape it for the chat)."""

    qualified_name: str
    type_name: str
    change: str  # created | updated | archived | restored
    version: int
    name: str
    changed: tuple[str, ...]
    certificate: str | None
    classifications: tuple[str, ...]

    @property
    def title(self) -> str:
        return one_line(f"{self.type_name} {self.name}")

    @property
    def fields(self) -> str:
        """The changed fields, or what the change is when none are listed."""
        if self.changed:
            return ", ".join(self.changed)
        return "new record" if self.change == "created" else "-"

    @property
    def summary(self) -> str:
        """One line: `Table ORDERS updated (v3): description, owner_users`."""
        line = f"{self.title} {self.change} (v{self.version})"
        return one_line(f"{line}: {', '.join(self.changed)}" if self.changed else line)


def change_views(changes: pl.DataFrame) -> list[ChangeView]:
    """The changes (CHANGE_SCHEMA), in order, as `ChangeView`s."""
    views = []
    for row in changes.iter_rows(named=True):
        qualified_name = str(row.get("qualified_name") or "")
        views.append(
            ChangeView(
                qualified_name=qualified_name,
                type_name=str(row.get("type_name") or "?"),
                change=str(row.get("change") or "?"),
                version=int(row.get("version") or 0),
                name=str(row.get("name") or qualified_name.rsplit("/", 1)[-1] or "?"),
                changed=tuple(str(f) for f in row.get("changed") or []),
                certificate=_certificate(row.get("attributes")),
                classifications=tuple(str(c) for c in row.get("classifications") or []),
            )
        )
    return views


def _certificate(attributes: Any) -> str | None:
    if not attributes:
        return None
    try:
        parsed = json.loads(attributes) if isinstance(attributes, str) else attributes
    except ValueError:
        return None
    value = parsed.get("certificate_status") if isinstance(parsed, dict) else None
    return str(value) if value else None


def headline(count: int, tenant: str) -> str:
    return f"{count} hub change{'' if count == 1 else 's'} in {tenant}"


def more_text(hidden: int) -> str:
    return f"and {hidden} more change{'' if hidden == 1 else 's'}"


def one_line(text: str) -> str:
    """Whitespace runs (newlines included) as single spaces."""
    return " ".join(text.split())


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ChatTarget:
    """A chat incoming-webhook target: one message per batch, built by `message`."""

    max_shown_limit: int

    def message(
        self, changes: pl.DataFrame, config: ChatConfig, ctx: DeliveryContext
    ) -> dict[str, Any]:
        raise NotImplementedError

    Options = ChatOptions

    def configure(self, config: TargetConfig) -> ChatConfig:
        return chat_config(config, self.max_shown_limit)

    def deliver(self, changes: pl.DataFrame, config: ChatConfig, ctx: DeliveryContext) -> None:
        post_chat(self.message(changes, config, ctx), config, ctx)

    def text_message(self, text: str) -> dict[str, Any]:
        raise NotImplementedError

    def alert(self, alert: Alert, config: ChatConfig, ctx: DeliveryContext) -> None:
        """An alert of the alert sensor (lib/alerts), as one short message."""
        post_chat(self.text_message(alert.text), config, ctx)
