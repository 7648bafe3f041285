"""The HTTP targets (webhook, Slack, Teams) against a real HTTP receiver on loopback."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lily_dagster.lib.targets import (
    DeliveryContext,
    TargetRejectedError,
    TargetUnavailableError,
    get_target,
)
from lily_dagster.lib.targets.builtin.slack import SlackTarget
from lily_dagster.lib.targets.builtin.teams import TeamsTarget
from lily_dagster.lib.targets.builtin.webhook import (
    WebhookTarget,
    sign,
    verify_signature,
)
from lily_dagster.settings import ConfigError, TargetConfig
from lily_dagster_tests.lib.targets.changes import change_frame
from lily_dagster_tests.support.receivers import RecordingReceiver, closed_port_url

SECRET = "s3cr3t-hmac-key"
SECRET_ENV = "LILY_TEST_HOOK_SECRET"
SLACK_PATH = "/services/T0000/B0000/XXXXSECRETXXXX"
NASTY = "<script>alert(1)</script> & co"

CHANGES: list[dict[str, Any]] = [
    {
        "qualified_name": "default/snowflake/1700000000/DB/SCH/ORDERS",
        "type_name": "Table",
        "change": "created",
        "version": 1,
        "attributes": {"description": "orders", "certificate_status": "DRAFT"},
    },
    {
        "qualified_name": "default/snowflake/1700000000/DB/SCH/ORDERS/EMAIL",
        "type_name": "Column",
        "change": "updated",
        "version": 3,
        "name": "EMAIL é",
        "attributes": {"certificate_status": "VERIFIED", "order": 3},
        "classifications": ["PII", "GDPR:personal-data"],
        "changed": ["certificate_status", "classifications"],
        "before": {"certificate_status": "DRAFT", "classifications": []},
    },
    {
        "qualified_name": "default/snowflake/1700000000/DB/SCH/OLD",
        "type_name": "Table",
        "change": "archived",
        "version": 7,
        "changed": ["status"],
    },
]


def ctx(target: str = "audit-hook", timeout_s: float = 5.0, key: str = "acme:1-3") -> Any:
    return DeliveryContext(tenant="acme", target=target, idempotency_key=key, timeout_s=timeout_s)


def config(type_: str, name: str = "audit-hook", **options: Any) -> TargetConfig:
    return TargetConfig.model_validate({"name": name, "type": type_, **options})


@pytest.fixture
def receiver() -> Iterator[RecordingReceiver]:
    with RecordingReceiver() as r:
        yield r


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return SECRET


def webhook(url: str) -> Any:
    return WebhookTarget().configure(config("webhook", url=url, secret_env=SECRET_ENV))


def one_line_config_error(excinfo: pytest.ExceptionInfo[ConfigError], *words: str) -> None:
    message = str(excinfo.value)
    assert message and "\n" not in message, message
    for word in words:
        assert word in message, message


# ------------------------------------------------------------------------------ webhook


def test_targets_are_registered() -> None:
    assert isinstance(get_target("webhook"), WebhookTarget)
    assert isinstance(get_target("slack"), SlackTarget)
    assert isinstance(get_target("teams"), TeamsTarget)


def test_webhook_delivers_the_contract_body_signed(
    receiver: RecordingReceiver, secret: str
) -> None:
    target = WebhookTarget()
    cfg = webhook(receiver.url)
    assert SECRET not in repr(cfg)
    context = ctx()
    frame = change_frame(CHANGES)
    target.deliver(frame, cfg, context)
    target.deliver(frame, cfg, context)  # a retry of the same batch

    first, second = receiver.requests
    assert (first.method, first.path) == ("POST", "/hook")
    assert first.header("content-type") == "application/json"
    assert first.json() == {
        "tenant": "acme",
        "target": "audit-hook",
        "changes": [
            {
                "qualified_name": "default/snowflake/1700000000/DB/SCH/ORDERS",
                "type_name": "Table",
                "change": "created",
                "version": 1,
                "name": "ORDERS",
                "attributes": {"description": "orders", "certificate_status": "DRAFT"},
                "classifications": [],
            },
            {
                "qualified_name": "default/snowflake/1700000000/DB/SCH/ORDERS/EMAIL",
                "type_name": "Column",
                "change": "updated",
                "version": 3,
                "name": "EMAIL é",
                "attributes": {"certificate_status": "VERIFIED", "order": 3},
                "classifications": ["PII", "GDPR:personal-data"],
            },
            {
                "qualified_name": "default/snowflake/1700000000/DB/SCH/OLD",
                "type_name": "Table",
                "change": "archived",
                "version": 7,
                "name": "OLD",
                "attributes": {},
                "classifications": [],
            },
        ],
    }
    signature = first.header("x-lily-signature")
    assert signature is not None and re.fullmatch(r"sha256=[0-9a-f]{64}", signature)
    assert verify_signature(first.body, signature, SECRET)
    assert not verify_signature(first.body, signature, "another-secret")
    assert not verify_signature(first.body + b" ", signature, SECRET)
    # Retries are the same request: same key, same bytes, same signature.
    assert first.header("idempotency-key") == second.header("idempotency-key") == "acme:1-3"
    assert first.body == second.body
    assert second.header("x-lily-signature") == signature


def test_sign_and_verify() -> None:
    body = b'{"tenant":"acme"}'
    signature = sign(body, "k")
    assert signature == sign(body, "k") != sign(body, "k2")
    assert verify_signature(body, signature, "k")
    assert verify_signature(body, f" {signature} ", "k")
    assert not verify_signature(body, signature.upper(), "k")
    assert not verify_signature(body, signature.removeprefix("sha256="), "k")
    for header in (None, "", "sha256=", "sha256=zz", "sha256=é"):
        assert not verify_signature(body, header, "k")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, TargetUnavailableError),
        (503, TargetUnavailableError),
        (408, TargetUnavailableError),
        (429, TargetUnavailableError),
        (400, TargetRejectedError),
        (401, TargetRejectedError),
        (404, TargetRejectedError),
        (422, TargetRejectedError),
    ],
)
def test_webhook_status_handling(
    receiver: RecordingReceiver, secret: str, status: int, error: type[Exception]
) -> None:
    receiver.script([status])
    with pytest.raises(error, match=str(status)):
        WebhookTarget().deliver(change_frame(CHANGES[:1]), webhook(receiver.url), ctx())
    assert len(receiver.requests) == 1


def test_webhook_retried_batch_keeps_its_key(receiver: RecordingReceiver, secret: str) -> None:
    receiver.script([503, 503, 200])
    target, cfg, context = WebhookTarget(), webhook(receiver.url), ctx(key="k-42")
    frame = change_frame(CHANGES)
    for _ in range(2):
        with pytest.raises(TargetUnavailableError):
            target.deliver(frame, cfg, context)
    target.deliver(frame, cfg, context)
    requests = receiver.requests
    assert len(requests) == 3
    assert {r.header("idempotency-key") for r in requests} == {"k-42"}
    assert len({r.body for r in requests}) == 1


def test_webhook_connection_refused_is_unavailable(secret: str) -> None:
    started = time.monotonic()
    with pytest.raises(TargetUnavailableError, match="cannot reach"):
        WebhookTarget().deliver(change_frame(CHANGES), webhook(closed_port_url()), ctx())
    assert time.monotonic() - started < 3


def test_webhook_slow_receiver_times_out_quickly(receiver: RecordingReceiver, secret: str) -> None:
    receiver.delay(3)
    started = time.monotonic()
    with pytest.raises(TargetUnavailableError, match="within"):
        WebhookTarget().deliver(change_frame(CHANGES), webhook(receiver.url), ctx(timeout_s=0.3))
    assert time.monotonic() - started < 1.5
    assert len(receiver.requests) == 1  # it arrived; the answer was too late


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"secret_env": SECRET_ENV}, ["needs url"]),
        ({"url": "ftp://example.com/x", "secret_env": SECRET_ENV}, ["http"]),
        ({"url": "example.com/hook", "secret_env": SECRET_ENV}, ["http"]),
        ({"url": "http://127.0.0.1:99999/x", "secret_env": SECRET_ENV}, ["not a valid URL"]),
        ({"url": "http://127.0.0.1/x"}, ["secret_env"]),
        ({"url": "http://127.0.0.1/x", "secret_env": "LILY_TEST_UNSET_SECRET"}, ["not set"]),
        ({"url": "http://127.0.0.1/x", "secret_env": SECRET_ENV, "secret": "x"}, ["secret"]),
    ],
)
def test_webhook_configure_errors(secret: str, options: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as excinfo:
        WebhookTarget().configure(config("webhook", **options))
    one_line_config_error(excinfo, *words)


# ------------------------------------------------------------------------------- slack


def assert_block_kit(message: dict[str, Any]) -> None:
    """The structure Slack's incoming webhooks accept (the parts this target uses)."""
    assert set(message) == {"text", "blocks"}
    assert isinstance(message["text"], str) and message["text"]
    blocks = message["blocks"]
    assert 1 <= len(blocks) <= 50
    assert blocks[0]["type"] == "header"
    for block in blocks:
        kind = block["type"]
        if kind == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        elif kind == "section":
            assert block["text"]["type"] == "mrkdwn"
            assert 0 < len(block["text"]["text"]) <= 3000
        elif kind == "context":
            assert 1 <= len(block["elements"]) <= 10
            for element in block["elements"]:
                assert element["type"] == "mrkdwn" and element["text"]
        else:
            raise AssertionError(f"unexpected block {kind}")


