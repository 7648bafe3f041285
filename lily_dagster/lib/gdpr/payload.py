"""A data subject erased from a raw payload: an envelope as it arrived (staging, inbox,
quarantine) or a dead-lettered change row.

JSON is walked rather than searched as text: an owner list loses the subject (a payload
sent on later would otherwise give the hub an owner `[erased]`), every other string has
it replaced, and a string that holds a JSON document itself (a change row's `attributes`
and `before`) is walked the same way. A payload that is not JSON has the subject replaced
in its text, or, when it is not UTF-8, in its bytes (ASCII case-insensitively).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import polars as pl

from lily_dagster.lib.gdpr.subject import ERASED, Subject

# Owner lists wherever they appear in a JSON document (envelope and Atlan spellings).
OWNER_KEYS = frozenset({"owner_users", "owner_groups", "ownerUsers", "ownerGroups"})


def scrub_payload(subject: Subject, data: bytes) -> bytes | None:
    """`data` with the subject erased; None when it does not mention the subject."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _scrub_bytes(subject, data)
    scrubbed = scrub_payload_text(subject, text)
    return None if scrubbed is None else scrubbed.encode("utf-8")


def scrub_payload_column(subject: Subject, column: pl.Series) -> pl.Series | None:
    """A Binary column of payloads with the subject erased; None when none mentions it."""
    values = column.to_list()
    scrubbed = [None if v is None else scrub_payload(subject, v) for v in values]
    if all(s is None for s in scrubbed):
        return None
    kept = [v if s is None else s for v, s in zip(values, scrubbed, strict=True)]
    return pl.Series(column.name, kept, dtype=pl.Binary)


def scrub_payload_text(subject: Subject, text: str | None) -> str | None:
    """`text` with the subject erased; None when it does not mention the subject."""
    return scrub_json_text(text, [subject])


def scrub_json_text(text: str | None, subjects: Sequence[Subject]) -> str | None:
    """A JSON document (or, failing that, plain text) with every one of `subjects` erased;
    None when it mentions none of them."""
    if text is None or not subjects:
        return None
    walker = _Walker(subjects)
    # A JSON string may spell a subject with escapes (\u00e9, \/): only then parse first.
    if not walker.mentioned(text) and "\\" not in text:
        return None
    try:
        document = json.loads(text)
        scrubbed = walker.value(document)
    except (ValueError, RecursionError):
        return walker.text(text) if walker.mentioned(text) else None
    if scrubbed == document:  # only a number spelt like it, or escapes that were not it
        return None
    return json.dumps(scrubbed, ensure_ascii=False, separators=(",", ":"))


class _Walker:
    """Walks a JSON value: owner lists lose the subjects, strings have them replaced, and a
    string holding a JSON document is walked as one."""

    def __init__(self, subjects: Sequence[Subject]) -> None:
        self.subjects = subjects
        self.pattern = re.compile("|".join(re.escape(s.value) for s in subjects), re.IGNORECASE)
        self.folded = {s.folded for s in subjects}

    def mentioned(self, text: str) -> bool:
        return self.pattern.search(text) is not None

    def text(self, text: str) -> str:
        return self.pattern.sub(ERASED, text)

    def value(self, value: Any, key: str | None = None) -> Any:
        if isinstance(value, str):
            return self._string(value)
        if isinstance(value, list):
            if key in OWNER_KEYS:
                value = [v for v in value if not _owner_in(v, self.folded)]
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {self.text(k): self.value(v, k) for k, v in value.items()}
        return value

    def _string(self, value: str) -> str:
        if value[:1] in ("{", "[") and self.mentioned(value):
            nested = scrub_json_text(value, self.subjects)  # a JSON document held as a string
            return value if nested is None else nested
        return self.text(value)


def _owner_in(value: Any, folded: set[str]) -> bool:
    return isinstance(value, str) and value.strip().casefold() in folded


def _scrub_bytes(subject: Subject, data: bytes) -> bytes | None:
    pattern = re.compile(re.escape(subject.value.encode("utf-8")), re.IGNORECASE)
    scrubbed = pattern.sub(ERASED.encode(), data)
    return None if scrubbed == data else scrubbed


__all__ = [
    "OWNER_KEYS",
    "scrub_json_text",
    "scrub_payload",
    "scrub_payload_column",
    "scrub_payload_text",
]
