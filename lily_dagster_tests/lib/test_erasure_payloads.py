"""A data subject erased from raw payloads (lib/gdpr/payload.py): JSON keeps its shape,
owner lists lose the subject, text and bytes have it replaced."""

from __future__ import annotations

import json

from lily_dagster.lib.gdpr.payload import scrub_payload, scrub_payload_text
from lily_dagster.lib.gdpr.subject import Subject

SUBJECT = Subject("Jane.Doe@Acme.example")


def test_an_envelope_keeps_its_shape_and_loses_the_subject() -> None:
    envelope = {
        "event_id": "e1",
        "asset": {
            "name": "T",
            "attributes": {
                "description": "Owned by jane.doe@acme.example since 2020",
                "owner_users": ["JANE.DOE@ACME.EXAMPLE", "bob"],
                "owner_groups": ["jane.doe@acme.example-team"],
                "sample_values": ["x", "jane.doe@acme.example"],
                "order": 3,
            },
        },
    }
    scrubbed = json.loads(scrub_payload(SUBJECT, json.dumps(envelope).encode()) or b"")
    assert scrubbed["asset"]["attributes"] == {
        "description": "Owned by [erased] since 2020",
        "owner_users": ["bob"],  # dropped, not replaced: the hub gets no owner "[erased]"
        "owner_groups": ["[erased]-team"],  # not the subject itself: its text is replaced
        "sample_values": ["x", "[erased]"],
        "order": 3,
    }
    assert scrubbed["event_id"] == "e1"


def test_a_json_document_held_in_a_string_is_walked_too() -> None:
    change = {"seq": 4, "attributes": json.dumps({"owner_users": ["jane.doe@acme.example"]})}
    scrubbed = json.loads(scrub_payload_text(SUBJECT, json.dumps(change)) or "")
    assert json.loads(scrubbed["attributes"]) == {"owner_users": []}


def test_text_and_bytes_that_are_not_json() -> None:
    assert scrub_payload_text(SUBJECT, "not json: Jane.Doe@acme.example") == "not json: [erased]"
    assert scrub_payload(SUBJECT, b"\xff jane.DOE@acme.example \xfe") == b"\xff [erased] \xfe"


def test_a_payload_that_does_not_mention_the_subject_is_left_alone() -> None:
    assert scrub_payload(SUBJECT, b'{"description": "nothing"}') is None
    assert scrub_payload(SUBJECT, b'{"escaped": "caf\\u00e9"}') is None
    assert scrub_payload_text(Subject("123"), '{"order": 12345}') is None  # a number, no text
    assert scrub_payload_text(SUBJECT, None) is None
