"""decode_envelopes: every payload becomes either a typed event row or a reject with a reason."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest

from lily_dagster.lib.envelope import (
    EVENT_SCHEMA,
    REJECT_SCHEMA,
    decode_envelopes,
    frame_to_envelopes,
)
from lily_dagster.lib.reasons import Reason
from lily_dagster_tests.support import envelopes

MAX = 1_048_576


def envelope(**overrides: Any) -> dict[str, Any]:
    """The column ORDERS/EMAIL with every attribute kind; `overrides` replace top-level keys
    (any value, for the refusals)."""
    env = envelopes.envelope(
        f"{envelopes.ORDERS}/EMAIL",
        event_id="01J9Z3AAAA",
        type_name="Column",
        attributes={
            "description": "customer e-mail",
            "owner_users": ["jdoe"],
            "owner_groups": [],
            "certificate_status": "VERIFIED",
            "parent_qualified_name": envelopes.ORDERS,
            "data_type": "VARCHAR",
            "order": 3,
        },
        classifications=["PII"],
    )
    env.update(overrides)
    return env


def with_asset(**overrides: Any) -> dict[str, Any]:
    env = envelope()
    env["asset"].update(overrides)
    return env


def without(path: str) -> dict[str, Any]:
    env = envelope()
    *parents, leaf = path.split(".")
    node = env
    for p in parents:
        node = node[p]
    del node[leaf]
    return env


def decode_one(
    payload: bytes | str, max_event_bytes: int = MAX
) -> tuple[pl.DataFrame, pl.DataFrame]:
    result = decode_envelopes([payload], ["test:0"], tenant="acme", max_event_bytes=max_event_bytes)
    assert result.events.schema == pl.Schema(EVENT_SCHEMA)
    assert result.rejects.schema == pl.Schema(REJECT_SCHEMA)
    assert result.events.height + result.rejects.height == 1
    return result.events, result.rejects


def reject_of(payload: bytes | str, max_event_bytes: int = MAX) -> dict[str, Any]:
    events, rejects = decode_one(payload, max_event_bytes)
    assert events.is_empty(), f"expected a reject, got an event: {events.to_dicts()}"
    row = rejects.row(0, named=True)
    assert row["tenant"] == "acme"
    assert row["origin"] == "test:0"
    assert row["detail"]
    return row


# --- malformed_json ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "not json at all",
        "",
        '{"event_id": "x",',
        json.dumps([envelope()]),  # an array is not an envelope, even of envelopes
        "[]",
        '"a string"',
        "42",
        "null",
    ],
    ids=[
        "text",
        "empty",
        "truncated",
        "array-of-envelopes",
        "empty-array",
        "string",
        "number",
        "null",
    ],
)
def test_not_a_json_object_is_malformed_json(payload: str) -> None:
    row = reject_of(payload)
    assert row["reason"] == Reason.MALFORMED_JSON
    assert row["raw"] == payload


def test_non_utf8_bytes_are_malformed_json() -> None:
    good = json.dumps(envelope()).encode()
    payload = good.replace(b"EMAIL", b"EM\xffAIL", 1)
    row = reject_of(payload)
    assert row["reason"] == Reason.MALFORMED_JSON
    assert "UTF-8" in row["detail"]
    assert row["event_id"] is None
    # the raw payload is kept byte for byte (not as text with replacement characters)
    assert row["raw"] is None
    assert row["raw_bytes"] == payload


def test_latin1_bytes_are_malformed_json() -> None:
    payload = json.dumps(with_asset(name="caf\u00e9"), ensure_ascii=False).encode("latin-1")
    row = reject_of(payload)
    assert row["reason"] == Reason.MALFORMED_JSON
    assert (row["raw"], row["raw_bytes"]) == (None, payload)


def test_utf8_bytes_are_kept_as_text() -> None:
    payload = json.dumps(envelope(op="merge"), ensure_ascii=False).encode()
    row = reject_of(payload)
    assert (row["raw"], row["raw_bytes"]) == (payload.decode(), None)


def test_distinct_non_utf8_payloads_stay_distinct() -> None:
    # the same text once the bad bytes are replaced: distinct payloads all the same
    payloads: list[bytes | str] = [b'\xff\xfe{"a":1}', b'\xfe\xff{"a":1}', b'\xff\xff{"a":1}']
    result = decode_envelopes(payloads, ["a", "b", "c"], tenant="acme", max_event_bytes=MAX)
    assert result.rejects["raw_bytes"].to_list() == payloads
    assert result.rejects["quarantine_id"].n_unique() == 3


def test_text_with_a_lone_surrogate_keeps_it_as_its_json_escape() -> None:
    text = json.dumps(with_asset(name="x\ud800y"), ensure_ascii=False)  # a webhook's item
    row = reject_of(text)
    assert row["reason"] == Reason.MALFORMED_JSON
    assert row["raw"] == json.dumps(with_asset(name="x\ud800y"), ensure_ascii=False).replace(
        "\ud800", "\\ud800"
    )
    assert json.loads(row["raw"]) == with_asset(name="x\ud800y")


# --- NaN and Infinity: not JSON (RFC 8259), though Python and pydantic read them -------------


def _with_token(token: str, where: str) -> str:
    """A valid envelope's JSON text with `token` written at `where`."""
    marker = "__TOKEN__"
    env = envelope()
    if where == "attribute":
        env["asset"]["attributes"]["score"] = marker
    elif where == "nested":
        env["asset"]["attributes"]["stats"] = {"values": [1.5, marker], "n": 2}
    elif where == "top-level":
        env["extra"] = marker  # an unknown key, otherwise ignored
    elif where == "asset":
        env["asset"]["size"] = marker
    elif where == "patch":
        env["asset"]["attributes"]["lily_patch"] = {"set": {"score": marker}}
    elif where == "description":
        env["asset"]["attributes"]["description"] = marker
    return json.dumps(env).replace(f'"{marker}"', token)


