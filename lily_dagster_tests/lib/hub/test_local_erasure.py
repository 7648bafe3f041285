"""`LocalHub.erase_subject` (CONTRACT.md §7): a data subject leaves the tenant's records
(owners dropped, occurrences in descriptions and sample values `[erased]`), its change log
(`before` included) and its partial changes, in one transaction; each record it changed
gets a new version and an `updated` change that propagation delivers; dry runs write
nothing, and a second erasure finds nothing. Sealed or not, no file under the hub
directory holds the subject afterwards (DuckDB's freed blocks included)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from lily_dagster.lib.crypto import Ciphers
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.hub.base import HubErasure
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster_tests.lib.hub.conftest import ciphers_in, dumps, files_holding, patch_envelope
from lily_dagster_tests.support.envelopes import T0, ev
from lily_dagster_tests.support.frames import frame

WHO = "Alice.Smith@Example.com"
who = WHO.lower()
OWNED, SAMPLED, PATCHED, FORMER, CLEAN, GONE = (
    f"db/sch/{n}" for n in ("owned", "sampled", "patched", "former", "clean", "gone")
)


def history() -> list[list[dict[str, Any]]]:
    """Records holding the subject in each place a hub keeps content."""
    return [
        [
            ev("o1", OWNED, 1, attributes={"description": f"ask {WHO} for access",
                                           "owner_users": [WHO, "bob"], "owner_groups": ["data"]}),
            ev("s1", SAMPLED, 1, attributes={"samples": ["x", f"mail {who}"], "rows": 3}),
            ev("p1", PATCHED, 1, attributes={"description": "patched later"}),
            ev("f1", FORMER, 1, attributes={"owner_users": [who]}),
            ev("c1", CLEAN, 1, attributes={"description": "nothing personal",
                                           "owner_users": ["bob"]}),
            ev("g1", GONE, 1, attributes={"description": f"by {WHO}"}),
        ],
        [
            # Only the change log still knows the former owner (in `before`).
            ev("f2", FORMER, 2, attributes={"owner_users": ["bob"]}),
            patch_envelope("pp1", PATCHED, 2, {"set": {"owner_users": [who, "carol"],
                                                       "contact": WHO}}),
            ev("g2", GONE, 2, "delete"),
            # Waits for a record that has not arrived.
            patch_envelope("pp2", "db/sch/later", 2, {"set": {"description": f"for {WHO}"}}),
        ],
    ]  # fmt: skip


def build(hub: LocalHub) -> None:
    for i, batch in enumerate(history()):
        hub.upsert("acme", frame(batch), now=T0 + timedelta(minutes=i))


@pytest.fixture(params=[True, False], ids=["sealed", "plaintext"])
def hub(request: pytest.FixtureRequest, home: Path) -> LocalHub:
    made = LocalHub(home / "hub", ciphers=ciphers_in(home, encryption=request.param))
    build(made)
    return made


def readable(hub: LocalHub) -> str:
    """Everything users and targets can read of the tenant, as text."""
    return dumps(
        {
            "export": list(hub.export("acme")),
            "changes": hub.changes("acme", 0, 10_000).to_dicts(),
            "records": hub.records("acme").to_dicts(),
        }
    )


def by_name(hub: LocalHub) -> dict[str, dict[str, Any]]:
    return {r["qualified_name"]: r["attributes"] for r in hub.export("acme")}


def test_the_subject_leaves_records_change_log_and_partial_changes(hub: LocalHub) -> None:
    assert who in readable(hub).lower()
    erasure = hub.erase_subject("acme", Subject(WHO.upper()))
    # Records whose view changed: owners, free text, a partial change's values, a deleted one.
    assert erasure.records_changed == sorted([OWNED, SAMPLED, PATCHED, GONE])
    assert erasure.patches_scrubbed == 2  # the applied one and the one still waiting
    assert erasure.changes_scrubbed >= 5
    assert who not in readable(hub).lower()
    records = by_name(hub)
    assert records[OWNED] == {"description": "ask [erased] for access",
                              "owner_users": ["bob"], "owner_groups": ["data"]}  # fmt: skip
    assert records[SAMPLED] == {"samples": ["x", "mail [erased]"], "rows": 3}
    assert records[PATCHED]["owner_users"] == ["carol"]
    assert records[PATCHED]["contact"] == "[erased]"
    assert records[CLEAN] == {"description": "nothing personal", "owner_users": ["bob"]}
    assert records[FORMER] == {"owner_users": ["bob"]}
    # The waiting partial change, once its record arrives, holds the subject no more.
    hub.upsert("acme", frame([ev("l1", "db/sch/later", 1)]), now=T0 + timedelta(minutes=5))
    assert by_name(hub)["db/sch/later"]["description"] == "for [erased]"


def test_each_record_changed_gets_an_updated_change_for_the_targets(hub: LocalHub) -> None:
    last = hub.last_change("acme")
    versions = {r["qualified_name"]: r["version"] for r in hub.records("acme").to_dicts()}
    erasure = hub.erase_subject("acme", Subject(WHO), now=T0 + timedelta(hours=1))
    new = hub.changes("acme", last, 100)
    assert new.get_column("qualified_name").to_list() == erasure.records_changed
    assert set(new.get_column("change")) == {"updated"}
    assert new.get_column("before").null_count() == new.height  # nothing kept of the old
    changed = dict(zip(new["qualified_name"], new["changed"].to_list(), strict=True))
    assert changed == {
        OWNED: ["description", "owner_users"],
        SAMPLED: ["attributes"],
        PATCHED: ["owner_users", "attributes"],
        GONE: ["description"],
    }
    after = {r["qualified_name"]: r for r in hub.records("acme").to_dicts()}
    for name in erasure.records_changed:
        assert after[name]["version"] == versions[name] + 1
    assert after[CLEAN]["version"] == versions[CLEAN]
    assert after[GONE]["status"] == "DELETED"
    # The change carries the record as it now is, as every change does.
    row = new.filter(new["qualified_name"] == OWNED).to_dicts()[0]
    assert row["version"] == after[OWNED]["version"]
    assert '"owner_users":["bob"]' in row["raw"]


def test_dry_run_counts_and_writes_nothing(hub: LocalHub) -> None:
    path = hub.path("acme")
    before, seen, last = path.read_bytes(), readable(hub), hub.last_change("acme")
    planned = hub.erase_subject("acme", Subject(WHO), dry_run=True)
    assert path.read_bytes() == before
    assert readable(hub) == seen and hub.last_change("acme") == last
    done = hub.erase_subject("acme", Subject(WHO))
    assert planned == done


def test_a_second_erasure_finds_nothing_and_changes_nothing(hub: LocalHub) -> None:
    hub.erase_subject("acme", Subject(WHO))
    seen, last = readable(hub), hub.last_change("acme")
    assert hub.erase_subject("acme", Subject(WHO)) == HubErasure()
    assert hub.erase_subject("acme", Subject(WHO), dry_run=True) == HubErasure()
    assert readable(hub) == seen and hub.last_change("acme") == last


def test_a_subject_held_nowhere_changes_nothing(hub: LocalHub) -> None:
    seen = readable(hub)
    assert hub.erase_subject("acme", Subject("nobody@example.com")) == HubErasure()
    assert readable(hub) == seen
    assert hub.erase_subject("globex", Subject(WHO)) == HubErasure()  # no such database


def test_no_file_keeps_the_subject_even_without_encryption(home: Path) -> None:
    """DuckDB leaves deleted rows in its free blocks: the erasure rewrites the file."""
    hub = LocalHub(home / "hub", ciphers=ciphers_in(home, encryption=False))
    build(hub)
    assert files_holding(home / "hub", who)  # plaintext: the subject is in the file
    hub.erase_subject("acme", Subject(WHO))
    assert files_holding(home / "hub", who) == {}
    assert sorted(p.name for p in (home / "hub").iterdir()) == ["acme.duckdb"]
    # The rewritten database takes writes as before (its keys and constraints kept).
    result = hub.upsert("acme", frame(history()[1]), now=T0 + timedelta(hours=2))
    assert result.unchanged == 4
    assert hub.checkpoints("acme", "") == {}


def test_sealed_values_are_rewritten_sealed(home: Path, sealed: Ciphers) -> None:
    hub = LocalHub(home / "hub", ciphers=sealed)
    build(hub)
    hub.erase_subject("acme", Subject(WHO))
    assert files_holding(home / "hub", "[erased]", "ask ", "carol") == {}
    assert "[erased]" in readable(hub)


def test_records_written_before_encryption_are_erased_too(home: Path) -> None:
    LocalHub(home / "hub", ciphers=ciphers_in(home, encryption=False)).upsert(
        "acme", frame(history()[0]), now=T0
    )
    hub = LocalHub(home / "hub", ciphers=ciphers_in(home))
    hub.upsert("acme", frame(history()[1]), now=T0 + timedelta(minutes=1))
    assert len(hub.erase_subject("acme", Subject(WHO)).records_changed) == 4
    assert who not in readable(hub).lower()
    assert files_holding(home / "hub", who) == {}
