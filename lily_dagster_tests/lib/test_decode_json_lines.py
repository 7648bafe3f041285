"""JSON text decoded column-wise (JSON Lines, landed payloads, JSON attributes in Parquet)
gives what the row-by-row decoder gives on text DuckDB's JSON reader could read otherwise:
duplicate keys, escaped keys, null where absence is meant, NaN and trailing commas, odd
attributes, free-form attributes of every kind, every whitespace style; and the lines of a
file are cut the same whatever the chunks they arrive in."""

from __future__ import annotations

import copy
import json
from typing import Any

import polars as pl
import pytest

from lily_dagster.lib.decode import decode_frame, fill_raw, json_leaves, json_lines
from lily_dagster.lib.decode.lines import line_frames
from lily_dagster.lib.decode.schema import DECLARED_ATTRIBUTES
from lily_dagster.lib.reasons import Reason
from lily_dagster.lib.validation import all_rules, split_valid
from lily_dagster_tests.lib.test_decode import (
    MAX,
    assert_same,
    flat_frame,
    origins_of,
    parquet_texts,
    reference,
    varied_envelopes,
)

BASE = {
    "event_id": "01J0000001",
    "tenant": "acme",
    "source": "snowflake",
    "op": "upsert",
    "event_time": "2026-11-23T10:00:00Z",
    "asset": {
        "type_name": "Table",
        "qualified_name": "default/snowflake/1700000000/DB/SCH/T",
        "name": "T",
        "attributes": {"description": "d", "owner_users": ["a"], "row_count": 5},
    },
}
BASE_TEXT = json.dumps(BASE)
ASSET = BASE_TEXT.index('"asset": {') + len('"asset": {')
ATTRIBUTES = BASE_TEXT.index('"attributes": {') + len('"attributes": {')
NAME = f'"name": {json.dumps(BASE["asset"]["name"])}'


def inserted(at: int, text: str) -> str:
    """BASE's text with `text` put in at offset `at` (the start of an object's members)."""
    return BASE_TEXT[:at] + text + BASE_TEXT[at:]


def decoded_like_the_reference(lines: list[str]) -> Any:
    """The payloads decoded by decode_frame, checked row for row against the reference
    (events, rejects, reasons and details)."""
    lines = [BASE_TEXT, *lines, BASE_TEXT]
    got = decode_frame(pl.DataFrame({"value": lines}), "acme", "o#1", MAX)
    want = reference(lines, origins_of(len(lines), "o#"), "acme")
    assert_same(got, want)
    assert got.rejects.get_column("detail").to_list() == want.rejects.get_column("detail").to_list()
    return got


# Each: text DuckDB reads differently from Python, and what the reference makes of it.
TRICKY: dict[str, tuple[str, Reason | None]] = {
    "top-duplicate": (inserted(1, '"event_id": "first", '), None),
    "asset-duplicate": (inserted(ASSET, '"name": "first", '), None),
    "attributes-duplicate": (inserted(ATTRIBUTES, '"description": "first", '), None),
    "free-form-duplicate": (inserted(ATTRIBUTES, '"row_count": 4, '), None),
    "escaped-key": (inserted(len(BASE_TEXT) - 2, ', "na\\u006de": "other"'), None),
    "escaped-attributes-key": (
        inserted(len(BASE_TEXT) - 2, ', "attribute\\u0073": 7'),
        Reason.WRONG_TYPE,
    ),
    "escaped-free-form-key": (inserted(ATTRIBUTES, '"row_coun\\u0074": 4, '), None),
    "null-classifications": (inserted(ASSET, '"classifications": null, '), Reason.WRONG_TYPE),
    "null-attributes": (
        BASE_TEXT.replace('"attributes": {', '"attributes": null, "x": {'),
        Reason.WRONG_TYPE,
    ),
    "string-attributes": (
        BASE_TEXT.replace('"attributes": {', '"attributes": "s", "x": {'),
        Reason.WRONG_TYPE,
    ),
    "list-attributes": (
        BASE_TEXT.replace('"attributes": {', '"attributes": [1], "x": {'),
        Reason.WRONG_TYPE,
    ),
    "null-name": (BASE_TEXT.replace(NAME, '"name": null'), Reason.WRONG_TYPE),
    "trailing-comma": (BASE_TEXT[:-1] + ", }", Reason.MALFORMED_JSON),
    "trailing-comma-in-list": (inserted(ASSET, '"inputs": ["a",], '), Reason.MALFORMED_JSON),
    "nan-lowercase": (inserted(ATTRIBUTES, '"x": nan, '), Reason.MALFORMED_JSON),
    "inf": (inserted(ATTRIBUTES, '"x": -inf, '), Reason.MALFORMED_JSON),
    "infinity": (inserted(1, '"x": Infinity, '), Reason.MALFORMED_JSON),
    "huge-exponent-ignored": (inserted(1, '"x": 1e400, '), None),
    "huge-exponent-free-form": (inserted(ATTRIBUTES, '"x": 1e400, '), Reason.MALFORMED_JSON),
    "lone-surrogate": (BASE_TEXT.replace('"d"', '"\\ud800"'), Reason.MALFORMED_JSON),
    "bom": ("\ufeff" + BASE_TEXT, Reason.MALFORMED_JSON),
    "number-as-name": (BASE_TEXT.replace(NAME, '"name": 5'), Reason.WRONG_TYPE),
    "patch": (inserted(ATTRIBUTES, '"lily_patch": {"set": {"description": "p"}}, '), None),
    "null-patch": (inserted(ATTRIBUTES, '"lily_patch": null, '), None),
}


