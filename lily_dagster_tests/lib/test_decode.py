"""decode_frame and scan_envelopes: the bulk decoder gives what decode_envelopes (plus the two
tenant rules) gives, column for column, on the same envelopes in every layout; the same
reasons on invalid ones; snapshot files read lazily in bounded batches."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lily_dagster.lib.decode import decode_frame, fill_raw, scan_envelopes
from lily_dagster.lib.envelope import (
    EVENT_SCHEMA,
    REJECT_SCHEMA,
    DecodeResult,
    decode_envelopes,
    empty_rejects,
)
from lily_dagster.lib.inventory import InventoryError, _json_value, parquet_envelope
from lily_dagster.lib.reasons import Reason
from lily_dagster.lib.validation import all_rules, envelope_rules, split_valid

MAX = 1 << 20
CONN = "default/snowflake/1700000000"
WORDS = ["orders", "Kunde", "café", "naïve", "東京", "emoji 🚀", 'say "hi"', "back\\slash", "a/b"]


# --- envelopes ---------------------------------------------------------------------------------


def varied_envelopes(n: int, seed: int = 0, *, nulls: bool = True) -> list[dict[str, Any]]:
    """Valid envelopes of every kind: databases to columns, views, lineage processes,
    dashboards, deletes, patches, unicode, escapes, offsets and fractions in times, free-form
    attributes of every JSON type (the same type per key, as a Parquet column needs)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.choice(["Database", "Schema", "Table", "Column", "View", "Process", "Dash"])
        table = f"{CONN}/DB/SCH/T{i % 7}"
        choices: dict[str, tuple[str, str, dict[str, Any]]] = {
            "Database": (f"{CONN}/DB{i}", f"DB{i}", {}),
            "Schema": (f"{CONN}/DB/S{i}", f"S{i}", {"parent_qualified_name": f"{CONN}/DB"}),
            "Table": (f"{CONN}/DB/SCH/T{i}", f"T{i}", {"parent_qualified_name": f"{CONN}/DB/SCH"}),
            "Column": (f"{table}/C{i}", f"C{i}", {"parent_qualified_name": table}),
            "View": (f"{CONN}/DB/SCH/V{i}", f"V{i}", {}),
            "Process": (f"{CONN}/load-{i}", f"load {i}", {}),
            "Dash": (f"default/tableau/1/d{i}", f"Dashboard {rng.choice(WORDS)}", {}),
        }
        qn, name, attrs = choices[kind]
        asset: dict[str, Any] = {
            "type_name": "TableauDashboard" if kind == "Dash" else kind,
            "qualified_name": qn,
            "name": name,
        }
        if rng.random() < 0.7:
            attrs["description"] = rng.choice([*WORDS, "multi\nline\ttext", "ctrl \x01 \x7f"])
        if rng.random() < 0.4:
            attrs["owner_users"] = rng.sample(["jdoe", "asmith", "Zoë"], rng.randint(0, 2))
        if rng.random() < 0.3:
            attrs["owner_groups"] = rng.sample(["eng", "bi"], rng.randint(0, 2))
        if rng.random() < 0.3:
            attrs["certificate_status"] = rng.choice(["VERIFIED", "DRAFT"])
        if rng.random() < 0.2:
            attrs["glossary_terms"] = rng.sample(["Revenue", "Customer"], rng.randint(1, 2))
        if kind == "Column":
            attrs["data_type"] = rng.choice(["VARCHAR", "NUMBER(38,0)"])
            attrs["order"] = rng.randint(1, 40)
        if kind == "Table" and rng.random() < 0.8:
            attrs["row_count"] = rng.randint(0, 10**12)
            attrs["score"] = rng.choice([0.0, 0.5, 2.25, 1e-3, 12345.678, -3.5])
            attrs["is_temp"] = rng.random() < 0.5
            attrs["meta"] = {"zeta": rng.randint(0, 9), "alpha": rng.choice(WORDS)}
            attrs["tags"] = rng.sample(["a", "b", "c"], rng.randint(0, 3))
        if rng.random() < 0.1:
            attrs["label"] = rng.choice(WORDS)
        if nulls and rng.random() < 0.1:
            attrs["note"] = None  # a free-form null
        if rng.random() < 0.85:
            asset["attributes"] = attrs
        if rng.random() < 0.5:
            asset["classifications"] = rng.sample(["PII", "GDPR", "Finance"], rng.randint(0, 2))
        if kind == "Process":
            asset["inputs"] = [f"{CONN}/DB/SCH/T{j}" for j in range(rng.randint(1, 3))]
            asset["outputs"] = [f"{CONN}/DB/SCH/T{i + 100}"]
        stamp = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 10**7))
        event_time = rng.choice(
            [
                stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                stamp.astimezone(timezone(timedelta(hours=2))).isoformat(),
                stamp.strftime("%Y-%m-%d %H:%M:%S.123+00:00"),
                stamp.strftime("%Y-%m-%dt%H:%M:%S.1234567z"),
            ]
        )
        out.append(
            {
                "event_id": f"01J{i:07d}",
                "tenant": "acme",
                "source": rng.choice(["snowflake", "dbt", "slack"]),
                "op": rng.choice(["upsert", "upsert", "delete"]),
                "event_time": event_time,
                "asset": asset,
            }
        )
    return out


