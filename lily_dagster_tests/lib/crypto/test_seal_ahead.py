"""Sealing ahead (a bulk load seals batch i+1 while batch i is written): a value sealed
ahead is reused only for the same record with the same plaintext; anything else is sealed
afresh, so what is stored always opens to what was written."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from lily_dagster.lib.crypto import TenantCipher

KEY = bytes(range(32))
CONTENT = ["description", "owner_users"]


def cipher(sealing: bool = True) -> TenantCipher:
    return TenantCipher("acme", KEY, sealing=sealing)


def rows(names: list[str], texts: list[str | None], owners: list[list[str] | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {"qualified_name": names, "description": texts, "owner_users": owners},
        schema={
            "qualified_name": pl.String,
            "description": pl.String,
            "owner_users": pl.List(pl.String),
        },
    )


BATCH = rows(
    ["db/a", "db/b", "db/c", "db/d"],
    ["orders", None, "", "customers"],
    [["jane"], [], None, ["ann", "bob"]],
)


def test_a_batch_written_as_sealed_ahead_reuses_every_sealed_value() -> None:
    ahead = cipher().seal_ahead(BATCH, CONTENT)
    assert ahead is not None
    stored = cipher().seal_frame(BATCH, CONTENT, ahead)
    assert stored["description"].equals(ahead["description__sealed"].alias("description"))
    assert stored["owner_users"].equals(ahead["owner_users__sealed"].alias("owner_users"))
    assert cipher().open_frame(stored, CONTENT).equals(BATCH)


def test_a_changed_value_is_sealed_afresh_not_taken_from_ahead() -> None:
    ahead = cipher().seal_ahead(BATCH, CONTENT)
    merged = BATCH.with_columns(
        pl.when(pl.col("qualified_name") == "db/d")
        .then(pl.lit("merged text"))
        .otherwise(pl.col("description"))
        .alias("description")
    )
    stored = cipher().seal_frame(merged, CONTENT, ahead)
    assert cipher().open_frame(stored, CONTENT).equals(merged)
    assert stored["description"][0] == ahead["description__sealed"][0]  # same: reused
    assert stored["description"][3] != ahead["description__sealed"][3]


def test_rows_in_another_order_or_unknown_to_ahead_are_matched_by_name() -> None:
    ahead = cipher().seal_ahead(BATCH, CONTENT)
    other = pl.concat([BATCH.reverse(), rows(["db/new"], ["fresh"], [["zed"]])])
    stored = cipher().seal_frame(other, CONTENT, ahead)
    assert cipher().open_frame(stored, CONTENT).equals(other)
    by_name = dict(zip(stored["qualified_name"], stored["description"], strict=True))
    assert by_name["db/a"] == ahead["description__sealed"][0]


def test_a_name_twice_in_ahead_never_gives_the_other_rows_value() -> None:
    twice = rows(["db/a", "db/a"], ["first", "second"], [None, None])
    ahead = cipher().seal_ahead(twice, CONTENT)
    stored = cipher().seal_frame(rows(["db/a"], ["first"], [None]), CONTENT, ahead)
    assert cipher().open_frame(stored, CONTENT)["description"].to_list() == ["first"]


def test_nothing_is_sealed_ahead_with_encryption_off() -> None:
    assert cipher(sealing=False).seal_ahead(BATCH, CONTENT) is None
    assert cipher().seal_ahead(BATCH.select("qualified_name"), CONTENT) is None


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.one_of(st.none(), st.text(max_size=8)),
            st.one_of(st.none(), st.lists(st.text(max_size=5), max_size=3)),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_what_is_stored_always_opens_to_what_was_written(
    data: list[tuple[str, str | None, list[str] | None, bool]],
) -> None:
    written = rows([d[0] for d in data], [d[1] for d in data], [d[2] for d in data])
    # The batch sealed ahead differs from the written rows where the flag says so.
    before = written.with_columns(
        pl.Series("description", [t if keep else f"{t}!" for _, t, _, keep in data], pl.String)
    )
    ahead = cipher().seal_ahead(before, CONTENT)
    stored = cipher().seal_frame(written, CONTENT, ahead)
    assert cipher().open_frame(stored, CONTENT).equals(written)
