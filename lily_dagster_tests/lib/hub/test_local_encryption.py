"""LocalHub with tenant keys (CONTRACT.md §7): descriptions, owners, free-form attributes,
a change's `before`, partial changes and raw payloads are sealed in the tenant's DuckDB
file (and its write-ahead log), while records, the change log and the export read exactly
as without encryption; data written before encryption was on still reads, and a wrong key
fails loudly instead of returning garbage."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from lily_dagster.lib.crypto import Ciphers, CryptoError, TenantCipher, plaintext
from lily_dagster.lib.hub.base import UpsertResult
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster.settings import ConfigError, Settings
from lily_dagster_tests.lib.hub.conftest import (
    WalKeepingHub,
    ciphers_in,
    dumps,
    files_holding,
    patch_envelope,
)
from lily_dagster_tests.support.envelopes import T0, ev
from lily_dagster_tests.support.frames import frame

MARK = "zqxmark"  # lower case: owners are normalised to lower case
T1, T2, C1 = "db/sch/t1", "db/sch/t2", "db/sch/t1/c1"


def timeline() -> list[list[dict[str, Any]]]:
    """Batches touching every stored content column: creates, an update, partial changes
    (one waiting for a record that never comes), a delete and a restore."""
    secret = {
        "description": f"orders of {MARK}-desc",
        "owner_users": [f"{MARK}-owner"],
        "owner_groups": [f"{MARK}-group"],
        "sample": f"{MARK}-sample",
    }
    return [
        [
            ev("e1", T1, 1, attributes=secret, classifications=["PII"]),
            ev("e2", T2, 1, attributes={"description": "plain"}),
            ev("e3", C1, 1, type_name="Column", attributes={"parent_qualified_name": T1}),
        ],
        [
            ev("e4", T1, 2, attributes={**secret, "description": f"all orders {MARK}-desc2"}),
            patch_envelope("p1", T2, 2, {"set": {"description": f"{MARK}-patched",
                                                  "owner_users": [f"{MARK}-patcher"]}}),
            ev("e5", C1, 2, "delete"),
        ],
        [
            ev("e6", C1, 3, type_name="Column", attributes={"parent_qualified_name": T1}),
            patch_envelope("p2", T1, 3, {"set": {"note": f"{MARK}-note"},
                                         "add_classifications": ["GOLD"]}),
            patch_envelope("p3", "db/sch/ghost", 3, {"set": {"description": f"{MARK}-orphan"}}),
        ],
    ]  # fmt: skip


def play(hub: LocalHub, tenant: str = "acme") -> list[UpsertResult]:
    results = []
    for i, batch in enumerate(timeline()):
        results.append(hub.upsert(tenant, frame(batch), now=T0 + timedelta(minutes=10 * i)))
    return results


def expire_orphans(hub: LocalHub) -> pl.DataFrame:
    """The quarantine entries of partial changes that waited too long for their record."""
    result = hub.upsert("acme", frame([ev("e9", T2, 9)]), now=T0 + timedelta(days=3))
    assert result.rejects is not None
    return result.rejects.select("event_id", "raw")


def everything(hub: LocalHub) -> dict[str, Any]:
    """What users and targets read from the hub."""
    return {
        "records": hub.records("acme").to_dicts(),
        "changes": hub.changes("acme", 0, 1000).to_dicts(),
        "export": list(hub.export("acme")),
        "changed_since": hub.changed_since("acme", 2)[1].sort("qualified_name").to_dicts(),
        "status": hub.status_counts("acme"),
    }


def test_sealed_hub_reads_exactly_as_a_plaintext_one(home: Path, sealed: Ciphers) -> None:
    plain = LocalHub(home / "plain")
    hub = LocalHub(home / "hub", ciphers=sealed)
    assert [r.as_dict() for r in play(hub)] == [r.as_dict() for r in play(plain)]
    assert dumps(everything(hub)) == dumps(everything(plain))
    assert dumps(expire_orphans(hub).to_dicts()) == dumps(expire_orphans(plain).to_dicts())
    assert dumps(everything(hub)) == dumps(everything(plain))
    assert MARK in dumps(everything(hub))  # the content itself is there to read


@pytest.mark.parametrize("keep_wal", [True, False], ids=["wal", "checkpointed"])
def test_no_content_in_plaintext_in_any_hub_file(
    home: Path, sealed: Ciphers, keep_wal: bool
) -> None:
    kind = WalKeepingHub if keep_wal else LocalHub
    hub = kind(home / "hub", ciphers=sealed)
    play(hub)
    shown = dumps(everything(hub))
    for value in ("desc2", "owner", "group", "sample", "patched", "patcher", "note"):
        assert f"{MARK}-{value}" in shown
    if keep_wal:
        assert (home / "hub" / "acme.duckdb.wal").stat().st_size > 0
    # Names stay plaintext and queryable; the content is nowhere in the files.
    assert files_holding(home / "hub", MARK) == {}
    assert files_holding(home / "hub", "db/sch/ghost")  # the WAL's or the file's names
    assert "GOLD" in shown and f"{MARK}-orphan" in dumps(expire_orphans(hub).to_dicts())
    assert files_holding(home / "hub", MARK) == {}


def test_the_same_files_without_encryption_show_the_content(home: Path) -> None:
    """The check above can see plaintext: with LILY_ENCRYPTION=off the marker is there."""
    hub = WalKeepingHub(home / "hub", ciphers=ciphers_in(home, encryption=False))
    play(hub)
    assert files_holding(home / "hub", MARK)


def test_data_written_with_encryption_off_reads_once_it_is_on(home: Path) -> None:
    before = LocalHub(home / "hub", ciphers=ciphers_in(home, encryption=False))
    reference = LocalHub(home / "reference")
    batches = timeline()
    before.upsert("acme", frame(batches[0]), now=T0)
    reference.upsert("acme", frame(batches[0]), now=T0)
    after = LocalHub(home / "hub", ciphers=ciphers_in(home))
    assert dumps(everything(after)) == dumps(everything(reference))
    # Writes now seal; old and new rows read together, partial changes applied to both.
    for i, batch in enumerate(batches[1:], start=1):
        now = T0 + timedelta(minutes=10 * i)
        after.upsert("acme", frame(batch), now=now)
        reference.upsert("acme", frame(batch), now=now)
    assert dumps(everything(after)) == dumps(everything(reference))


def test_reading_with_another_key_fails_with_a_one_line_error(home: Path, sealed: Ciphers) -> None:
    LocalHub(home / "hub", ciphers=sealed).upsert("acme", frame(timeline()[0]), now=T0)
    stranger = LocalHub(home / "hub", ciphers=lambda t: TenantCipher(t, os.urandom(32)))
    with pytest.raises(CryptoError) as wrong:
        stranger.records("acme")
    assert "'acme'" in str(wrong.value) and "\n" not in str(wrong.value)
    with pytest.raises(CryptoError):
        stranger.changes("acme", 0, 10)
    # A store given no key (plaintext) cannot open it either: never sealed text as content.
    with pytest.raises(CryptoError):
        list(LocalHub(home / "hub", ciphers=plaintext).export("acme"))


def test_another_master_key_is_a_configuration_error(home: Path, sealed: Ciphers) -> None:
    LocalHub(home / "hub", ciphers=sealed).upsert("acme", frame(timeline()[0]), now=T0)
    env = {"LILY_HOME": str(home), "LILY_MASTER_KEY": os.urandom(32).hex()}
    from lily_dagster.lib.crypto import ciphers_of

    with pytest.raises(ConfigError):
        LocalHub(home / "hub", ciphers=ciphers_of(Settings.resolve(env))).records("acme")


def test_tenants_have_their_own_keys(home: Path, sealed: Ciphers) -> None:
    hub = LocalHub(home / "hub", ciphers=sealed)
    hub.upsert("acme", frame(timeline()[0]), now=T0)
    hub.upsert("globex", frame([{**e, "tenant": "globex"} for e in timeline()[0]]), now=T0)
    acme_key = sealed("acme")
    # globex's file does not open with acme's key.
    with pytest.raises(CryptoError):
        LocalHub(home / "hub", ciphers=lambda t: acme_key).records("globex")
    assert hub.records("globex").height == 3


def test_batches_sealed_ahead_read_as_batches_the_hub_sealed_itself(
    home: Path, sealed: Ciphers
) -> None:
    """A bulk load hands each batch's content, sealed ahead by the hub's bulk sealer, to the
    upsert: the hub stores those values where the merged record kept them (every kind of
    change of the timeline), and reads exactly as without."""
    plain = LocalHub(home / "plain")
    hub = LocalHub(home / "hub", ciphers=sealed)
    aheads = []
    with hub.bulk_sealer("acme") as sealer:
        for i, batch in enumerate(timeline()):
            events, now = frame(batch), T0 + timedelta(minutes=10 * i)
            ahead = sealer.submit(events).result()
            assert ahead is not None
            aheads.append(ahead)
            hub.upsert("acme", events, now=now, sealed_ahead=ahead)
            plain.upsert("acme", events, now=now)
    assert dumps(everything(hub)) == dumps(everything(plain))
    with duckdb.connect(str(hub.path("acme")), read_only=True) as con:
        stored = con.sql(
            "SELECT description FROM changes UNION SELECT description FROM records"
        ).pl()["description"]
    reused = set(aheads[0]["description__sealed"].drop_nulls()) & set(stored.drop_nulls())
    assert reused  # taken from ahead, not sealed again


def test_nothing_is_sealed_ahead_with_encryption_off(home: Path) -> None:
    hub = LocalHub(home / "hub", ciphers=ciphers_in(home, encryption=False))
    with hub.bulk_sealer("acme") as sealer:
        assert sealer.submit(frame(timeline()[0])).result() is None
