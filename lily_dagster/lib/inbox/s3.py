"""`S3Inbox`: the webhook inbox on S3 (or any S3-compatible store), for production.

Every accepted request is one object `<prefix>/inbox/<time_ns>-<writer>-<n>.jsonl` (one
JSON line per event), written with a single PUT before the receiver answers 202. Keys sort
by time, so the inbox sensor lists after the last key it landed (`StartAfter`). A PUT that
started earlier may finish later, so keys younger than `settle_s` are left for the next
tick. Deduplication by event_id happens within a page; across pages the hub's idempotent
merge makes a redelivered event a no-op. boto3 reads the usual AWS settings; set
LILY_S3_ENDPOINT_URL for an S3-compatible endpoint.

Each line's `payload` is sealed with its event's tenant cipher, line by line rather than
the object as a whole: a request's events need not all be of one tenant, and the tenant,
event id and source stay readable for deduplication and for `forget_tenant`. Erasure and
`forget_tenant` replace objects whole; on a bucket with versioning, the old versions stay
until a lifecycle rule expires them.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from lily_dagster.lib.crypto import Ciphers, TenantCipher, plaintext
from lily_dagster.lib.gdpr.payload import scrub_payload_text
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.inbox.base import (
    AppendResult,
    InboxEvent,
    InboxPage,
    StoredEvent,
    completed,
)
from lily_dagster.settings import Settings


class S3Inbox:
    def __init__(
        self,
        bucket: str,
        prefix: str,
        client: Any | None = None,
        settle_s: float = 5.0,
        ciphers: Ciphers = plaintext,
    ) -> None:
        import boto3

        self.ciphers = ciphers
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or boto3.client("s3", endpoint_url=Settings.from_env().s3_endpoint_url)
        self.settle_s = settle_s
        self._writer_id = uuid.uuid4().hex[:12]
        self._counter = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="s3-inbox")

    @classmethod
    def from_uri(cls, uri: str, ciphers: Ciphers = plaintext) -> S3Inbox:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return cls(bucket, prefix or "lily", ciphers=ciphers)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def append(self, events: Sequence[InboxEvent]) -> Future[AppendResult]:
        if not events:
            return completed(AppendResult(0, 0))
        with self._lock:
            self._counter += 1
            key = self._key(
                f"inbox/{time.time_ns():020d}-{self._writer_id}-{self._counter:09d}.jsonl"
            )
        now = time.time()
        cipher = functools.cache(self.ciphers)  # one key look-up per tenant of the request
        body = "\n".join(
            json.dumps(
                {
                    "tenant": e.tenant,
                    "event_id": e.event_id,
                    "source": e.source,
                    "received_at": now,
                    "payload": cipher(e.tenant).seal_text(e.payload.decode("utf-8")),
                }
            )
            for e in events
        ).encode()

        def put() -> AppendResult:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson"
            )
            return AppendResult(len(events), 0)

        return self._pool.submit(put)

    def _keys_after(self, after: str | None, settled_only: bool = True) -> list[str]:
        """The request objects after `after`, oldest first: those older than `settle_s`
        (an earlier PUT may finish later), or all of them."""
        settled = f"{time.time_ns() - int(self.settle_s * 1e9):020d}"
        keys: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key("inbox/")}
        if after:
            kwargs["StartAfter"] = after
        for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            for item in page.get("Contents", []):
                name = item["Key"].rsplit("/", 1)[-1]
                if settled_only and name[:20] > settled:
                    return keys  # sorted: everything after is younger still
                keys.append(item["Key"])
        return keys

    def read(self, after: str | None, limit: int) -> InboxPage:
        events: list[StoredEvent] = []
        seen: set[tuple[str, str]] = set()
        cursor = None
        cipher = functools.cache(self.ciphers)
        for key in self._keys_after(after):
            if len(events) >= limit:
                break
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            for line_no, line in enumerate(body.splitlines()):
                entry = json.loads(line)
                ident = (entry["tenant"], entry["event_id"])
                if ident in seen:
                    continue
                seen.add(ident)
                events.append(
                    StoredEvent(
                        seq=len(events) + 1,
                        tenant=entry["tenant"],
                        event_id=entry["event_id"],
                        payload=_opened(cipher(entry["tenant"]), entry["payload"]),
                        source=entry["source"],
                        received_at=float(entry["received_at"]),
                        ref=f"{key}#{line_no}",
                    )
                )
            cursor = key
        return InboxPage(events, cursor)

    def pending(self, after: str | None) -> int:
        return len(self._keys_after(after))

    def position(self) -> str | None:
        keys = self._keys_after(None)
        return keys[-1] if keys else None

    def consumer_cursor(self) -> str | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key("consumer-cursor"))[
                "Body"
            ]
        except self.client.exceptions.NoSuchKey:
            return None
        return str(body.read().decode()) or None

    def set_consumer_cursor(self, cursor: str) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self._key("consumer-cursor"), Body=cursor.encode()
        )

    def erase_subject(self, tenant: str, subject: Subject, dry_run: bool = False) -> int:
        """Erase `subject` from the payloads of the tenant's events; how many mentioned it
        (dry_run: would be rewritten). An object that changes is replaced by one PUT."""
        cipher = self.ciphers(tenant)
        changed = 0
        for key in self._keys_after(None, settled_only=False):
            lines = self._lines(key)
            touched = 0
            for i, line in enumerate(lines):
                entry = json.loads(line)
                if entry["tenant"] != tenant:
                    continue
                text = scrub_payload_text(subject, cipher.open_text(entry["payload"]))
                if text is not None:
                    lines[i] = json.dumps({**entry, "payload": cipher.seal_text(text)})
                    touched += 1
            changed += touched
            if touched and not dry_run:
                self._put_lines(key, lines)
        return changed

    def forget_tenant(self, tenant: str) -> int:
        """Remove every event of the tenant (an object left empty is deleted); how many
        there were. No key is needed: the other tenants' lines are kept as they are."""
        removed = 0
        for key in self._keys_after(None, settled_only=False):
            lines = self._lines(key)
            kept = [line for line in lines if json.loads(line)["tenant"] != tenant]
            if len(kept) == len(lines):
                continue
            removed += len(lines) - len(kept)
            if kept:
                self._put_lines(key, kept)
            else:
                self.client.delete_object(Bucket=self.bucket, Key=key)
        return removed

    def _lines(self, key: str) -> list[str]:
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return [line for line in body.decode("utf-8").splitlines() if line]

    def _put_lines(self, key: str, lines: list[str]) -> None:
        body = "\n".join(lines).encode()
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _opened(cipher: TenantCipher, payload: str) -> bytes:
    return str(cipher.open_text(payload)).encode("utf-8")
