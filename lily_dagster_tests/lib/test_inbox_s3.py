"""S3Inbox against a real S3 API on loopback (moto's server: HTTP, not patched functions)."""

from __future__ import annotations

import time

import boto3
import pytest

from lily_dagster.lib.inbox import InboxEvent, open_inbox
from lily_dagster.lib.inbox.s3 import S3Inbox
from lily_dagster.settings import Settings


@pytest.fixture
def bucket(s3_env: str, request: pytest.FixtureRequest) -> str:
    name = f"lily-inbox-{abs(hash(request.node.name)) % 10**8}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=name)
    return name


def _events(n: int, start: int = 0, tenant: str = "acme") -> list[InboxEvent]:
    return [
        InboxEvent(tenant, f"e{i}", f'{{"event_id": "e{i}"}}'.encode(), "tenants-api")
        for i in range(start, start + n)
    ]


def test_appended_events_are_read_in_order_after_the_cursor(bucket: str) -> None:
    inbox = S3Inbox(bucket, "lily", settle_s=0)
    assert inbox.append(_events(3)).result(10).stored == 3
    assert inbox.append(_events(2, start=3)).result(10).stored == 2
    page = inbox.read(None, 100)
    assert [e.event_id for e in page.events] == ["e0", "e1", "e2", "e3", "e4"]
    assert len({e.origin for e in page.events}) == 5  # unique origins for landing
    assert inbox.pending(None) == 2 and inbox.pending(page.cursor) == 0
    inbox.append(_events(1, start=5)).result(10)
    later = inbox.read(page.cursor, 100)
    assert [e.event_id for e in later.events] == ["e5"]
    assert inbox.position() == later.cursor


def test_a_page_stops_at_the_limit_on_object_boundaries_and_dedupes_event_ids(bucket: str) -> None:
    inbox = S3Inbox(bucket, "p", settle_s=0)
    for start in (0, 2, 4):
        inbox.append(_events(2, start=start)).result(10)
    inbox.append(_events(2, start=0)).result(10)  # a client retried its first request
    first = inbox.read(None, 3)
    assert [e.event_id for e in first.events] == ["e0", "e1", "e2", "e3"]  # whole objects
    rest = inbox.read(first.cursor, 100)
    assert [e.event_id for e in rest.events] == ["e4", "e5", "e0", "e1"]


def test_keys_younger_than_the_settle_window_wait_for_the_next_read(bucket: str) -> None:
    inbox = S3Inbox(bucket, "settle", settle_s=1.0)
    inbox.append(_events(1)).result(10)
    assert inbox.read(None, 10).events == []  # an earlier PUT might still be in flight
    time.sleep(1.2)
    assert [e.event_id for e in inbox.read(None, 10).events] == ["e0"]


def test_consumer_cursor_round_trips_and_lily_inbox_selects_s3(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LILY_INBOX", f"s3://{bucket}/prod")
    inbox = open_inbox(Settings.from_env())
    assert isinstance(inbox, S3Inbox) and inbox.prefix == "prod"
    assert inbox.consumer_cursor() is None
    inbox.set_consumer_cursor("prod/inbox/0001")
    assert inbox.consumer_cursor() == "prod/inbox/0001"


def test_bad_lily_inbox_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from lily_dagster.settings import ConfigError

    monkeypatch.setenv("LILY_INBOX", "ftp://nowhere")
    with pytest.raises(ConfigError, match="LILY_INBOX") as exc:
        Settings.from_env()
    assert "\n" not in str(exc.value)
