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
from typing import Any

from lily_dagster.lib.gdpr.subject import ERASED, Subject

OWNER_KEYS = frozenset({"owner_users", "owner_groups"})


def scrub_payload(subject: Subject, data: bytes) -> bytes | None:
    """`data` with the subject erased; None when it does not mention the subject."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return _scrub_bytes(subject, data)
    scrubbed = scrub_payload_text(subject, text)
    return None if scrubbed is None else scrubbed.encode("utf-8")


def scrub_payload_text(subject: Subject, text: str | None) -> str | None:
    """`text` with the subject erased; None when it does not mention the subject."""
    if text is None:
        return None
    # A JSON string may spell the subject with escapes (\u00e9, \/): only then parse first.
    if not subject.in_text(text) and "\\" not in text:
        return None
    try:
        document = json.loads(text)
        scrubbed = _scrub(subject, document)
    except (ValueError, RecursionError):
        return subject.scrub_text(text) if subject.in_text(text) else None
    if scrubbed == document:  # only a number spelt like it, or escapes that were not it
        return None
    return json.dumps(scrubbed, ensure_ascii=False, separators=(",", ":"))


def _scrub(subject: Subject, value: Any, key: str | None = None) -> Any:
    if isinstance(value, str):
        return _scrub_string(subject, value)
    if isinstance(value, list):
        if key in OWNER_KEYS:
            value = [
                v for v in value if not (isinstance(v, str) and v.casefold() == subject.folded)
            ]
        return [_scrub(subject, v) for v in value]
    if isinstance(value, dict):
        return {subject.scrub_text(k): _scrub(subject, v, k) for k, v in value.items()}
    return value


def _scrub_string(subject: Subject, value: str) -> str:
    if value[:1] in ("{", "[") and subject.in_text(value):
        nested = scrub_payload_text(subject, value)  # a JSON document held as a string
        return value if nested is None else nested
    return subject.scrub_text(value) or ""


def _scrub_bytes(subject: Subject, data: bytes) -> bytes | None:
    pattern = re.compile(re.escape(subject.value.encode("utf-8")), re.IGNORECASE)
    scrubbed = pattern.sub(ERASED.encode(), data)
    return None if scrubbed == data else scrubbed


__all__ = ["OWNER_KEYS", "scrub_payload", "scrub_payload_text"]
