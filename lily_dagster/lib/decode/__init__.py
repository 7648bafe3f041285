"""Bulk envelope decoding in polars: the backfill gate, column-wise instead of row by row.

`decode_frame` turns a frame of envelopes into the same events (EVENT_SCHEMA) and rejects
(REJECT_SCHEMA) as `decode_envelopes` followed by the two tenant rules of `validation`
(`tenant_format`, `tenant_binding`), without a Python object per row. Three layouts:

- nested: `event_id, tenant, source, op, event_time` and an `asset` struct
  (`type_name, qualified_name, name, attributes, classifications, inputs, outputs`), the
  attributes a struct or a JSON object string;
- flattened: the same with `asset_type_name`, `asset_qualified_name`, … columns;
- payloads: a `value` column of envelope JSON text (String or Binary, one envelope a row:
  JSON Lines, landed Kafka messages), optionally with its own `origin` column.

`raw`. Parquet has no "payload as received", so a Parquet row's `raw` is the compact JSON
of its envelope exactly as the row-by-row snapshot reader writes it
(`json.dumps(inventory.parquet_envelope(row), separators=(",", ":"))`: a null is an absent
key, non-ASCII is `\\u`-escaped, the asset last): both readers quarantine a row under the same
`quarantine_id`, and replaying `raw` through `decode_envelopes` gives the same event. For
JSON text, `raw` is the text itself, byte for byte.

Parquet (the bulk format) is decoded in polars: a first pass over each column finds what it
holds (nulls, whether its bytes need JSON escapes or are ASCII, constant strings, empty
lists, float ranges), then one query builds the events, the reason of each reject and the
JSON text: clean columns are concatenated as they are, mostly-null members are built for
their rows only, timestamps come from lookup tables. Checks follow the reference's
precedence (the first failing field in declaration order names the reason, with pydantic's
detail): a column of the wrong type rejects its non-null rows by dtype. Large frames are
cut into slices decoded on every polars thread. JSON text (JSON Lines, and attributes given
as JSON strings) is typed row by row by DuckDB's JSON functions, which polars lacks (its
reader stops at the first bad row and turns numbers into strings); rows proven valid and
plain are decoded column-wise.

Whatever the column-wise path cannot decide exactly goes to the reference itself, so the
result is the same row for row: invalid JSON text, patches (`lily_patch`), floats Python
prints in exponent form, JSON with escapes or nested objects in free-form attributes,
duplicate keys, values of exotic Parquet types (decimal, binary, dates outside
`event_time`). These are rare in bulk loads; a file made of them decodes at the reference's
speed.

Modules, in the order a frame meets them:

- `frame`: `decode_frame` and `fill_raw`, the whole; `tenant`: the tenant rules, origins;
- `structured`: nested and flattened frames in one query, in parallel slices, put together
  from `layout` (the leaves), `attributes`, `time_field` (event_time), `checks` and `raw`;
  `rejects` judges the rows;
- `facts` (what a column holds), `dtypes`, `json_text` (json.dumps column-wise),
  `event_time` (reading and writing times), `schema` (names and words), `partial`;
- `json_lines`: payload frames, through `duckdb_json` (as `json_attributes` reads
  attributes given as JSON text);
- `reference`: decode_envelopes for the rows the column-wise paths leave;
- `scan`: snapshot files read in bounded frames (`scan_envelopes`).
"""

from lily_dagster.lib.decode.frame import decode_frame, fill_raw, is_payloads
from lily_dagster.lib.decode.scan import scan_envelopes
from lily_dagster.lib.envelope import DecodeResult

__all__ = ["DecodeResult", "decode_frame", "fill_raw", "is_payloads", "scan_envelopes"]
