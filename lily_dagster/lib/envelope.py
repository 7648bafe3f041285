"""The metadata event envelope, version 1 (CONTRACT.md §1): pydantic models and polars schema.

Events travel through the pipeline as flat polars frames (`EVENT_SCHEMA`): the well-known
attributes are typed columns so hooks can work on them vectorised; every other attribute
stays in `attributes` as a JSON object string.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from lily_dagster.lib.reasons import Reason
from lily_dagster.lib.strict_json import (
    NotJSONError,
    finite_loads,
    may_hold_constant,
    non_finite_path,
)
from lily_dagster.lib.strict_json import loads as strict_loads

WELL_KNOWN_ATTRIBUTES = (
    "description",
    "owner_users",
    "owner_groups",
    "certificate_status",
    "parent_qualified_name",
    "glossary_terms",
)


class AssetPatch(BaseModel):
    """A partial change to an existing record (a Slack command, an Atlan tag event): only
    what it names changes; without it an upsert replaces the record's whole content."""

    model_config = ConfigDict(extra="forbid", strict=True)

    set: dict[str, Any] = Field(default_factory=dict)  # attribute -> new value
    add_classifications: list[str] = Field(default_factory=list)
    remove_classifications: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _well_known_types(self) -> AssetPatch:
        for key, value in self.set.items():
            if key in ("owner_users", "owner_groups", "glossary_terms"):
                if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                    raise ValueError(f"set.{key} must be a list of strings")
            elif key in WELL_KNOWN_ATTRIBUTES and not isinstance(value, str):
                raise ValueError(f"set.{key} must be a string")
        return self


class AssetAttributes(BaseModel):
    """Free-form attributes; the well-known keys are typed, the rest kept as given."""

    model_config = ConfigDict(extra="allow", strict=True)

    description: str | None = None
    owner_users: list[str] | None = None
    owner_groups: list[str] | None = None
    certificate_status: str | None = None
    parent_qualified_name: str | None = None
    glossary_terms: list[str] | None = None  # Atlan glossary term names ("meanings")
    lily_patch: AssetPatch | None = None


class Asset(BaseModel):
    model_config = ConfigDict(strict=True)

    type_name: str
    qualified_name: str
    name: str
    attributes: AssetAttributes = Field(default_factory=AssetAttributes)
    classifications: list[str] = Field(default_factory=list)
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)


_SURROGATE = re.compile("[\ud800-\udfff]")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> datetime:
    # pydantic would also read numbers and numeric strings as Unix times; the contract
    # wants RFC 3339 text with a zone, so anything else is refused.
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("expected RFC 3339 date-time with a time zone, e.g. 2026-11-23T10:00:00Z")
    return datetime.fromisoformat(value.upper())


class Envelope(BaseModel):
    """One metadata-change event. Unknown top-level keys are ignored (forward compatible)."""

    model_config = ConfigDict(strict=True)

    event_id: str
    tenant: str
    source: str
    op: Literal["upsert", "delete"]
    event_time: Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
    asset: Asset


EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "tenant": pl.String(),
    "source": pl.String(),
    "op": pl.String(),
    "event_time": pl.Datetime("us", "UTC"),
    "type_name": pl.String(),
    "qualified_name": pl.String(),
    "name": pl.String(),
    "description": pl.String(),
    "owner_users": pl.List(pl.String()),
    "owner_groups": pl.List(pl.String()),
    "certificate_status": pl.String(),
    "parent_qualified_name": pl.String(),
    "glossary_terms": pl.List(pl.String()),
    "attributes": pl.String(),  # JSON object of the attributes that are not well-known
    "classifications": pl.List(pl.String()),
    "inputs": pl.List(pl.String()),
    "outputs": pl.List(pl.String()),
    "patch": pl.String(),  # AssetPatch as JSON for partial changes, else null
    "raw": pl.String(),  # the payload as received, kept for quarantine at any later stage
    "origin": pl.String(),  # where it came from, e.g. kafka:topic/partition/offset
}

REJECT_SCHEMA: dict[str, pl.DataType] = {
    "quarantine_id": pl.String(),
    "tenant": pl.String(),
    "event_id": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
    "raw": pl.String(),  # the payload as received when it is UTF-8 text, else null
    "raw_bytes": pl.Binary(),  # the exact bytes of a payload that is not UTF-8, else null
    "origin": pl.String(),
    "quarantined_at": pl.Datetime("us", "UTC"),
}


@functools.cache
def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=EVENT_SCHEMA)


@functools.cache
def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


def quarantine_id(raw: str | bytes) -> str:
    """Identical payloads are one quarantined event, however often they are replayed: a
    hash of the payload's bytes (of text, its UTF-8), so payloads that differ in bytes that
    are not UTF-8 stay apart."""
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:32]