_TOKEN_PATHS = {
    "attribute": "asset.attributes.score",
    "nested": "asset.attributes.stats.values.1",
    "top-level": "extra",
    "asset": "asset.size",
    "patch": "asset.attributes.lily_patch.set.score",
    "description": "asset.attributes.description",
}


@pytest.mark.parametrize("where", list(_TOKEN_PATHS))
@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_malformed_json(token: str, where: str) -> None:
    text = _with_token(token, where)
    assert json.loads(text)  # Python reads it; it is not JSON all the same
    for payload in (text, text.encode()):
        row = reject_of(payload)
        assert row["reason"] == Reason.MALFORMED_JSON
        assert row["detail"] == (
            f"{_TOKEN_PATHS[where]}: Invalid JSON: {token} is not a JSON value (RFC 8259)"
        )
        assert row["event_id"] == "01J9Z3AAAA"
        assert row["raw"] == text


def test_nan_and_infinity_in_a_large_batch_of_bytes_are_found_as_in_one_payload() -> None:
    """Landed batches are looked at in one pass: the same rejects as one payload at a time."""
    tokens = ["NaN", "Infinity", "-Infinity", '"NaN"', "1.5"]
    wheres = list(_TOKEN_PATHS)
    payloads: list[bytes | str] = [
        _with_token(tokens[i % 5], wheres[i % 6]).replace("01J9Z3AAAA", f"e{i}").encode()
        for i in range(150)
    ]
    origins = [f"o{i}" for i in range(150)]
    batch = decode_envelopes(payloads, origins, tenant="acme", max_event_bytes=MAX)
    one_by_one = [
        decode_envelopes([p], [o], tenant="acme", max_event_bytes=MAX)
        for p, o in zip(payloads, origins, strict=True)
    ]
    keys = ["origin", "event_id", "reason", "detail", "raw", "quarantine_id"]
    assert batch.rejects.select(keys).rows() == [
        row for r in one_by_one for row in r.rejects.select(keys).rows()
    ]
    assert batch.events.height == sum(r.events.height for r in one_by_one)
    malformed = batch.rejects.filter(pl.col("reason") == Reason.MALFORMED_JSON)
    assert malformed.height == 90  # three tokens of five