@pytest.mark.parametrize("case", list(TRICKY))
def test_text_duckdb_reads_otherwise_decodes_as_the_reference_does(case: str) -> None:
    text, reason = TRICKY[case]
    got = decoded_like_the_reference([text])
    assert got.rejects.get_column("reason").to_list() == ([reason] if reason else [])


def with_attributes(attributes: dict[str, Any]) -> str:
    env = copy.deepcopy(BASE)
    env["asset"]["attributes"] = attributes
    return json.dumps(env, ensure_ascii=False)


FREE_FORM = [
    {"zeta": 1, "alpha": True, "mid": None, "description": "d"},  # sorted here, a null kept
    {"b": [1, "x", None, False], "a": -0, "big": 123456789012345678901234567890},
    {"café": "naïve", "東京": ["é"], "quote'key": "it's", "owner_groups": []},
    {"nested": {"z": 1, "a": [{"y": 2}]}, "f": 1.5, "e": 1e-7},  # the reference's to read
    {"esc": 'say "hi"\n', "slash": "a/b"},
    {f"k{i:03d}": i for i in range(json_leaves.MAX_FREE_FORM_KEYS + 5)},  # beyond the cap
    {"description": None, "owner_users": None, "glossary_terms": ["t"], "certificate_status": None},
    {"Order": 1, "order": 2, "Description": "not the declared one", "ORDER": 3},
    {"": 1, " ": 2, "a.b": 3, "1": 4, "select": 5, "a b'c": 6},
    {"owner_users": ["a", 1]},
    {"owner_users": "a"},
    {"description": 5},
    {},
]


def test_free_form_attributes_of_every_kind_decode_as_the_reference_does() -> None:
    lines = [with_attributes(a) for a in FREE_FORM]
    got = decoded_like_the_reference(lines)
    assert got.rejects.get_column("reason").to_list() == [Reason.WRONG_TYPE] * 3
    first = got.events.filter(pl.col("origin") == "o#2").row(0, named=True)
    assert first["attributes"] == '{"alpha":true,"mid":null,"zeta":1}'
    third = got.events.filter(pl.col("origin") == "o#4").row(0, named=True)
    assert third["attributes"] == (
        '{"caf\\u00e9":"na\\u00efve","quote\'key":"it\'s","\\u6771\\u4eac":["\\u00e9"]}'
    )


@pytest.mark.parametrize(
    "dumps",
    [
        lambda e: json.dumps(e),
        lambda e: json.dumps(e, separators=(",", ":")),
        lambda e: json.dumps(e, ensure_ascii=False),
        lambda e: json.dumps(e, indent="\t").replace("\n", " "),
        lambda e: "  " + json.dumps(e) + " \t",
        lambda e: json.dumps(e).replace("/", "\\/"),
    ],
    ids=["default", "compact", "utf-8", "spaced-tabs", "padded", "escaped-slashes"],
)
def test_every_whitespace_and_escape_style_decodes_column_wise(
    dumps: Any, monkeypatch: Any
) -> None:
    """Plain envelopes however written are decoded column-wise (none left to the row-by-row
    reference) and as the reference decodes them."""
    envelopes = varied_envelopes(200, seed=32)
    lines = [dumps(e) for e in envelopes]
    left: list[int] = []
    real = json_lines.reference

    def spy(payloads: Any, rows: Any, origins: Any, limit: int) -> Any:
        left.extend(rows)
        return real(payloads, rows, origins, limit)

    monkeypatch.setattr(json_lines, "reference", spy)
    got = decode_frame(pl.DataFrame({"value": lines}), "acme", "o#1", MAX)
    monkeypatch.undo()
    assert_same(got, reference(lines, origins_of(200, "o#"), "acme"))
    plain = [i for i, e in enumerate(envelopes) if not _needs_reference(e)]
    assert not set(left) & set(plain)
    assert len(plain) > 100