def mrkdwn_texts(message: dict[str, Any]) -> list[str]:
    texts = [message["text"]]
    for block in message["blocks"]:
        if block["type"] == "section":
            texts.append(block["text"]["text"])
        elif block["type"] == "context":
            texts.extend(e["text"] for e in block["elements"])
    return texts


def slack(url: str, **options: Any) -> Any:
    return SlackTarget().configure(config("slack", name="data-slack", url=url, **options))


def test_slack_message_is_block_kit_and_escaped(receiver: RecordingReceiver) -> None:
    rows: list[dict[str, Any]] = [
        *CHANGES,
        {"qualified_name": "default/x/1/DB/SCH/<b>T&T</b>", "name": NASTY, "change": "restored"},
    ]
    SlackTarget().deliver(
        change_frame(rows), slack(receiver.url, channel="#data-changes"), ctx("data-slack")
    )
    (request,) = receiver.requests
    assert request.header("content-type") == "application/json"
    message = request.json()
    assert_block_kit(message)
    blocks = message["blocks"]
    assert [b["type"] for b in blocks] == ["header", *["section"] * 4, "context"]
    assert blocks[0]["text"]["text"] == "Lily: 4 hub changes in acme"
    updated = blocks[2]["text"]["text"]
    for part in (
        "Column",
        "EMAIL é",
        "`default/snowflake/1700000000/DB/SCH/ORDERS/EMAIL`",
        "updated",
        "v3",
        "certificate_status, classifications",
        "Certificate: VERIFIED",
        "PII, GDPR:personal-data",
    ):
        assert part in updated, (part, updated)
    assert "new record" in blocks[1]["text"]["text"]
    assert "Certificate: DRAFT" in blocks[1]["text"]["text"]
    context = blocks[-1]["elements"][0]["text"]
    assert "acme" in context and "data-slack" in context and "#data-changes" in context
    nasty = blocks[4]["text"]["text"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in nasty
    assert "`default/x/1/DB/SCH/&lt;b&gt;T&amp;T&lt;/b&gt;`" in nasty
    for text in mrkdwn_texts(message):
        assert "<" not in text and ">" not in text, text
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), text


