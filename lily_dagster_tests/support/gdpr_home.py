"""A LILY_HOME whose stores all hold a data subject, for the erasure tests: two tenants
(acme, globex), two webhook targets on loopback (`audit` accepts, `refusing` answers 400,
so its dead letters hold the subject too), encryption on as in production."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lily_dagster.lib.crypto import ciphers_of
from lily_dagster.lib.envelope import to_rejects
from lily_dagster.lib.gdpr.erase import deliver_changes
from lily_dagster.lib.hub import open_hub
from lily_dagster.lib.inbox import InboxEvent, open_inbox
from lily_dagster.lib.intermediates import read_frame, write_frame
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.staging import StagingArea, landed_frame
from lily_dagster.settings import Settings
from lily_dagster_tests.support import envelopes
from lily_dagster_tests.support.frames import frame
from lily_dagster_tests.support.receivers import RecordingReceiver

SUBJECT = "Jane.Doe@Acme.com"
FOLDED = SUBJECT.lower()
TABLE = "default/snowflake/1700000000/DB/SCH/ORDERS"
SECRET = "gdpr-test-target-secret"


def asset(name: str, tenant: str = "acme", minutes: int = 0, **attributes: Any) -> dict[str, Any]:
    return envelopes.envelope(
        f"{TABLE}/{name}",
        tenant=tenant,
        type_name="Column",
        event_id=f"{tenant}-{name}-{minutes}",
        event_time=envelopes.at(minutes),
        attributes={"parent_qualified_name": TABLE, **attributes},
    )


def estate(tenant: str = "acme") -> list[dict[str, Any]]:
    return [
        asset("EMAIL", tenant, description=f"Ask {SUBJECT} first", owner_users=[FOLDED, "ops"]),
        asset("NAME", tenant, sample_values=["jane.doe@acme.com", "x"], owner_users=["ops"]),
        asset("AMOUNT", tenant, description="nobody's", owner_users=["ops"]),
    ]


@dataclass
class Home:
    settings: Settings
    audit: RecordingReceiver
    refusing: RecordingReceiver


@contextlib.contextmanager
def subject_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """The home, populated; its settings in the environment."""
    with RecordingReceiver() as audit, RecordingReceiver(default_status=400) as refusing:
        config = tmp_path / "lily.yaml"
        targets = [
            {"name": "audit", "url": audit.url},
            {"name": "refusing", "url": refusing.url},
        ]
        config.write_text(
            json.dumps(
                {
                    "tenants": [{"name": "acme"}, {"name": "globex"}],
                    "targets": [
                        {**t, "type": "webhook", "secret_env": "GDPR_TEST_SECRET", "backoff_s": 0}
                        for t in targets
                    ],
                }
            )
        )
        monkeypatch.setenv("GDPR_TEST_SECRET", SECRET)
        monkeypatch.setenv("LILY_HOME", str(tmp_path / "lily"))
        monkeypatch.setenv("LILY_CONFIG", str(config))
        monkeypatch.delenv("LILY_HUB", raising=False)
        monkeypatch.delenv("LILY_ENCRYPTION", raising=False)
        settings = Settings.from_env()
        for tenant in ("acme", "globex"):
            populate(settings, tenant)
        yield Home(settings, audit, refusing)


def populate(settings: Settings, tenant: str) -> None:
    """The subject in every store: the hub (and its change log), the dead letters of the
    refusing target (and the audit target's deliveries), a staged batch, the inbox, the
    quarantine and an intermediate frame."""
    ciphers = ciphers_of(settings)
    open_hub(settings).upsert(tenant, frame(estate(tenant)))
    deliver_changes(settings, tenant)
    payloads = [json.dumps(e).encode() for e in estate(tenant)]
    now = datetime.now(UTC)
    landed = landed_frame([f"kafka:t/0/{i}" for i in range(3)], payloads, [now] * 3)
    StagingArea(settings.staging_dir, ciphers).land(tenant, "batch-1", "kafka", landed, {})
    inbox = open_inbox(settings)
    try:
        events = [InboxEvent(tenant, f"in-{i}", p, "tenants-api") for i, p in enumerate(payloads)]
        inbox.append(events).result(timeout=30)
    finally:
        inbox.close()
    bad = json.dumps({**estate(tenant)[0], "op": "explode"})
    rejects = pl.DataFrame(
        {
            "event_id": ["bad-1"],
            "reason": ["unknown_op"],
            "detail": ["op"],
            "raw": [bad],
            "origin": ["webhook:#9"],
        }
    )
    QuarantineStore(settings.quarantine_dir, ciphers).add(
        tenant, "q-1", to_rejects(rejects, tenant)
    )
    path = settings.io_dir / "enriched_events" / f"run-{tenant}" / f"{tenant}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_frame(frame(estate(tenant)), path, [tenant], ciphers)


def holdings(settings: Settings, tenant: str) -> dict[str, str]:
    """Every store of the tenant as plaintext (opened), by store."""
    ciphers = ciphers_of(settings)
    hub = open_hub(settings)
    changes = hub.changes(tenant, 0, 10_000)
    staging = StagingArea(settings.staging_dir, ciphers)
    landed, _ = staging.read(tenant, staging.pending(tenant))
    inbox = open_inbox(settings)
    try:
        stored = inbox.read(None, 1000).events
    finally:
        inbox.close()
    dead = QuarantineStore(settings.dlq_dir / "refusing", ciphers).read(tenant)
    io = settings.io_dir / "enriched_events" / f"run-{tenant}" / f"{tenant}.parquet"
    return {
        "hub": json.dumps(list(hub.export(tenant))),
        "change_log": text(changes),
        "staging": " ".join(v.decode() for v in landed.get_column("value").to_list()),
        "inbox": " ".join(e.payload.decode() for e in stored if e.tenant == tenant),
        "quarantine": text(QuarantineStore(settings.quarantine_dir, ciphers).read(tenant)),
        "dead_letters": text(dead),
        "intermediates": text(read_frame(io, ciphers)),
    }


def text(frame: pl.DataFrame) -> str:
    return json.dumps(frame.to_dicts(), default=str)


def naming(settings: Settings, tenant: str) -> set[str]:
    return {store for store, text in holdings(settings, tenant).items() if FOLDED in text.lower()}