def _needs_reference(env: dict[str, Any]) -> bool:
    """Envelopes whose free-form attributes the column-wise path leaves to the reference:
    nested objects, floats, escapes (control characters, quotes, backslashes)."""
    attributes = env["asset"].get("attributes", {})
    free = {k: v for k, v in attributes.items() if k not in DECLARED_ATTRIBUTES}
    text = json.dumps(free)
    return any(isinstance(v, (dict, float)) for v in free.values()) or "\\" in text


def test_json_text_attributes_in_parquet_decode_as_the_reference_does() -> None:
    envelopes = varied_envelopes(60, seed=33, nulls=False)
    frame = flat_frame(envelopes, json_attributes=True)
    texts = [with_attributes(a) for a in FREE_FORM]
    odd = [json.dumps(json.loads(t)["asset"]["attributes"]) for t in texts]
    odd += [
        '{"a": 1, "a": 2}',
        '{"description": "a", "description": "b"}',
        '{"x": nan}',
        '{"x": 1,}',
        "[1]",
        '"s"',
        '{"na\\u006de": 1}',
    ]
    column = frame.get_column("asset_attributes").to_list()
    column[: len(odd)] = odd
    frame = frame.with_columns(pl.Series("asset_attributes", column))
    got = decode_frame(frame, "acme", "o#1", MAX)
    assert_same(got, reference(parquet_texts(frame), origins_of(frame.height, "o#"), "acme"))


# --- JSON Lines cut into lines -----------------------------------------------------------------


def test_lines_are_cut_alike_whatever_the_chunks() -> None:
    lines = [b'{"a": "caf\xc3\xa9"}', b"", b"   ", b"\t\r", b"x\r", b"\xff\xfe bad", b"last"]
    data = b"\n".join(lines)  # no newline at the end
    want = [
        ("b#1", b'{"a": "caf\xc3\xa9"}'),
        ("b#5", b"x"),
        ("b#6", b"\xff\xfe bad"),
        ("b#7", b"last"),
    ]
    for size in (1, 2, 3, 7, len(data)):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        for rows in (1, 2, 10):
            frames = list(line_frames("b#", chunks, rows))
            assert all(f.height <= rows for f, _ in frames)
            assert [o for _, o in frames] == [f.get_column("origin")[0] for f, _ in frames]
            got = pl.concat([f for f, _ in frames])
            assert got.rows() == want, (size, rows)


def test_a_lazy_decode_leaves_out_the_lines_and_gives_them_to_rejects() -> None:
    """A bulk load decodes JSON Lines without keeping each line as `raw`; rejects of the
    decoder and of later gates still get their line, and the same quarantine id, as an
    eager decode gives them."""
    envelopes = varied_envelopes(50, seed=34, nulls=False)
    envelopes[7]["asset"]["name"] = ""  # refused by validation, not by decoding
    envelopes[9]["tenant"] = "globex"  # refused by the decoder's tenant binding
    lines = [json.dumps(e) for e in envelopes]
    frame = pl.DataFrame(
        {"origin": [f"file:x#{i + 1}" for i in range(50)], "value": [s.encode() for s in lines]}
    )
    lazy = decode_frame(frame, "acme", "file:x#1", MAX, lazy_raw=True)
    eager = decode_frame(frame, "acme", "file:x#1", MAX)
    raws = lazy.events.get_column("raw")  # kept by the rows the reference decoded
    assert lazy.events.height == 49 and raws.null_count() > 40
    assert raws.drop_nulls().is_in(eager.events.get_column("raw")).all()
    assert lazy.rejects.select("origin", "raw").rows() == [("file:x#10", lines[9])]
    assert lazy.events.drop("raw").equals(eager.events.drop("raw"))
    refused = split_valid(lazy.events, all_rules("acme"), "acme").rejects
    filled = fill_raw(refused, frame, "file:x#1", MAX)
    want = split_valid(eager.events, all_rules("acme"), "acme").rejects
    keys = ["origin", "reason", "raw", "quarantine_id"]
    assert filled.select(keys).rows() == want.select(keys).rows()
    assert filled.get_column("raw").to_list() == [lines[7]]