def to_rejects(frame: pl.DataFrame, tenant: str | None) -> pl.DataFrame:
    """Rejects frame (REJECT_SCHEMA) from a frame of event_id, reason, detail, raw, origin
    and optionally raw_bytes (a payload that is not UTF-8: raw is then null)."""
    # A raw left out by a lazy bulk decode is filled in, and its id made, by fill_raw.
    text_id = pl.col("raw").map_elements(quarantine_id, return_dtype=pl.String, skip_nulls=True)
    raw_bytes: pl.Expr = pl.lit(None, dtype=pl.Binary)
    quarantine = text_id
    if "raw_bytes" in frame.columns:
        raw_bytes = pl.col("raw_bytes").cast(pl.Binary)
        if frame.get_column("raw_bytes").null_count() < frame.height:
            bytes_id = raw_bytes.map_elements(
                quarantine_id, return_dtype=pl.String, skip_nulls=True
            )
            quarantine = pl.coalesce(bytes_id, text_id)
    return frame.select(
        quarantine.alias("quarantine_id"),
        pl.lit(tenant, dtype=pl.String).alias("tenant"),
        pl.col("event_id").cast(pl.String),
        pl.col("reason").cast(pl.String),
        pl.col("detail").cast(pl.String),
        pl.col("raw").cast(pl.String),
        raw_bytes.alias("raw_bytes"),
        pl.col("origin").cast(pl.String),
        pl.lit(datetime.now(UTC)).cast(pl.Datetime("us", "UTC")).alias("quarantined_at"),
    )


def make_rejects(
    tenant: str | None,
    reasons: Sequence[tuple[str | None, Reason, str, str | bytes, str]],
) -> pl.DataFrame:
    """Rejects frame from (event_id, reason, detail, raw, origin) tuples; a raw given as
    bytes is kept as text when it is UTF-8, else byte for byte (raw_bytes)."""
    texts: list[str | None] = []
    binaries: list[bytes | None] = []
    for r in reasons:
        text, data = raw_columns(r[3])
        texts.append(text)
        binaries.append(data)
    frame = pl.DataFrame(
        {
            "event_id": [r[0] for r in reasons],
            "reason": [r[1].value for r in reasons],
            "detail": [r[2] for r in reasons],
            "raw": texts,
            "raw_bytes": binaries,
            "origin": [r[4] for r in reasons],
        },
        schema={
            "event_id": pl.String(),
            "reason": pl.String(),
            "detail": pl.String(),
            "raw": pl.String(),
            "raw_bytes": pl.Binary(),
            "origin": pl.String(),
        },
    )
    return to_rejects(frame, tenant)


def raw_columns(raw: str | bytes) -> tuple[str | None, bytes | None]:
    """(raw, raw_bytes) of a payload: its text when it is UTF-8, else its exact bytes."""
    if isinstance(raw, str):
        return raw, None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, raw


def _classify_error(exc: ValidationError) -> tuple[Reason, str]:
    first = exc.errors(include_url=False)[0]
    loc = tuple(first["loc"])
    where = ".".join(str(p) for p in loc) or "body"
    kind = first["type"]
    detail = f"{where}: {first['msg']}"
    if kind == "json_invalid" or (not loc and kind in ("model_type", "model_attributes_type")):
        return Reason.MALFORMED_JSON, detail
    if kind == "missing":
        return Reason.MISSING_FIELD, detail
    if loc == ("op",):
        return Reason.UNKNOWN_OP, detail
    if loc == ("event_time",):
        return Reason.BAD_EVENT_TIME, detail
    return Reason.WRONG_TYPE, detail