@pytest.mark.parametrize("inner", ["1", "NaN"])
def test_deeply_nested_payload_is_malformed_json_not_a_crash(inner: str) -> None:
    # deeper than Python's json reads (RecursionError, not a ValueError)
    row = reject_of('{"event_id": "deep", "a": ' + "[" * 5000 + inner + "]" * 5000 + "}")
    assert row["reason"] == Reason.MALFORMED_JSON


def test_nan_and_infinity_as_text_are_fine() -> None:
    env = with_asset(attributes={"description": "NaN and Infinity", "unit": "-Infinity"})
    events, _ = decode_one(json.dumps(env))
    assert events["description"].to_list() == ["NaN and Infinity"]
    assert json.loads(events["attributes"][0]) == {"unit": "-Infinity"}


def test_nan_beside_other_invalid_json_is_malformed_json() -> None:
    row = reject_of('{"event_id": "x", "a": NaN, "b": }')
    assert row["reason"] == Reason.MALFORMED_JSON


@pytest.mark.parametrize("where", ["attribute", "nested", "patch"])
def test_numbers_beyond_a_float_are_malformed_json_where_they_would_be_kept(where: str) -> None:
    """1e999 is JSON text, but reads as an infinity: the hub could not export it."""
    row = reject_of(_with_token("-1e999", where))
    assert row["reason"] == Reason.MALFORMED_JSON
    assert row["detail"] == (
        f"{_TOKEN_PATHS[where]}: Invalid JSON: a number is out of the range of a 64-bit float"
    )
    assert row["event_id"] == "01J9Z3AAAA"


def test_numbers_beyond_a_float_in_ignored_keys_are_ignored() -> None:
    events, _ = decode_one(_with_token("1e999", "top-level"))
    assert events.height == 1


def test_large_finite_numbers_are_kept() -> None:
    events, _ = decode_one(_with_token("1.7e308", "attribute"))
    assert json.loads(events["attributes"][0])["score"] == 1.7e308


# --- missing_field ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "event_id",
        "tenant",
        "source",
        "op",
        "event_time",
        "asset",
        "asset.type_name",
        "asset.qualified_name",
        "asset.name",
    ],
)
def test_missing_required_field(path: str) -> None:
    row = reject_of(json.dumps(without(path)))
    assert row["reason"] == Reason.MISSING_FIELD
    assert path in row["detail"]
    if path != "event_id":
        assert row["event_id"] == "01J9Z3AAAA"  # kept for the quarantine record
    else:
        assert row["event_id"] is None


@pytest.mark.parametrize(
    "path", ["asset.attributes", "asset.classifications", "asset.inputs", "asset.outputs"]
)
def test_optional_asset_fields_may_be_absent(path: str) -> None:
    env = envelope()
    env["asset"].pop(path.split(".")[1], None)
    events, _ = decode_one(json.dumps(env))
    assert events.height == 1
    row = events.row(0, named=True)
    if path == "asset.classifications":
        assert row["classifications"] == []
    if path == "asset.attributes":
        assert row["attributes"] == "{}"
        assert row["description"] is None
        assert row["owner_users"] is None


