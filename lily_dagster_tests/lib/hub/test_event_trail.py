"""LocalHub.event_trail (what `lily trace` reads of the hub): the change each event made,
kept on the record's row or moved to the change log by a later change, with the version it
became; an event older than the hub's content, or sent again, made none; a partial change
is stored under its event; the change an erasure makes names no event."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.hub.local import LocalHub
from lily_dagster_tests.lib.hub.conftest import patch_envelope
from lily_dagster_tests.support.envelopes import T0, ev
from lily_dagster_tests.support.frames import frame

T1, T2 = "db/sch/t1", "db/sch/t2"

pytestmark = pytest.mark.unit


def made(hub: LocalHub, event_id: str, *names: str) -> list[tuple[str, str, int]]:
    trail = hub.event_trail("acme", event_id, list(names))
    return [(c["qualified_name"], c["change"], c["version"]) for c in trail.changes]


def test_each_event_names_the_change_and_version_it_made(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path)
    hub.upsert("acme", frame([ev("e1", T1, 1), ev("e2", T2, 1)]), now=T0)
    assert made(hub, "e1", T1) == [(T1, "created", 1)]  # kept on the record's row
    hub.upsert("acme", frame([ev("e3", T1, 5, attributes={"description": "new"})]), now=T0)
    # e1's change moved to the change log when e3 changed the record: both found
    assert made(hub, "e1", T1) == [(T1, "created", 1)]
    assert made(hub, "e3", T1) == [(T1, "updated", 2)]
    (current,) = hub.event_trail("acme", "e1", [T1]).current
    assert (current["version"], current["event_id"]) == (2, "e3")
    seqs = [c["seq"] for c in hub.changes("acme", 0, 10).to_dicts()]
    trail_seqs = [hub.event_trail("acme", e, []).changes[0]["seq"] for e in ("e1", "e2", "e3")]
    assert sorted(trail_seqs) == sorted(seqs)


def test_stale_and_repeated_events_made_no_change(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path)
    hub.upsert("acme", frame([ev("e5", T1, 5)]), now=T0)
    hub.upsert("acme", frame([ev("e1", T1, 1, attributes={"description": "old"})]), now=T0)
    hub.upsert("acme", frame([ev("e5", T1, 5)]), now=T0 + timedelta(minutes=1))
    assert made(hub, "e1", T1) == []
    assert made(hub, "e5", T1) == [(T1, "created", 1)]
    assert hub.event_trail("acme", "nope", []).changes == []


def test_a_partial_change_is_found_under_its_event(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path)
    hub.upsert("acme", frame([ev("e1", T1, 1)]), now=T0)
    patch = patch_envelope("p1", T1, 2, {"set": {"description": "patched"}})
    hub.upsert("acme", frame([patch]), now=T0)
    trail = hub.event_trail("acme", "p1", [T1])
    assert trail.patched == [T1]
    assert [(c["change"], c["version"]) for c in trail.changes] == [("updated", 2)]


def test_an_erasure_change_names_no_event(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path)
    owned = {"description": "jane.doe@acme.com writes it"}
    hub.upsert("acme", frame([ev("e1", T1, 1, attributes=owned)]), now=T0)
    hub.erase_subject("acme", Subject("jane.doe@acme.com"))
    assert made(hub, "e1", T1) == [(T1, "created", 1)]
    assert hub.last_change("acme") == 2  # the erasure's change, made by no event


def test_a_tenant_without_a_hub_has_no_trail(tmp_path: Path) -> None:
    trail = LocalHub(tmp_path).event_trail("ghost", "e1", [T1])
    assert (trail.changes, trail.patched, trail.current) == ([], [], [])