def test_slack_lists_at_most_max_shown(receiver: RecordingReceiver) -> None:
    rows = [{"qualified_name": f"default/x/1/T{i}"} for i in range(25)]
    target = SlackTarget()
    target.deliver(change_frame(rows), slack(receiver.url), ctx("data-slack"))
    target.deliver(change_frame(rows[:3]), slack(receiver.url, max_shown=2), ctx("data-slack"))
    big, small = receiver.bodies()
    for message in (big, small):
        assert_block_kit(message)
    assert [b["type"] for b in big["blocks"]].count("section") == 20
    assert big["blocks"][-2]["elements"][0]["text"] == "_and 5 more changes_"
    assert small["blocks"][-2]["elements"][0]["text"] == "_and 1 more change_"
    assert "and 22 more changes" in big["text"]


def test_slack_url_from_env(receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LILY_TEST_SLACK_URL", receiver.url)
    cfg = SlackTarget().configure(config("slack", name="s", url_env="LILY_TEST_SLACK_URL"))
    assert receiver.url not in repr(cfg)
    SlackTarget().deliver(change_frame(CHANGES), cfg, ctx("s"))
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("type_", ["slack", "teams"])
@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({}, ["needs url or url_env"]),
        ({"url_env": "LILY_TEST_UNSET_URL"}, ["LILY_TEST_UNSET_URL", "not set"]),
        ({"url_env": "LILY_TEST_BAD_URL"}, ["LILY_TEST_BAD_URL", "http"]),
        ({"url": "https://h/x", "url_env": "LILY_TEST_BAD_URL"}, ["not both"]),
        ({"url": "hooks.slack.com/services/X"}, ["http"]),
        ({"url": "https://h/x", "max_shown": "many"}, ["max_shown"]),
        ({"url": "https://h/x", "max_shown": 0}, ["max_shown"]),
        ({"url": "https://h/x", "chanel": "#x"}, ["chanel"]),
    ],
)
def test_chat_configure_errors(
    monkeypatch: pytest.MonkeyPatch, type_: str, options: dict[str, Any], words: list[str]
) -> None:
    monkeypatch.delenv("LILY_TEST_UNSET_URL", raising=False)
    monkeypatch.setenv("LILY_TEST_BAD_URL", "not-a-url/SECRETPART")
    target = SlackTarget() if type_ == "slack" else TeamsTarget()
    with pytest.raises(ConfigError) as excinfo:
        target.configure(config(type_, name="chat", **options))
    one_line_config_error(excinfo, *words)
    assert "SECRETPART" not in str(excinfo.value)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ((400, "invalid_payload"), TargetRejectedError),
        ((403, "action_prohibited"), TargetRejectedError),
        ((404, "no_service"), TargetRejectedError),
        ((410, "channel_is_archived"), TargetRejectedError),
        ((429, "rate_limited"), TargetUnavailableError),
        ((500, "rollup_error"), TargetUnavailableError),
        ((503, "service unavailable"), TargetUnavailableError),
    ],
)
def test_slack_answers_and_the_url_stays_secret(
    answer: tuple[int, str], error: type[Exception]
) -> None:
    with RecordingReceiver(path=SLACK_PATH) as receiver:
        receiver.script([answer])
        with pytest.raises(error) as excinfo:
            SlackTarget().deliver(change_frame(CHANGES), slack(receiver.url), ctx("s"))
    message = str(excinfo.value)
    assert answer[1] in message and str(answer[0]) in message
    assert "SECRET" not in message and f"127.0.0.1:{receiver.port}" in message
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


