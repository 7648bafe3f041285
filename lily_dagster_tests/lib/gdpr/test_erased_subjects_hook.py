"""The erased-subjects list and the `erased-subjects` pre-ingest hook: once a subject is
erased, events naming it arrive masked (owners dropped, text `[erased]`, raw payloads too),
found through salted hashes alone; the list never holds the subject; a tenant that never
erased anyone is not touched; the hook is on by default, first in the chain."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lily_dagster.lib.crypto import ciphers_of
from lily_dagster.lib.envelope import decode_envelopes
from lily_dagster.lib.gdpr.erased import GDPR_DIR, ErasedSubjects
from lily_dagster.lib.gdpr.mask import candidates, findable
from lily_dagster.lib.gdpr.subject import Subject
from lily_dagster.lib.hooks import HookContext, run_chain, tenant_chain
from lily_dagster.settings import LilyConfigFile, Settings
from lily_dagster_tests.support import envelopes

TABLE = "default/snowflake/1700000000/DB/SCH/ORDERS"
EMAIL = "Jane.Doe@Acme.com"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LILY_HOME", str(tmp_path / "lily"))
    monkeypatch.delenv("LILY_CONFIG", raising=False)
    monkeypatch.delenv("LILY_ENCRYPTION", raising=False)
    return tmp_path / "lily"


def erase(tenant: str, subject: str) -> None:
    settings = Settings.from_env()
    ErasedSubjects(settings.home / GDPR_DIR, ciphers_of(settings)).add(tenant, Subject(subject))


def event(name: str, tenant: str = "acme", **attributes: Any) -> dict[str, Any]:
    return envelopes.envelope(
        f"{TABLE}/{name}",
        tenant=tenant,
        type_name="Column",
        event_id=f"{tenant}-{name}",
        attributes=attributes,
    )


def frame(events: list[dict[str, Any]]) -> pl.DataFrame:
    decoded = decode_envelopes(
        [json.dumps(e) for e in events],
        [f"test/{i}" for i in range(len(events))],
        tenant=None,
        max_event_bytes=1 << 20,
    )
    assert decoded.rejects.is_empty()
    return decoded.events


def ingest(events: list[dict[str, Any]], tenant: str = "acme") -> pl.DataFrame:
    """The events through the tenant's default pre-ingest chain."""
    chain = tenant_chain(LilyConfigFile(), tenant, "pre_ingest")
    result = run_chain(frame(events), chain, HookContext(tenant=tenant))
    assert result.rejects.is_empty(), result.rejects.to_dicts()
    return result.events


def by_name(events: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in events.iter_rows(named=True)}


def test_the_default_chain_masks_first() -> None:
    chain = [h.name for h in tenant_chain(LilyConfigFile(), "acme", "pre_ingest")]
    assert chain[0] == "erased-subjects"


def test_an_erased_subject_arriving_later_is_masked_everywhere_in_the_event(home: Path) -> None:
    erase("acme", EMAIL)
    out = by_name(
        ingest(
            [
                event(
                    "EMAIL",
                    description=f"Ask {EMAIL.upper()} or ops@acme.com.",
                    owner_users=["jane.doe@acme.com", "ops"],
                    sample_values=["jane.doe@acme.com", "x@y.org"],
                ),
                event("AMOUNT", description="no one", owner_users=["ops"]),
            ]
        )
    )
    email = out["EMAIL"]
    assert email["description"] == "Ask [erased] or ops@acme.com."
    assert email["owner_users"] == ["ops"]
    assert json.loads(email["attributes"])["sample_values"] == ["[erased]", "x@y.org"]
    raw = json.loads(email["raw"])
    assert raw["asset"]["attributes"]["owner_users"] == ["ops"]  # dropped, not "[erased]"
    assert "jane.doe" not in email["raw"].lower()
    assert out["AMOUNT"]["description"] == "no one"
    assert out["AMOUNT"]["owner_users"] == ["ops"]


