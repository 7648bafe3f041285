"""What erasing a subject does to values: owners equal to it (any case) dropped, its
occurrences in text (any case) replaced, nothing else touched."""

from __future__ import annotations

import polars as pl
import pytest

from lily_dagster.lib.gdpr.subject import ERASED, Subject
from lily_dagster.settings import ConfigError

SUBJECT = Subject("Jane.Doe@Acme.com")


def test_owners_equal_to_the_subject_in_any_case_are_dropped() -> None:
    assert SUBJECT.scrub_owners(["jane.doe@acme.com", "JANE.DOE@ACME.COM", "bob"]) == ["bob"]
    assert SUBJECT.scrub_owners(["jane.doe@acme.com.au"]) == ["jane.doe@acme.com.au"]
    assert SUBJECT.scrub_owners(None) is None


def test_text_occurrences_in_any_case_become_erased() -> None:
    text = "ask JANE.DOE@acme.com or jane.doe@ACME.COM; regex chars . stay literal"
    assert SUBJECT.scrub_text(text) == f"ask {ERASED} or {ERASED}; regex chars . stay literal"
    assert Subject("a.b").scrub_text("axb a.b") == f"axb {ERASED}"  # '.' is no wildcard
    assert SUBJECT.in_text("x JANE.doe@acme.COM") and not SUBJECT.in_text("jane")


def test_frames_are_scrubbed_column_wise_and_mentions_found() -> None:
    frame = pl.DataFrame(
        {
            "qualified_name": ["a", "b", "c"],
            "description": ["by Jane.Doe@acme.com", "nobody", None],
            "owner_users": [["bob"], ["JANE.DOE@ACME.COM", "al"], None],
        }
    )
    mentioned = SUBJECT.mentioned(frame, ["description"], ["owner_users"])
    assert mentioned.to_list() == [True, True, False]
    scrubbed = SUBJECT.scrub_frame(frame, ["description"], ["owner_users"])
    assert scrubbed["description"].to_list() == [f"by {ERASED}", "nobody", None]
    assert scrubbed["owner_users"].to_list() == [["bob"], ["al"], None]
    assert not SUBJECT.mentioned(scrubbed, ["description"], ["owner_users"]).any()


@pytest.mark.parametrize("raw", ["", "   ", "a\nb"])
def test_an_empty_or_multi_line_subject_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="--subject"):
        Subject(raw)


def test_a_subject_never_prints_its_value() -> None:
    assert "jane" not in repr(SUBJECT).lower()