def test_chat_refused_and_slow_are_unavailable_without_the_url() -> None:
    with pytest.raises(TargetUnavailableError) as excinfo:
        SlackTarget().deliver(
            change_frame(CHANGES), slack(closed_port_url(SLACK_PATH)), ctx("s", timeout_s=1)
        )
    assert "SECRET" not in str(excinfo.value)
    with RecordingReceiver(path=SLACK_PATH) as receiver:
        receiver.delay(3)
        started = time.monotonic()
        with pytest.raises(TargetUnavailableError) as excinfo:
            TeamsTarget().deliver(
                change_frame(CHANGES),
                TeamsTarget().configure(config("teams", name="t", url=receiver.url)),
                ctx("t", timeout_s=0.3),
            )
        assert time.monotonic() - started < 1.5
    assert "SECRET" not in str(excinfo.value)


# ------------------------------------------------------------------------------- teams


def assert_adaptive_card_message(message: dict[str, Any]) -> dict[str, Any]:
    """The message shape Teams webhooks accept; returns the card."""
    assert message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"]

    def check(element: dict[str, Any]) -> None:
        kind = element["type"]
        if kind == "TextBlock":
            assert isinstance(element["text"], str) and element["text"]
        elif kind == "FactSet":
            assert element["facts"]
            for fact in element["facts"]:
                assert set(fact) == {"title", "value"}
                assert isinstance(fact["title"], str) and isinstance(fact["value"], str)
        elif kind == "Container":
            assert element["items"]
            for item in element["items"]:
                check(item)
        else:
            raise AssertionError(f"unexpected element {kind}")

    for element in card["body"]:
        check(element)
    return card


def card_texts(card: dict[str, Any]) -> list[str]:
    texts: list[str] = []

    def walk(element: dict[str, Any]) -> None:
        if element["type"] == "TextBlock":
            texts.append(element["text"])
        elif element["type"] == "FactSet":
            texts.extend(f["value"] for f in element["facts"])
        for item in element.get("items", []):
            walk(item)

    for element in card["body"]:
        walk(element)
    return texts