# --- wrong_type -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        envelope(event_id=5),
        envelope(tenant=None),
        envelope(source=["snowflake"]),
        envelope(asset="Column"),
        envelope(asset=[]),
        with_asset(type_name=1),
        with_asset(name=None),
        with_asset(classifications="PII"),
        with_asset(classifications=[1]),
        with_asset(inputs="a/b"),
        with_asset(attributes=["description"]),
        with_asset(attributes={"owner_users": "jdoe"}),
        with_asset(attributes={"owner_groups": [None]}),
        with_asset(attributes={"description": 7}),
    ],
    ids=[
        "event_id-int",
        "tenant-null",
        "source-list",
        "asset-string",
        "asset-list",
        "type_name-int",
        "name-null",
        "classifications-string",
        "classifications-int-items",
        "inputs-string",
        "attributes-list",
        "owner_users-string",
        "owner_groups-null-item",
        "description-int",
    ],
)
def test_wrong_type(env: dict[str, Any]) -> None:
    row = reject_of(json.dumps(env))
    assert row["reason"] == Reason.WRONG_TYPE


def test_wrong_type_event_id_is_not_reported_as_event_id() -> None:
    row = reject_of(json.dumps(envelope(event_id=5)))
    assert row["event_id"] is None
    assert "event_id" in row["detail"]


# --- unknown_op -------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["UPSERT", "Delete", "insert", "", 1, None])
def test_unknown_op(op: Any) -> None:
    row = reject_of(json.dumps(envelope(op=op)))
    assert row["reason"] == Reason.UNKNOWN_OP
    assert row["event_id"] == "01J9Z3AAAA"


# --- bad_event_time ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_time",
    [
        "2026-11-23T10:00:00",  # no time zone
        "2026-11-23T10:00:00.123456",  # no time zone, with fraction
        "2026-11-23",  # a date, not a time
        "2026-13-01T00:00:00Z",  # month 13
        "2026-11-31T00:00:00Z",  # 31 November
        "yesterday",
        "",
        1_700_000_000,  # a JSON number
        "1700000000",  # epoch seconds in a string are not RFC 3339
        "1700000000000",  # nor are epoch milliseconds
    ],
    ids=[
        "no-zone",
        "no-zone-fraction",
        "date-only",
        "month-13",
        "november-31",
        "word",
        "empty",
        "json-number",
        "epoch-seconds-string",
        "epoch-millis-string",
    ],
)
def test_bad_event_time(event_time: Any) -> None:
    events, rejects = decode_one(json.dumps(envelope(event_time=event_time)))
    assert events.is_empty(), (
        f"event_time {event_time!r} was accepted as {events['event_time'].to_list()}"
    )
    assert rejects.row(0, named=True)["reason"] == Reason.BAD_EVENT_TIME