def event_id_of(text: str | bytes) -> str | None:
    """Best-effort event_id of an invalid payload, for the quarantine record (None for a
    payload that is not a JSON object naming a string one, or not UTF-8)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python reads
        return None
    if isinstance(value, dict) and isinstance(value.get("event_id"), str):
        return value["event_id"]
    return None


@dataclass(frozen=True)
class DecodeResult:
    events: pl.DataFrame  # EVENT_SCHEMA
    rejects: pl.DataFrame  # REJECT_SCHEMA


def envelope_row(env: Envelope) -> dict[str, Any]:
    """The event row of an envelope; NotJSONError for a number that read as an infinity
    (beyond a 64-bit float), which JSON cannot carry on to the hub."""
    attrs = env.asset.attributes
    extra = attrs.model_extra or {}
    try:
        attributes = json.dumps(extra, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError:
        where = non_finite_path(extra) or ()
        raise NotJSONError("", ("asset", "attributes", *where)) from None
    if attrs.lily_patch is not None:
        in_patch = non_finite_path(attrs.lily_patch.set)
        if in_patch is not None:
            raise NotJSONError("", ("asset", "attributes", "lily_patch", "set", *in_patch))
    return {
        "event_id": env.event_id,
        "tenant": env.tenant,
        "source": env.source,
        "op": env.op,
        "event_time": env.event_time.astimezone(UTC),
        "type_name": env.asset.type_name,
        "qualified_name": env.asset.qualified_name,
        "name": env.asset.name,
        "description": attrs.description,
        "owner_users": attrs.owner_users,
        "owner_groups": attrs.owner_groups,
        "certificate_status": attrs.certificate_status,
        "parent_qualified_name": attrs.parent_qualified_name,
        "glossary_terms": attrs.glossary_terms,
        "attributes": attributes,
        "classifications": env.asset.classifications,
        "inputs": env.asset.inputs,
        "outputs": env.asset.outputs,
        "patch": attrs.lily_patch.model_dump_json() if attrs.lily_patch else None,
    }


def decode_envelopes(
    payloads: Sequence[bytes | str],
    origins: Sequence[str],
    *,
    tenant: str | None,
    max_event_bytes: int,
) -> DecodeResult:
    """Parse raw payloads into events; each payload that is not an envelope becomes a reject.

    `tenant` is the tenant the rejects are filed under (the partition being processed).
    """
    rows: list[dict[str, Any]] = []
    rejected: list[tuple[str | None, Reason, str, str | bytes, str]] = []
    suspects = _constant_suspects(payloads)
    for i, (payload, origin) in enumerate(zip(payloads, origins, strict=True)):
        if isinstance(payload, bytes):
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                # kept byte for byte (raw_bytes): distinct payloads stay distinct
                rejected.append((None, Reason.MALFORMED_JSON, f"not UTF-8: {exc}", payload, origin))
                continue
        else:
            text = payload
            try:
                payload = text.encode("utf-8")
            except UnicodeEncodeError as exc:  # a lone surrogate escaped into the text
                # as the JSON escape it came from: UTF-8 text that reads as the same JSON
                raw = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
                rejected.append((None, Reason.MALFORMED_JSON, f"not UTF-8: {exc}", raw, origin))
                continue
        size = len(payload)
        if size > max_event_bytes:
            rejected.append(
                (
                    event_id_of(text),
                    Reason.OVERSIZED,
                    f"{size} bytes exceeds the limit of {max_event_bytes}",
                    text,
                    origin,
                )
            )
            continue
        # pydantic reads NaN and Infinity, which are not JSON
        if may_hold_constant(text) if suspects is None else i in suspects:
            try:
                strict_loads(text, check_numbers=False)
            except NotJSONError as exc:
                rejected.append((event_id_of(text), Reason.MALFORMED_JSON, str(exc), text, origin))
                continue
            except (ValueError, RecursionError):
                pass  # not JSON for another reason: pydantic words it below
        try:
            env = Envelope.model_validate_json(text)
        except ValidationError as exc:
            reason, detail = _classify_error(exc)
            rejected.append((event_id_of(text), reason, detail, text, origin))
            continue
        try:
            row = envelope_row(env)
        except NotJSONError as exc:
            rejected.append((env.event_id, Reason.MALFORMED_JSON, str(exc), text, origin))
            continue
        row["raw"] = text
        row["origin"] = origin
        rows.append(row)
    events = pl.DataFrame(rows, schema=EVENT_SCHEMA) if rows else empty_events()
    rejects = make_rejects(tenant, rejected) if rejected else empty_rejects()
    return DecodeResult(events=events, rejects=rejects)


_VECTOR_MIN = 64  # payloads from which one polars pass beats a look at each


def _constant_suspects(payloads: Sequence[bytes | str]) -> set[int] | None:
    """Which payloads (of many, all bytes: landed batches) may hold NaN or Infinity, in
    one polars pass (a substring look at each costs ~3% of decoding); None: look at each."""
    if len(payloads) < _VECTOR_MIN or not all(isinstance(p, bytes) for p in payloads):
        return None
    values = pl.Series(values=payloads, dtype=pl.Binary)
    hits = values.bin.contains(b"NaN") | values.bin.contains(b"Infinity")
    return set(hits.arg_true().to_list()) if hits.any() else set()


def full_attributes(row: dict[str, Any]) -> dict[str, Any]:
    """The attributes object of a row: the JSON extras plus the non-null well-known keys."""
    # finite_loads: a NaN an earlier release let into the hub reads as null.
    attributes: dict[str, Any] = finite_loads(row["attributes"] or "{}")
    for key in WELL_KNOWN_ATTRIBUTES:
        if row.get(key) is not None:
            attributes[key] = row[key]
    return attributes


def frame_to_envelopes(events: pl.DataFrame) -> list[dict[str, Any]]:
    """Events frame back to contract envelopes (JSON-ready dicts)."""
    out: list[dict[str, Any]] = []
    for row in events.iter_rows(named=True):
        attributes = full_attributes(row)
        if row.get("patch"):
            attributes["lily_patch"] = json.loads(row["patch"])
        asset: dict[str, Any] = {
            "type_name": row["type_name"],
            "qualified_name": row["qualified_name"],
            "name": row["name"],
            "attributes": attributes,
            "classifications": row["classifications"] or [],
        }
        if row["inputs"] or row["outputs"]:
            asset["inputs"] = row["inputs"] or []
            asset["outputs"] = row["outputs"] or []
        out.append(
            {
                "event_id": row["event_id"],
                "tenant": row["tenant"],
                "source": row["source"],
                "op": row["op"],
                "event_time": row["event_time"].isoformat().replace("+00:00", "Z"),
                "asset": asset,
            }
        )
    return out