def test_teams_message_is_an_adaptive_card_and_escaped(
    receiver: RecordingReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LILY_TEST_TEAMS_URL", receiver.url)
    cfg = TeamsTarget().configure(
        config("teams", name="data-teams", url_env="LILY_TEST_TEAMS_URL", max_shown=3)
    )
    link = "[click](http://evil.example) *now*"
    rows: list[dict[str, Any]] = [
        *CHANGES,
        {"name": NASTY},
        {"name": link, "qualified_name": "default/x/a_b"},
    ]
    TeamsTarget().deliver(change_frame(rows), cfg, ctx("data-teams"))
    (request,) = receiver.requests
    card = assert_adaptive_card_message(request.json())
    body = card["body"]
    assert body[0]["text"] == "Lily: 5 hub changes in acme"
    assert "acme" in body[1]["text"] and "data-teams" in body[1]["text"]
    containers = [e for e in body if e["type"] == "Container"]
    assert len(containers) == 3
    assert body[-1]["text"] == "and 2 more changes"
    summary, facts = containers[1]["items"]
    assert summary["text"] == ("Column EMAIL é updated (v3): certificate\\_status, classifications")
    assert {f["title"]: f["value"] for f in facts["facts"]} == {
        "Type": "Column",
        "Name": "EMAIL é",
        "Qualified name": "default/snowflake/1700000000/DB/SCH/ORDERS/EMAIL",
        "Change": "updated (v3)",
        "Changed": "certificate\\_status, classifications",
        "Certificate": "VERIFIED",
        "Classifications": "PII, GDPR:personal-data",
    }

    cfg_all = TeamsTarget().configure(config("teams", name="t", url=receiver.url))
    TeamsTarget().deliver(change_frame(rows[3:]), cfg_all, ctx("t"))
    card = assert_adaptive_card_message(receiver.requests[1].json())
    names = [
        {f["title"]: f["value"] for f in c["items"][1]["facts"]}["Name"]
        for c in card["body"]
        if c["type"] == "Container"
    ]
    # Adaptive Cards show no HTML: <script> and & are plain text; markdown is escaped.
    assert names == [NASTY, "\\[click\\](http://evil.example) \\*now\\*"]
    for text in card_texts(card):
        assert not re.search(r"(?<!\\)[\[\]*`]", text), text


def test_teams_unavailable_and_rejected(receiver: RecordingReceiver) -> None:
    receiver.script([502, (400, "Bad payload")])
    cfg = TeamsTarget().configure(config("teams", name="t", url=receiver.url))
    with pytest.raises(TargetUnavailableError):
        TeamsTarget().deliver(change_frame(CHANGES), cfg, ctx("t"))
    with pytest.raises(TargetRejectedError, match="Bad payload"):
        TeamsTarget().deliver(change_frame(CHANGES), cfg, ctx("t"))
    TeamsTarget().deliver(change_frame(CHANGES), cfg, ctx("t"))
    assert len(receiver.requests) == 3


def test_receiver_down_then_back_at_the_same_url(secret: str) -> None:
    receiver = RecordingReceiver().start()
    url, cfg = receiver.url, webhook(receiver.url)
    receiver.stop()
    with pytest.raises(TargetUnavailableError, match="cannot reach"):
        WebhookTarget().deliver(change_frame(CHANGES), cfg, ctx())
    with receiver.start():
        assert receiver.url == url
        WebhookTarget().deliver(change_frame(CHANGES), cfg, ctx())
        assert len(receiver.wait_for(1, timeout_s=2)) == 1


def test_slack_long_text_is_clipped_whole_entities() -> None:
    from lily_dagster.lib.targets.builtin.slack import SECTION_CHARS, slack_message
    from lily_dagster.lib.targets.render import ChatConfig

    frame = change_frame([{"qualified_name": "default/x/" + "<&>" * 2000, "name": "&" * 900}])
    message = slack_message(frame, ChatConfig(url="http://h/x"), ctx("s"))
    assert_block_kit(message)
    for text in mrkdwn_texts(message):
        assert len(text) <= SECTION_CHARS
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), text[-20:]


def test_an_unavailable_answer_that_echoes_the_payload_is_not_repeated_in_the_error() -> None:
    """A 5xx failure is what Dagster's event log keeps, in plaintext: a body echoing the
    changes sent must not reach it (CONTRACT.md §7); a short error code does."""
    echoed = json.dumps([{"description": "Echoed7c1d customer notes", "owner": "x"}] * 3)
    with RecordingReceiver(path=SLACK_PATH) as receiver:
        receiver.script([(503, echoed)])
        with pytest.raises(TargetUnavailableError) as excinfo:
            SlackTarget().deliver(change_frame(CHANGES), slack(receiver.url), ctx("s"))
    assert "Echoed7c1d" not in str(excinfo.value) and "503" in str(excinfo.value)
    assert f"{len(echoed.encode())} bytes not shown" in str(excinfo.value)