@pytest.mark.parametrize(
    ("event_time", "expected"),
    [
        ("2026-11-23T10:00:00Z", datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
        ("2026-11-23T10:00:00z", datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
        ("2026-11-23T12:00:00+02:00", datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
        ("2026-11-23T05:30:00-04:30", datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
        ("2026-11-23T10:00:00.250Z", datetime(2026, 11, 23, 10, 0, 0, 250_000, tzinfo=UTC)),
    ],
)
def test_event_time_with_zone_is_normalised_to_utc(event_time: str, expected: datetime) -> None:
    events, _ = decode_one(json.dumps(envelope(event_time=event_time)))
    assert events.row(0, named=True)["event_time"] == expected


# --- oversized --------------------------------------------------------------------------------


def test_oversized_payload_is_rejected_with_its_event_id() -> None:
    payload = json.dumps(with_asset(attributes={"description": "x" * 2_000}))
    row = reject_of(payload, max_event_bytes=1_000)
    assert row["reason"] == Reason.OVERSIZED
    assert row["event_id"] == "01J9Z3AAAA"
    assert row["raw"] == payload
    assert str(len(payload.encode())) in row["detail"]


def test_size_limit_is_inclusive() -> None:
    payload = json.dumps(envelope())
    size = len(payload.encode())
    events, _ = decode_one(payload, max_event_bytes=size)
    assert events.height == 1
    assert reject_of(payload, max_event_bytes=size - 1)["reason"] == Reason.OVERSIZED


def test_size_is_measured_in_utf8_bytes_not_characters() -> None:
    payload = json.dumps(with_asset(attributes={"description": "\u00e9" * 400}), ensure_ascii=False)
    chars, size = len(payload), len(payload.encode("utf-8"))
    assert size > chars
    limit = (chars + size) // 2
    assert reject_of(payload, max_event_bytes=limit)["reason"] == Reason.OVERSIZED
    assert reject_of(payload.encode("utf-8"), max_event_bytes=limit)["reason"] == Reason.OVERSIZED


def test_oversized_beats_malformed() -> None:
    row = reject_of("x" * 100, max_event_bytes=50)
    assert row["reason"] == Reason.OVERSIZED


# --- valid envelopes --------------------------------------------------------------------------


def test_valid_envelope_typed_columns() -> None:
    payload = json.dumps(envelope())
    events, rejects = decode_one(payload.encode())
    assert rejects.is_empty()
    row = events.row(0, named=True)
    assert row == {
        "event_id": "01J9Z3AAAA",
        "tenant": "acme",
        "source": "snowflake",
        "op": "upsert",
        "event_time": datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
        "type_name": "Column",
        "qualified_name": "default/snowflake/1700000000/DB/SCH/ORDERS/EMAIL",
        "name": "EMAIL",
        "description": "customer e-mail",
        "owner_users": ["jdoe"],
        "owner_groups": [],
        "certificate_status": "VERIFIED",
        "parent_qualified_name": "default/snowflake/1700000000/DB/SCH/ORDERS",
        "glossary_terms": None,  # well-known since glossary-tags; absent here
        "attributes": row["attributes"],
        "classifications": ["PII"],
        "inputs": [],
        "outputs": [],
        "patch": None,  # a full upsert, not a partial change
        "raw": payload,
        "origin": "test:0",
    }
    # only the attributes that are not well-known stay in the JSON column
    assert json.loads(row["attributes"]) == {"data_type": "VARCHAR", "order": 3}


def test_free_form_attributes_keep_their_json_values() -> None:
    attrs = {
        "nested": {"b": [1, 2.5, None], "a": True},
        "unicode": "gr\u00fc\u00df",
        "nothing": None,
        "description": "d",
    }
    events, _ = decode_one(json.dumps(with_asset(attributes=attrs)))
    row = events.row(0, named=True)
    assert row["description"] == "d"
    assert json.loads(row["attributes"]) == {
        "nested": {"b": [1, 2.5, None], "a": True},
        "unicode": "gr\u00fc\u00df",
        "nothing": None,
    }


def test_delete_and_process_envelope() -> None:
    env = envelope(op="delete")
    env["asset"] = {
        "type_name": "Process",
        "qualified_name": "default/dbt/p1",
        "name": "p1",
        "inputs": ["default/snowflake/a", "default/snowflake/b"],
        "outputs": ["default/snowflake/c"],
    }
    events, _ = decode_one(json.dumps(env))
    row = events.row(0, named=True)
    assert row["op"] == "delete"
    assert row["inputs"] == ["default/snowflake/a", "default/snowflake/b"]
    assert row["outputs"] == ["default/snowflake/c"]
    assert row["classifications"] == []


def test_unknown_top_level_keys_are_ignored() -> None:
    events, _ = decode_one(json.dumps(envelope(schema_version=2, trace={"id": "t"})))
    assert events.height == 1


def test_mixed_batch_keeps_origins_and_order() -> None:
    payloads: list[bytes | str] = [
        json.dumps(envelope(event_id="a")),
        "garbage",
        json.dumps(envelope(event_id="b")).encode(),
        json.dumps(envelope(event_id="c", op="merge")),
        json.dumps(envelope(event_id="d")),
    ]
    origins = [f"kafka:t/0/{i}" for i in range(len(payloads))]
    result = decode_envelopes(payloads, origins, tenant="acme", max_event_bytes=MAX)
    assert result.events["event_id"].to_list() == ["a", "b", "d"]
    assert result.events["origin"].to_list() == ["kafka:t/0/0", "kafka:t/0/2", "kafka:t/0/4"]
    assert result.rejects.select("origin", "reason", "event_id").rows() == [
        ("kafka:t/0/1", Reason.MALFORMED_JSON, None),
        ("kafka:t/0/3", Reason.UNKNOWN_OP, "c"),
    ]


def test_origins_must_match_payloads() -> None:
    with pytest.raises(ValueError):
        decode_envelopes(["{}", "{}"], ["only-one"], tenant="acme", max_event_bytes=MAX)


def test_empty_input() -> None:
    result = decode_envelopes([], [], tenant="acme", max_event_bytes=MAX)
    assert result.events.is_empty()
    assert result.rejects.is_empty()
    assert result.events.schema == pl.Schema(EVENT_SCHEMA)


def test_rejects_filed_under_the_given_tenant_not_the_payloads() -> None:
    payload = json.dumps(envelope(tenant="globex", op="nope"))
    result = decode_envelopes([payload], ["o"], tenant="acme", max_event_bytes=MAX)
    assert result.rejects["tenant"].to_list() == ["acme"]


# --- quarantine_id ----------------------------------------------------------------------------


def test_same_raw_payload_gets_same_quarantine_id() -> None:
    bad_a = json.dumps(envelope(op="merge"))
    bad_b = json.dumps(envelope(op="merge", event_id="other"))
    first = decode_envelopes(
        [bad_a, bad_b, bad_a.encode()], ["o1", "o2", "o3"], tenant="acme", max_event_bytes=MAX
    )
    later = decode_envelopes([bad_a], ["elsewhere"], tenant="acme", max_event_bytes=MAX)
    ids = first.rejects["quarantine_id"].to_list()
    assert ids[0] == ids[2] == later.rejects["quarantine_id"][0]
    assert ids[0] != ids[1]
    assert all(isinstance(i, str) and i for i in ids)


def test_same_non_utf8_payload_gets_same_quarantine_id() -> None:
    payload = b'{"event_id": "\xfe\xff"}'
    first = reject_of(payload)
    second = reject_of(payload)
    assert first["quarantine_id"] == second["quarantine_id"]


# --- frame_to_envelopes -----------------------------------------------------------------------


def test_frame_to_envelopes_round_trip() -> None:
    process = envelope(event_id="p", op="delete", event_time="2026-11-23T10:00:00.123456Z")
    process["asset"] = {
        "type_name": "Process",
        "qualified_name": "default/dbt/p1",
        "name": "p1",
        "attributes": {"sql": "select 1", "owner_users": ["a", "b"]},
        "classifications": [],
        "inputs": ["default/snowflake/a"],
        "outputs": ["default/snowflake/b"],
    }
    originals = [envelope(), process]
    payloads: list[bytes | str] = [json.dumps(e) for e in originals]
    first = decode_envelopes(payloads, ["o1", "o2"], tenant="acme", max_event_bytes=MAX)
    assert first.rejects.is_empty()
    out = frame_to_envelopes(first.events)
    assert out == originals
    # and the envelopes it gives decode to the same events again
    again = decode_envelopes(
        [json.dumps(e) for e in out], ["o1", "o2"], tenant="acme", max_event_bytes=MAX
    )
    assert again.events.drop("raw").equals(first.events.drop("raw"))


def test_frame_to_envelopes_normalises_offsets_to_z() -> None:
    env = envelope(event_time="2026-11-23T12:00:00+02:00")
    events, _ = decode_one(json.dumps(env))
    expected = copy.deepcopy(env)
    expected["event_time"] = "2026-11-23T10:00:00Z"
    assert frame_to_envelopes(events) == [expected]
