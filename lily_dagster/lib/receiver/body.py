"""What the receiver does with a body, independent of the HTTP framework.

Every event posted is checked by the same decoder and rules as the Kafka path; the valid
ones are stored in the inbox (the 202 waits for that commit), the invalid ones go to the
tenant's quarantine and are listed in the response with a JSON pointer to the bad field.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from lily_dagster.lib.inbox import InboxEvent
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.lib.reasons import Reason
from lily_dagster.lib.receiver.errors import RequestRejectedError
from lily_dagster.lib.validation import check_payloads

MAX_EVENTS_PER_REQUEST = 10_000
_FIELD_IN_DETAIL = re.compile(r"^([A-Za-z_][\w.]*)(?::| is | has )")


@dataclass
class CheckedBody:
    valid: list[InboxEvent] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(
        default_factory=list
    )  # index, event_id, reason, detail, pointer
    rejects: pl.DataFrame | None = None  # for the quarantine
    single: bool = False


def parse_json_body(body: bytes) -> Any:
    """The body as Python reads JSON. NaN, Infinity and -Infinity (not JSON, RFC 8259) read
    as floats here, so that each event holding one is refused on its own, as any other
    invalid event of an array is: the decoder (envelope.decode_envelopes) refuses them as
    malformed_json, with a pointer to the value."""
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise RequestRejectedError(
            400, Reason.MALFORMED_JSON, "body is not UTF-8", pointer=""
        ) from None
    except json.JSONDecodeError as exc:
        raise RequestRejectedError(
            400,
            Reason.MALFORMED_JSON,
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            pointer="",
        ) from None
    except (ValueError, RecursionError) as exc:  # e.g. a 5,000-digit number, deep nesting
        raise RequestRejectedError(
            400, Reason.MALFORMED_JSON, f"JSON not accepted: {str(exc)[:200]}", pointer=""
        ) from None


def _pointer(detail: str, index: int | None) -> str:
    match = _FIELD_IN_DETAIL.match(detail)
    path = "" if not match or match.group(1) == "body" else "/" + match.group(1).replace(".", "/")
    if path in ("/type_name", "/qualified_name", "/name"):
        path = "/asset" + path
    return (f"/{index}" if index is not None else "") + path


def check_envelopes(
    items: list[Any], tenant: str, source: str, max_event_bytes: int, single: bool
) -> CheckedBody:
    """Validate posted envelopes for `tenant`; a body naming another tenant is refused whole."""
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise RequestRejectedError(
            413,
            "too_large",
            f"{len(items)} events in one request; at most {MAX_EVENTS_PER_REQUEST}",
        )
    for i, item in enumerate(items):
        if (
            isinstance(item, dict)
            and isinstance(item.get("tenant"), str)
            and item["tenant"] != tenant
        ):
            # The tenant comes from the credentials and the path, never from the body.
            raise RequestRejectedError(
                403,
                Reason.TENANT_MISMATCH,
                f"event names tenant {item['tenant']!r} but is posted for {tenant!r}",
                pointer=(f"/{i}" if not single else "") + "/tenant",
            )
    raws = [json.dumps(item, ensure_ascii=False, separators=(",", ":")) for item in items]
    origins = [f"webhook:{source}:{i}" for i in range(len(items))]
    checked = check_payloads(raws, origins, tenant, max_event_bytes)
    rejects = checked.rejects
    out = CheckedBody(single=single, rejects=rejects)
    for row in rejects.iter_rows(named=True):
        index = int(row["origin"].rsplit(":", 1)[1])
        out.rejected.append(
            {
                "index": index,
                "event_id": row["event_id"],
                "reason": row["reason"],
                "detail": row["detail"],
                "pointer": _pointer(row["detail"], None if single else index),
            }
        )
    out.rejected.sort(key=lambda r: r["index"])
    for event_id, raw in checked.valid.select("event_id", "raw").iter_rows():
        out.valid.append(InboxEvent(tenant, event_id, raw.encode("utf-8"), source))
    return out


def quarantine_rejects(store: QuarantineStore, tenant: str, checked: CheckedBody) -> int:
    if checked.rejects is None or checked.rejects.is_empty():
        return 0
    return store.add(tenant, f"webhook-{uuid.uuid4().hex}", checked.rejects)