def test_a_user_id_is_found_as_a_word_an_owner_and_an_e_mail_local_part(home: Path) -> None:
    erase("acme", "jdoe")
    out = by_name(
        ingest(
            [
                event("A", description="Owned by JDoe."),
                event("B", owner_users=[" JDOE "], owner_groups=["jdoe"]),
                event("C", description="write to jdoe@acme.com"),
                event("D", description="jdoes and jdoe2 are other people"),
            ]
        )
    )
    assert out["A"]["description"] == "Owned by [erased]."
    assert out["B"]["owner_users"] == [] and out["B"]["owner_groups"] == []
    assert out["C"]["description"] == "write to [erased]@acme.com"
    assert out["D"]["description"] == "jdoes and jdoe2 are other people"


def test_other_tenants_and_other_subjects_are_untouched(home: Path) -> None:
    erase("acme", EMAIL)
    globex = ingest([event("E", tenant="globex", description=f"mail {EMAIL}")], "globex")
    assert globex["description"].to_list() == [f"mail {EMAIL}"]
    acme = ingest([event("F", description="mail john@acme.com")])
    assert acme["description"].to_list() == ["mail john@acme.com"]


def test_a_tenant_that_never_erased_anyone_gets_its_frame_back_untouched(home: Path) -> None:
    chain = tenant_chain(LilyConfigFile(), "acme", "pre_ingest")[:1]
    events = frame([event(f"C{i}", description=f"{EMAIL} {i}") for i in range(2000)])
    big = pl.concat([events] * 150)  # 300k events: the bulk path's rate
    hook = chain[0].hook
    started = time.perf_counter()
    out = hook.apply(big, None, HookContext(tenant="acme"))
    assert out is big
    assert time.perf_counter() - started < 0.05  # one file lookup, nothing per event


def test_the_list_holds_neither_the_subject_nor_a_hash_readable_without_the_key(
    home: Path,
) -> None:
    erase("acme", EMAIL)
    erase("acme", EMAIL.upper())  # the same subject: one entry
    data = (home / GDPR_DIR / "acme.json").read_bytes()
    assert b"jane" not in data.lower() and b"salt" not in data  # sealed as a whole
    settings = Settings.from_env()
    erased = ErasedSubjects(home / GDPR_DIR, ciphers_of(settings)).load("acme")
    assert erased is not None and len(erased.hashes) == 1
    assert erased.holds(EMAIL.casefold()) and not erased.holds("john@acme.com")
    # Another tenant's list has its own salt: the same subject hashes differently.
    erase("globex", EMAIL)
    other = ErasedSubjects(home / GDPR_DIR, ciphers_of(settings)).load("globex")
    assert other is not None and other.hashes.isdisjoint(erased.hashes)


def test_a_subject_of_several_words_cannot_be_found_and_says_so() -> None:
    assert findable(Subject("jane.doe@acme.com")) and findable(Subject("JDoe"))
    assert not findable(Subject("Jane Doe")) and not findable(Subject("o'brien"))
    assert {"jane.doe@acme.com", "jane.doe", "acme.com", "doe"} <= candidates("Jane.Doe@Acme.com")


def test_masking_a_large_batch_stays_cheap(home: Path) -> None:
    """The slow path (the tenant erased someone): a 50k-event batch with raw payloads,
    one event in a thousand naming the subject."""
    erase("acme", EMAIL)
    rows = [
        event(f"C{i}", description=f"column {i} of orders", owner_users=[f"user{i % 50}"])
        for i in range(1000)
    ]
    rows[7]["asset"]["attributes"]["description"] = f"ask {EMAIL}"
    big = pl.concat([frame(rows)] * 50)
    hook = tenant_chain(LilyConfigFile(), "acme", "pre_ingest")[0].hook
    started = time.perf_counter()
    out = hook.apply(big, None, HookContext(tenant="acme"))
    elapsed = time.perf_counter() - started
    assert isinstance(out, pl.DataFrame)
    assert out.height == big.height
    assert out.filter(pl.col("description").str.contains("[erased]", literal=True)).height == 50
    assert elapsed < 2.0, f"{elapsed:.2f} s for 50k events"