def with_patches(envelopes: list[dict[str, Any]], every: int = 9) -> list[dict[str, Any]]:
    out = copy.deepcopy(envelopes)
    for i, env in enumerate(out):
        if i % every == 0:
            env["asset"].setdefault("attributes", {})["lily_patch"] = {
                "set": {"description": "patched", "owner_users": ["jdoe"], "x": 1.5e-7},
                "add_classifications": ["PII"],
            }
    return out


def nested_frame(envelopes: Sequence[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(envelopes, infer_schema_length=None)


def flat_frame(envelopes: Sequence[dict[str, Any]], json_attributes: bool) -> pl.DataFrame:
    rows = []
    for env in envelopes:
        row = {k: v for k, v in env.items() if k != "asset"}
        for k, v in env["asset"].items():
            row[f"asset_{k}"] = json.dumps(v) if k == "attributes" and json_attributes else v
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def parquet_texts(frame: pl.DataFrame) -> list[str]:
    """What the row-by-row snapshot reader (inventory) makes of each Parquet row."""
    return [
        json.dumps(parquet_envelope(r), separators=(",", ":"), default=_json_value)
        for r in frame.iter_rows(named=True)
    ]


def reference(
    payloads: Sequence[bytes | str], origins: Sequence[str], tenant: str | None, limit: int = MAX
) -> DecodeResult:
    """decode_envelopes, then the two tenant rules, rejects in row order."""
    decoded = decode_envelopes(payloads, origins, tenant=tenant, max_event_bytes=limit)
    rules = [r for r in envelope_rules(tenant) if r.name in ("tenant_format", "tenant_binding")]
    checked = split_valid(decoded.events, rules, tenant)
    rejects = pl.concat([decoded.rejects, checked.rejects])
    order = {o: i for i, o in enumerate(origins)}
    rejects = rejects.sort(pl.col("origin").replace_strict(order, return_dtype=pl.Int64))
    return DecodeResult(checked.valid, rejects if rejects.height else empty_rejects())


def assert_same(got: DecodeResult, want: DecodeResult, lazy_raw: bool = False) -> None:
    """Row for row the reference's result; with `lazy_raw`, Parquet events decoded
    column-wise carry no raw (those the reference decodes, patches among them, do), and
    rejects still carry theirs."""
    assert got.events.schema == pl.Schema(EVENT_SCHEMA)
    assert got.rejects.schema == pl.Schema(REJECT_SCHEMA)
    assert got.events.height == want.events.height
    if lazy_raw:
        assert got.events.filter(pl.col("patch").is_not_null())["raw"].null_count() == 0
        if got.events.height:
            assert got.events.get_column("raw").null_count() > got.events.height // 2
        raws = got.events.get_column("raw")
        got = DecodeResult(
            got.events.with_columns(
                pl.when(raws.is_null()).then(want.events.get_column("raw")).otherwise(raws)
                .alias("raw")
            ),
            got.rejects,
        )  # fmt: skip
    for column in EVENT_SCHEMA:
        a, b = got.events.get_column(column), want.events.get_column(column)
        if not a.equals(b):
            diff = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
            raise AssertionError(f"{column} row {diff}: {a[diff]!r} != {b[diff]!r}")
    keys = ["origin", "event_id", "reason", "raw", "raw_bytes", "quarantine_id", "tenant"]
    assert got.rejects.select(keys).rows() == want.rejects.select(keys).rows()


def origins_of(n: int, prefix: str = "file:x.parquet#") -> list[str]:
    return [f"{prefix}{i + 1}" for i in range(n)]


# --- parity on valid envelopes ---------------------------------------------------------------


@pytest.mark.parametrize("lazy_raw", [False, True], ids=["raw", "lazy-raw"])
@pytest.mark.parametrize("layout", ["nested", "flat-struct", "flat-json"])
def test_parquet_layouts_decode_as_the_reference_does(layout: str, lazy_raw: bool) -> None:
    envelopes = with_patches(varied_envelopes(400, seed=1))
    frame = {
        "nested": lambda: nested_frame(envelopes),
        "flat-struct": lambda: flat_frame(envelopes, json_attributes=False),
        "flat-json": lambda: flat_frame(envelopes, json_attributes=True),
    }[layout]()
    got = decode_frame(frame, "acme", "file:x.parquet#1", MAX, lazy_raw=lazy_raw)
    want = reference(parquet_texts(frame), origins_of(frame.height), "acme")
    assert got.rejects.is_empty() and got.events.height == 400
    assert_same(got, want, lazy_raw)
    assert got.events.get_column("patch").drop_nulls().len() == 45  # patches came through


def test_json_lines_decode_as_the_reference_does_raw_byte_for_byte() -> None:
    envelopes = with_patches(varied_envelopes(400, seed=2))
    lines = [json.dumps(e, ensure_ascii=i % 2 == 0) for i, e in enumerate(envelopes)]
    frame = pl.DataFrame({"value": [line.encode() for line in lines]})
    got = decode_frame(frame, "acme", "file:x.jsonl#1", MAX)
    want = reference(lines, origins_of(400, "file:x.jsonl#"), "acme")
    assert_same(got, want)
    assert got.events.get_column("raw").to_list() == lines


def test_events_keep_free_form_attributes_as_sorted_compact_json() -> None:
    env = varied_envelopes(1)[0]
    env["asset"]["attributes"] = {
        "zeta": {"b": ["x", "ü"], "a": None},
        "alpha": True,
        "description": "d",
    }
    frame = pl.DataFrame([env])
    row = decode_frame(frame, "acme", "o#1", MAX).events.row(0, named=True)
    assert row["description"] == "d"
    assert row["attributes"] == '{"alpha":true,"zeta":{"a":null,"b":["x","\\u00fc"]}}'


def test_parquet_timestamps_with_a_zone_are_event_times() -> None:
    envelopes = varied_envelopes(50, seed=3)
    stamps = [datetime.fromisoformat(e["event_time"].upper()) for e in envelopes]
    frame = nested_frame(envelopes).with_columns(
        pl.Series("event_time", stamps, dtype=pl.Datetime("us", "UTC")).dt.convert_time_zone(
            "Europe/Paris"
        )
    )
    got = decode_frame(frame, "acme", "o#1", MAX)
    assert got.rejects.is_empty()
    assert_same(got, reference(parquet_texts(frame), origins_of(50, "o#"), "acme"))
    naive = frame.with_columns(pl.col("event_time").dt.replace_time_zone(None))
    refused = decode_frame(naive, "acme", "o#1", MAX)
    assert set(refused.rejects.get_column("reason")) == {Reason.BAD_EVENT_TIME}
    assert_same(refused, reference(parquet_texts(naive), origins_of(50, "o#"), "acme"))


def test_categorical_and_float32_columns_read_like_their_python_values() -> None:
    envelopes = varied_envelopes(60, seed=4, nulls=False)
    frame = nested_frame(envelopes).with_columns(
        pl.col("source").cast(pl.Categorical),
        pl.lit(0.1, dtype=pl.Float32).alias("weight"),
    )
    got = decode_frame(frame, "acme", "o#1", MAX)
    assert_same(got, reference(parquet_texts(frame), origins_of(60, "o#"), "acme"))


def test_large_frames_decode_in_parallel_slices_in_row_order() -> None:
    envelopes = varied_envelopes(300, seed=5)
    frame = pl.concat([nested_frame(envelopes)] * 400)  # 120k rows: sliced across threads
    frame = frame.with_columns(pl.format("e{}", pl.int_range(pl.len())).alias("event_id"))
    got = decode_frame(frame, "acme", "o#1", MAX)
    assert got.events.get_column("event_id").to_list() == frame.get_column("event_id").to_list()
    sample = frame.gather(list(range(0, 120_000, 997)))
    want = reference(parquet_texts(sample), origins_of(sample.height), "acme")
    picked = got.events.gather(list(range(0, 120_000, 997)))
    assert picked.drop("origin").equals(want.events.drop("origin"))


# --- invalid envelopes: the reference's reasons --------------------------------------------------


def mutated(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    env = copy.deepcopy(varied_envelopes(1, seed=7, nulls=False)[0])
    env["asset"]["attributes"] = {"description": "d", "owner_users": ["a"]}
    change(env)
    return env


def drop(*path: str) -> Callable[[dict[str, Any]], object]:
    def change(env: dict[str, Any]) -> None:
        node = env
        for p in path[:-1]:
            node = node[p]
        del node[path[-1]]

    return change


def put(value: Any, *path: str) -> Callable[[dict[str, Any]], object]:
    def change(env: dict[str, Any]) -> None:
        node = env
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value

    return change


INVALID: dict[str, tuple[Callable[[dict[str, Any]], object], Reason]] = {
    "no-event_id": (drop("event_id"), Reason.MISSING_FIELD),
    "no-tenant": (drop("tenant"), Reason.MISSING_FIELD),
    "no-op": (drop("op"), Reason.MISSING_FIELD),
    "no-event_time": (drop("event_time"), Reason.MISSING_FIELD),
    "no-asset": (drop("asset"), Reason.MISSING_FIELD),
    "no-type_name": (drop("asset", "type_name"), Reason.MISSING_FIELD),
    "no-qualified_name": (drop("asset", "qualified_name"), Reason.MISSING_FIELD),
    "no-name": (drop("asset", "name"), Reason.MISSING_FIELD),
    "event_id-int": (put(5, "event_id"), Reason.WRONG_TYPE),
    "source-list": (put(["x"], "source"), Reason.WRONG_TYPE),
    "name-int": (put(3, "asset", "name"), Reason.WRONG_TYPE),
    "classifications-string": (put("PII", "asset", "classifications"), Reason.WRONG_TYPE),
    "classifications-ints": (put([1, 2], "asset", "classifications"), Reason.WRONG_TYPE),
    "inputs-null-item": (put(["a", None], "asset", "inputs"), Reason.WRONG_TYPE),
    "attributes-list": (put(["x"], "asset", "attributes"), Reason.WRONG_TYPE),
    "attributes-int": (put(7, "asset", "attributes"), Reason.WRONG_TYPE),
    "attributes-tiny-float": (put(1e-9, "asset", "attributes"), Reason.WRONG_TYPE),
    "owner_users-string": (put("jdoe", "asset", "attributes", "owner_users"), Reason.WRONG_TYPE),
    "description-int": (put(7, "asset", "attributes", "description"), Reason.WRONG_TYPE),
    "glossary-ints": (put([1], "asset", "attributes", "glossary_terms"), Reason.WRONG_TYPE),
    "op-merge": (put("merge", "op"), Reason.UNKNOWN_OP),
    "op-upper": (put("UPSERT", "op"), Reason.UNKNOWN_OP),
    "op-int": (put(1, "op"), Reason.UNKNOWN_OP),
    "time-no-zone": (put("2026-11-23T10:00:00", "event_time"), Reason.BAD_EVENT_TIME),
    "time-date": (put("2026-11-23", "event_time"), Reason.BAD_EVENT_TIME),
    "time-month-13": (put("2026-13-01T00:00:00Z", "event_time"), Reason.BAD_EVENT_TIME),
    "time-feb-29": (put("2026-02-29T00:00:00Z", "event_time"), Reason.BAD_EVENT_TIME),
    "time-leap-second": (put("2026-11-23T10:00:60Z", "event_time"), Reason.BAD_EVENT_TIME),
    "time-hour-24": (put("2026-11-23T24:00:00Z", "event_time"), Reason.BAD_EVENT_TIME),
    "time-offset-24h": (put("2026-11-23T10:00:00+24:00", "event_time"), Reason.BAD_EVENT_TIME),
    "time-epoch": (put("1700000000", "event_time"), Reason.BAD_EVENT_TIME),
    "time-number": (put(1_700_000_000, "event_time"), Reason.BAD_EVENT_TIME),
    "time-word": (put("yesterday", "event_time"), Reason.BAD_EVENT_TIME),
    "tenant-format": (put("Acme Corp", "tenant"), Reason.BAD_TENANT),
    "tenant-other": (put("globex", "tenant"), Reason.TENANT_MISMATCH),
    "patch-bad": (
        put({"set": {"owner_users": "x"}}, "asset", "attributes", "lily_patch"),
        Reason.WRONG_TYPE,
    ),
    # the first failing field in declaration order names the reason
    "missing-before-op": (
        lambda e: (drop("tenant")(e), put("merge", "op")(e)),
        Reason.MISSING_FIELD,
    ),
    "op-before-time": (
        lambda e: (put("merge", "op")(e), put("x", "event_time")(e)),
        Reason.UNKNOWN_OP,
    ),
    "time-before-asset": (
        lambda e: (put("x", "event_time")(e), drop("asset", "name")(e)),
        Reason.BAD_EVENT_TIME,
    ),
    "decoding-before-tenant": (
        lambda e: (put("globex", "tenant")(e), put("m", "op")(e)),
        Reason.UNKNOWN_OP,
    ),
}


@pytest.mark.parametrize("lazy_raw", [False, True], ids=["raw", "lazy-raw"])
@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_parquet_rows_get_the_reference_reason(case: str, lazy_raw: bool) -> None:
    """A Parquet column has one type: the change is made to every row (a wrong type is a
    column's dtype), between rows of a valid frame."""
    change, reason = INVALID[case]
    frame = nested_frame([mutated(change) for _ in range(3)])
    got = decode_frame(frame, "acme", "o#1", MAX, lazy_raw=lazy_raw)
    want = reference(parquet_texts(frame), origins_of(3, "o#"), "acme")
    assert_same(got, want, lazy_raw)
    assert got.rejects.get_column("reason").to_list() == [reason] * 3
    assert got.rejects.get_column("detail").to_list() == want.rejects.get_column("detail").to_list()


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_json_lines_get_the_reference_reason(case: str) -> None:
    change, reason = INVALID[case]
    lines = [json.dumps(e) for e in [*varied_envelopes(2, seed=9), mutated(change)]]
    frame = pl.DataFrame({"value": lines})
    got = decode_frame(frame, "acme", "o#1", MAX)
    assert_same(got, reference(lines, origins_of(3, "o#"), "acme"))
    assert got.rejects.get_column("reason").to_list() == [reason]


@pytest.mark.parametrize(
    "payload",
    ["not json", "", "[]", '"a string"', "null", '{"event_id": "x",', "[1, 2]", "{} trailing"],
)
def test_malformed_json_lines_are_malformed_json(payload: str) -> None:
    lines = [json.dumps(varied_envelopes(1)[0]), payload]
    got = decode_frame(pl.DataFrame({"value": lines}), "acme", "o#1", MAX)
    assert_same(got, reference(lines, origins_of(2, "o#"), "acme"))
    assert got.rejects.get_column("reason").to_list() == [Reason.MALFORMED_JSON]


def test_non_utf8_payloads_are_malformed_json() -> None:
    good = json.dumps(varied_envelopes(1)[0]).encode()
    values = [good, good.replace(b"snowflake", b"snow\xffflake").replace(b"dbt", b"d\xffbt")]
    got = decode_frame(pl.DataFrame({"value": values}), "acme", "o#1", MAX)
    want = reference(values, origins_of(2, "o#"), "acme")
    assert_same(got, want)
    assert got.rejects.select("raw", "raw_bytes").rows() == [(None, values[1])]


# --- NaN and Infinity: not JSON; refused as the live decoder refuses them ----------------------

NON_JSON_TOKENS = ["NaN", "Infinity", "-Infinity"]


def with_token(env: dict[str, Any], token: str, i: int) -> str:
    """`env` as JSON text with `token` deep in its attributes (where varies by `i`)."""
    marker = "__TOKEN__"
    env = copy.deepcopy(env)
    attributes = env["asset"].setdefault("attributes", {})
    attributes[f"stats{i % 3}"] = [{"values": [1.5, marker]}, marker][i % 2]
    return json.dumps(env).replace(f'"{marker}"', token)


def test_nan_and_infinity_in_json_lines_are_malformed_json_as_the_reference_says() -> None:
    envelopes = varied_envelopes(30, seed=21)
    lines = [
        with_token(e, NON_JSON_TOKENS[i % 3], i) if i % 4 == 1 else json.dumps(e)
        for i, e in enumerate(envelopes)
    ]
    lines.append(json.dumps(envelopes[0]).replace('"acme"', '"acme", "note": "NaN Infinity"'))
    frame = pl.DataFrame({"value": [line.encode() for line in lines]})
    got = decode_frame(frame, "acme", "o#1", MAX)
    want = reference(lines, origins_of(len(lines), "o#"), "acme")
    assert_same(got, want)
    assert got.rejects.get_column("detail").to_list() == want.rejects.get_column("detail").to_list()
    bad = [i for i in range(len(envelopes)) if i % 4 == 1]
    assert got.rejects.get_column("origin").to_list() == [f"o#{i + 1}" for i in bad]
    assert set(got.rejects.get_column("reason")) == {Reason.MALFORMED_JSON}
    assert got.events.height == len(lines) - len(bad)  # NaN as text is only text


@pytest.mark.parametrize("lazy_raw", [False, True], ids=["raw", "lazy-raw"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=str)
def test_nan_and_infinity_in_parquet_are_malformed_json_as_the_reference_says(
    value: float, lazy_raw: bool
) -> None:
    """A float column holds NaN and infinities, which JSON cannot: the rows holding one
    (a float attribute, a list of floats in a struct) are refused as their JSON text is."""
    envelopes = varied_envelopes(40, seed=22, nulls=False)
    for i, env in enumerate(envelopes):
        attributes = env["asset"].setdefault("attributes", {})
        attributes["weight"] = value if i % 5 == 2 else 0.5 * i
        attributes["stats"] = {"values": [1.5, value]} if i % 7 == 3 else None
    frame = nested_frame(envelopes)
    got = decode_frame(frame, "acme", "o#1", MAX, lazy_raw=lazy_raw)
    want = reference(parquet_texts(frame), origins_of(40, "o#"), "acme")
    assert_same(got, want, lazy_raw)
    bad = sorted({i for i in range(40) if i % 5 == 2 or i % 7 == 3})
    assert got.rejects.get_column("origin").to_list() == [f"o#{i + 1}" for i in bad]
    assert set(got.rejects.get_column("reason")) == {Reason.MALFORMED_JSON}
    assert got.rejects.get_column("detail").to_list() == want.rejects.get_column("detail").to_list()


@pytest.mark.parametrize("token", NON_JSON_TOKENS)
def test_nan_and_infinity_in_json_text_attributes_are_malformed_json(token: str) -> None:
    envelopes = varied_envelopes(10, seed=23, nulls=False)
    frame = flat_frame(envelopes, json_attributes=True).with_columns(
        pl.when(pl.int_range(pl.len()) == 4)
        .then(pl.lit(f'{{"description": "d", "x": {{"y": [{token}]}}}}'))
        .otherwise(pl.col("asset_attributes"))
        .alias("asset_attributes")
    )
    got = decode_frame(frame, "acme", "o#1", MAX)
    assert_same(got, reference(parquet_texts(frame), origins_of(10, "o#"), "acme"))
    assert got.rejects.select("origin", "reason").rows() == [("o#5", Reason.MALFORMED_JSON)]


def test_wrong_column_types_reject_by_dtype() -> None:
    envelopes = varied_envelopes(20, seed=10)
    frame = nested_frame(envelopes).with_columns(
        pl.int_range(pl.len()).alias("event_id"), pl.lit(3).alias("source")
    )
    got = decode_frame(frame, "acme", "o#1", MAX)
    assert got.events.is_empty()
    assert set(got.rejects.get_column("reason")) == {Reason.WRONG_TYPE}
    assert got.rejects.get_column("event_id").null_count() == 20
    assert_same(got, reference(parquet_texts(frame), origins_of(20, "o#"), "acme"))


def test_nulls_in_parquet_columns_are_absent_fields() -> None:
    envelopes = varied_envelopes(10, seed=11)
    frame = nested_frame(envelopes).with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("tenant")).alias("tenant"),
        pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("asset")).alias("asset"),
    )
    got = decode_frame(frame, "acme", "o#1", MAX)
    assert got.rejects.get_column("reason").to_list() == [Reason.MISSING_FIELD] * 2
    assert_same(got, reference(parquet_texts(frame), origins_of(10, "o#"), "acme"))


def test_missing_columns_are_missing_fields() -> None:
    frame = nested_frame(varied_envelopes(5, seed=12)).drop("op")
    got = decode_frame(frame, "acme", "o#1", MAX)
    assert got.rejects.get_column("detail").to_list() == ["op: Field required"] * 5
    assert_same(got, reference(parquet_texts(frame), origins_of(5, "o#"), "acme"))


@pytest.mark.parametrize("lazy_raw", [False, True], ids=["raw", "lazy-raw"])
def test_oversized_rows_are_measured_on_their_json(lazy_raw: bool) -> None:
    envelopes = varied_envelopes(20, seed=13)
    envelopes[4]["asset"]["attributes"] = {"description": "é" * 3000}
    frame = nested_frame(envelopes)
    texts = parquet_texts(frame)
    limit = len(texts[4]) - 1
    got = decode_frame(frame, "acme", "o#1", limit, lazy_raw=lazy_raw)
    want = reference(texts, origins_of(20, "o#"), "acme", limit)
    assert_same(got, want, lazy_raw)
    assert Reason.OVERSIZED in got.rejects.get_column("reason").to_list()
    assert got.rejects.filter(pl.col("origin") == "o#5").get_column("raw")[0] == texts[4]


# --- tenant binding and origins ----------------------------------------------------------------


@pytest.mark.parametrize("lazy_raw", [False, True], ids=["raw", "lazy-raw"])
def test_tenant_binding_and_filing(lazy_raw: bool) -> None:
    envelopes = varied_envelopes(6, seed=14)
    envelopes[1]["tenant"] = "globex"
    envelopes[2]["tenant"] = "-bad"
    frame = nested_frame(envelopes)
    bound = decode_frame(frame, "acme", "o#1", MAX, lazy_raw=lazy_raw)
    assert bound.rejects.select("origin", "reason", "tenant").rows() == [
        ("o#2", Reason.TENANT_MISMATCH, "acme"),
        ("o#3", Reason.BAD_TENANT, "acme"),
    ]
    texts = parquet_texts(frame)
    assert bound.rejects.get_column("raw").to_list() == [texts[1], texts[2]]
    unbound = decode_frame(frame, None, "o#1", MAX)
    assert unbound.rejects.select("origin", "reason", "tenant").rows() == [
        ("o#3", Reason.BAD_TENANT, None)
    ]
    assert unbound.events.height == 5


def test_origins_from_a_prefix_or_a_series() -> None:
    frame = nested_frame(varied_envelopes(3, seed=15))
    numbered = decode_frame(frame, "acme", "file:a.parquet#41", MAX)
    assert numbered.events.get_column("origin").to_list() == [
        "file:a.parquet#41",
        "file:a.parquet#42",
        "file:a.parquet#43",
    ]
    given = decode_frame(frame, "acme", pl.Series(["x", "y", "z"]), MAX)
    assert given.events.get_column("origin").to_list() == ["x", "y", "z"]
    with pytest.raises(ValueError):
        decode_frame(frame, "acme", pl.Series(["x"]), MAX)


def test_empty_frames() -> None:
    frame = nested_frame(varied_envelopes(3)).clear()
    result = decode_frame(frame, "acme", "o#1", MAX)
    assert result.events.is_empty() and result.rejects.is_empty()
    assert result.events.schema == pl.Schema(EVENT_SCHEMA)


# --- scan_envelopes ---------------------------------------------------------------------------


def write_sources(root: Path, envelopes: list[dict[str, Any]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    nested_frame(envelopes[:40]).write_parquet(root / "a-nested.parquet", row_group_size=16)
    flat_frame(envelopes[40:70], json_attributes=True).write_parquet(root / "b-flat.parquet")
    lines = [json.dumps(e) for e in envelopes[70:]]
    lines.insert(3, "{broken")
    lines.insert(5, "")
    (root / "c-lines.jsonl").write_text("\n".join(lines) + "\r\n\n")
    (root / "_SUCCESS").write_text("")


def test_scan_reads_every_file_in_bounded_batches_with_origins(tmp_path: Path) -> None:
    envelopes = varied_envelopes(100, seed=16)
    write_sources(tmp_path / "snap", envelopes)
    batches = list(scan_envelopes(tmp_path / "snap", batch_rows=7))
    assert all(frame.height <= 7 for frame, _ in batches)
    decoded = [decode_frame(frame, "acme", origin, MAX) for frame, origin in batches]
    events = pl.concat([d.events for d in decoded])
    rejects = pl.concat([d.rejects for d in decoded])
    assert events.height == 100
    assert rejects.select("reason", "raw", "origin").rows() == [
        (Reason.MALFORMED_JSON, "{broken", f"file:{tmp_path / 'snap' / 'c-lines.jsonl'}#4")
    ]
    origins = events.get_column("origin").to_list()
    assert origins[0] == f"file:{tmp_path / 'snap' / 'a-nested.parquet'}#1"
    assert origins[39] == f"file:{tmp_path / 'snap' / 'a-nested.parquet'}#40"
    assert origins[40] == f"file:{tmp_path / 'snap' / 'b-flat.parquet'}#1"
    assert f"file:{tmp_path / 'snap' / 'c-lines.jsonl'}#7" in origins  # after the blank line
    assert events.get_column("event_id").to_list() == [e["event_id"] for e in envelopes]
    first_origins = [origin for _, origin in batches]
    assert first_origins[:2] == [
        f"file:{tmp_path / 'snap' / 'a-nested.parquet'}#1",
        f"file:{tmp_path / 'snap' / 'a-nested.parquet'}#8",
    ]


def test_scan_refuses_a_truncated_parquet_file_naming_it(tmp_path: Path) -> None:
    frame = nested_frame(varied_envelopes(50, seed=17))
    good = tmp_path / "good.parquet"
    frame.write_parquet(good)
    (tmp_path / "snap").mkdir()
    broken = tmp_path / "snap" / "part-1.parquet"
    broken.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(InventoryError, match=r"part-1\.parquet"):
        list(scan_envelopes(tmp_path / "snap", 10))
    broken.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")
    with pytest.raises(InventoryError, match=r"part-1\.parquet"):
        list(scan_envelopes(broken, 10))


def test_scan_refuses_a_corrupt_page_naming_the_file(tmp_path: Path) -> None:
    frame = nested_frame(varied_envelopes(200, seed=18))
    path = tmp_path / "part-2.parquet"
    frame.write_parquet(path, compression="uncompressed", row_group_size=50)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 400] = b"\xff" * 400  # a page in the middle, footer intact
    path.write_bytes(bytes(data))
    with pytest.raises(InventoryError, match=r"part-2\.parquet"):
        for frame_, origin in scan_envelopes(path, 50):
            decode_frame(frame_, "acme", origin, MAX)


def test_scan_refuses_parquet_without_the_envelope_columns(tmp_path: Path) -> None:
    frame = nested_frame(varied_envelopes(5, seed=19)).drop("tenant", "event_time")
    frame.write_parquet(tmp_path / "x.parquet")
    with pytest.raises(InventoryError, match=r"x\.parquet.*'tenant', 'event_time'"):
        list(scan_envelopes(tmp_path, 10))


def test_scan_of_nothing_is_an_inventory_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError):
        list(scan_envelopes(tmp_path, 10))
    with pytest.raises(ValueError):
        list(scan_envelopes(tmp_path, 0))


def test_scan_reads_an_s3_prefix(tmp_path: Path, s3_env: str) -> None:
    import boto3

    envelopes = varied_envelopes(100, seed=20)
    write_sources(tmp_path / "snap", envelopes)
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="snapshots")
    for f in sorted((tmp_path / "snap").iterdir()):
        s3.upload_file(str(f), "snapshots", f"acme/{f.name}")
    batches = list(scan_envelopes("s3://snapshots/acme/", batch_rows=25))
    assert all(frame.height <= 25 for frame, _ in batches)
    decoded = [decode_frame(frame, "acme", origin, MAX) for frame, origin in batches]
    events = pl.concat([d.events for d in decoded])
    assert events.get_column("event_id").to_list() == [e["event_id"] for e in envelopes]
    assert events.get_column("origin")[0] == "file:s3://snapshots/acme/a-nested.parquet#1"
    assert pl.concat([d.rejects for d in decoded]).get_column("origin").to_list() == [
        "file:s3://snapshots/acme/c-lines.jsonl#4"
    ]


def test_rejects_of_later_gates_get_the_raw_a_lazy_decode_left_out() -> None:
    """A bulk load decodes without raw; the rows a later gate refuses get the same raw and
    quarantine id as an eager decode gives them."""
    envelopes = varied_envelopes(50, seed=16, nulls=False)
    envelopes[7]["asset"]["name"] = ""  # refused by validation, not by decoding
    frame = nested_frame(envelopes)
    lazy = decode_frame(frame, "acme", "o#1", MAX, lazy_raw=True)
    eager = decode_frame(frame, "acme", "o#1", MAX)
    refused = split_valid(lazy.events, all_rules("acme"), "acme").rejects
    assert refused.get_column("origin").to_list() == ["o#8"]
    assert refused.get_column("raw").to_list() == [None]
    filled = fill_raw(refused, frame, "o#1", MAX)
    want = split_valid(eager.events, all_rules("acme"), "acme").rejects
    assert (
        filled.select("origin", "reason", "raw", "quarantine_id").rows()
        == want.select("origin", "reason", "raw", "quarantine_id").rows()
    )
    assert filled.get_column("raw")[0] == parquet_texts(frame)[7]
