"""The webhook inboxes at rest: each payload sealed with its event's tenant key (SQLite: in
the database, its write-ahead log and journal, before and after a checkpoint; S3: in the
object bodies), rows of earlier releases still read, a data subject erased, a tenant's
events forgotten."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import boto3
import pytest

from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.inbox import InboxEvent
from lily_dagster.lib.inbox.s3 import S3Inbox
from lily_dagster.lib.inbox.sqlite import SqliteInbox
from lily_dagster_tests.support.sealed import files_holding, made_up_ciphers

MARKER = "InboxCanary5e0"
SUBJECT = "jane.roe@acme.example"


def event(tenant: str, i: int, description: str, owners: list[str] | None = None) -> InboxEvent:
    attributes = {"description": description, "owner_users": owners or []}
    body = {"event_id": f"{tenant}-{i}", "tenant": tenant, "asset": {"attributes": attributes}}
    return InboxEvent(tenant, f"{tenant}-{i}", json.dumps(body).encode(), "tenants-api")


def attributes(payload: bytes) -> dict[str, object]:
    return dict(json.loads(payload)["asset"]["attributes"])


@pytest.fixture
def inbox(tmp_path: Path) -> SqliteInbox:
    return SqliteInbox(tmp_path / "inbox.sqlite", made_up_ciphers())


def test_sqlite_payloads_are_sealed_in_every_file(inbox: SqliteInbox, tmp_path: Path) -> None:
    events = [
        event(t, i, f"{MARKER} {i}", [f"{MARKER}@x.org"])
        for t in ("acme", "globex")
        for i in range(50)
    ]
    assert inbox.append(events).result(10).stored == 100
    assert (tmp_path / "inbox.sqlite-wal").stat().st_size > 0  # the rows are in the log
    assert files_holding(tmp_path, MARKER) == []
    assert [e.payload for e in inbox.read_after(0, 1000)] == [e.payload for e in events]
    with sqlite3.connect(tmp_path / "inbox.sqlite") as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert files_holding(tmp_path, MARKER) == []
    # Tenants, ids and sources stay plaintext: deduplication and forget_tenant need no key.
    assert inbox.append([event("acme", 0, "again")]).result(10).duplicates == 1
    inbox.close()


def test_sqlite_rows_written_before_encryption_still_read(tmp_path: Path) -> None:
    old = SqliteInbox(tmp_path / "inbox.sqlite")
    old.append([event("acme", 1, "old")]).result(10)
    old.close()
    inbox = SqliteInbox(tmp_path / "inbox.sqlite", made_up_ciphers())
    inbox.append([event("acme", 2, "new")]).result(10)
    assert [attributes(e.payload)["description"] for e in inbox.read_after(0, 10)] == ["old", "new"]
    inbox.close()


def test_sqlite_erasure_rewrites_the_tenants_rows_and_leaves_no_old_bytes(tmp_path: Path) -> None:
    """Rows of an earlier release (plaintext) are the hard case: the old bytes must be gone
    from the database file and its write-ahead log, not only from what reads show."""
    old = SqliteInbox(tmp_path / "inbox.sqlite")
    old.append([event("acme", i, f"by {SUBJECT}", [SUBJECT, "bob"]) for i in range(3)]).result(10)
    old.append([event("acme", 9, "nothing"), event("globex", 1, SUBJECT)]).result(10)
    old.close()
    inbox = SqliteInbox(tmp_path / "inbox.sqlite", made_up_ciphers())
    subject = Subject(SUBJECT.upper())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert inbox.erase_subject("acme", subject, dry_run=True) == 3
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    assert inbox.erase_subject("acme", subject) == 3
    by_id = {e.event_id: attributes(e.payload) for e in inbox.read_after(0, 100)}
    assert by_id["acme-0"] == {"description": "by [erased]", "owner_users": ["bob"]}
    assert by_id["acme-9"] == {"description": "nothing", "owner_users": []}
    assert by_id["globex-1"]["description"] == SUBJECT  # another tenant's events untouched
    # Only the other tenant's row (plaintext, untouched) still holds it on disk.
    with sqlite3.connect(tmp_path / "inbox.sqlite") as con:
        con.execute("DELETE FROM inbox WHERE tenant = 'globex'")
        con.execute("PRAGMA secure_delete=ON")
    inbox.forget_tenant("globex")
    assert files_holding(tmp_path, SUBJECT) == []
    assert inbox.erase_subject("acme", subject) == 0
    inbox.close()


def test_sqlite_forget_tenant_removes_its_rows_only(inbox: SqliteInbox) -> None:
    inbox.append([event("acme", 1, "a"), event("globex", 1, "g"), event("globex", 2, "g")]).result(
        10
    )
    assert inbox.forget_tenant("globex") == 2
    assert [e.tenant for e in inbox.read_after(0, 10)] == ["acme"]
    assert inbox.forget_tenant("globex") == 0
    inbox.close()


@pytest.fixture
def bucket(s3_env: str, request: pytest.FixtureRequest) -> str:
    name = f"lily-sealed-{abs(hash(request.node.name)) % 10**8}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=name)
    return name


def bodies(bucket: str) -> list[bytes]:
    client = boto3.client("s3", endpoint_url=os.environ["LILY_S3_ENDPOINT_URL"])
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return [client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed]


def test_s3_payloads_are_sealed_per_event_with_its_tenants_key(bucket: str) -> None:
    inbox = S3Inbox(bucket, "lily", settle_s=0, ciphers=made_up_ciphers())
    mixed = [event("acme", 1, MARKER, [MARKER]), event("globex", 1, MARKER)]
    inbox.append(mixed).result(10)
    assert not any(MARKER.encode() in body for body in bodies(bucket))
    assert [e.payload for e in inbox.read(None, 10).events] == [e.payload for e in mixed]
    inbox.close()


def test_s3_erasure_and_forgetting_rewrite_objects(bucket: str) -> None:
    S3Inbox(bucket, "lily", settle_s=0).append([event("acme", 0, SUBJECT)]).result(10)  # plaintext
    inbox = S3Inbox(bucket, "lily", settle_s=0, ciphers=made_up_ciphers())
    inbox.append([event("acme", 1, f"cc {SUBJECT}", [SUBJECT]), event("globex", 1, "g")]).result(10)
    inbox.append([event("globex", 2, "g")]).result(10)
    before = bodies(bucket)
    assert inbox.erase_subject("acme", Subject(SUBJECT), dry_run=True) == 2
    assert bodies(bucket) == before
    assert inbox.erase_subject("acme", Subject(SUBJECT)) == 2
    assert inbox.erase_subject("acme", Subject(SUBJECT)) == 0
    by_id = {e.event_id: attributes(e.payload) for e in inbox.read(None, 10).events}
    assert by_id["acme-0"]["description"] == "[erased]"
    assert by_id["acme-1"] == {"description": "cc [erased]", "owner_users": []}
    assert not any(SUBJECT.encode() in body for body in bodies(bucket))
    assert inbox.forget_tenant("globex") == 2
    assert [e.tenant for e in inbox.read(None, 10).events] == ["acme", "acme"]
    assert len(bodies(bucket)) == 2  # the object that held globex alone is gone
    inbox.close()
