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
cut into slices decoded on every polars thread.

JSON text (JSON Lines, landed payloads, attributes given as JSON strings) is read by DuckDB's
JSON functions (yyjson, on every core) in two passes a batch: each object's key list, then
every leaf as its JSON text under a structure made for the batch, its most common free-form
attribute keys among the leaves. polars' own NDJSON reader is no use here: it stops at the
first bad row, turns numbers into strings and, on these envelopes, reads ~4x slower than
DuckDB. The leaf texts tell a string from a number; the key lists tell null from absence and
show a key given twice (DuckDB reads the first, Python the last); the free-form attributes
are written back as json.dumps writes them from their leaves. yyjson's leniencies (NaN and
infinity tokens, trailing commas) are found by a regex before and left to the reference.

Whatever the column-wise paths cannot decide exactly goes to the reference itself, so the
result is the same row for row: invalid JSON text, patches (`lily_patch`), floats Python
prints in exponent form, JSON with escapes or nested objects in free-form attributes, free-form
keys beyond a batch's most common, duplicate keys, values of exotic Parquet types (decimal,
binary, dates outside `event_time`). These are rare in bulk loads; a file made of them decodes
at the reference's speed.

Modules, in the order a frame meets them:

- `scan`: snapshot files read in bounded frames (`scan_envelopes`), JSON Lines cut into
  lines column-wise by `lines`;
- `frame`: `decode_frame` and `fill_raw`, the whole; `tenant`: the tenant rules, origins;
- `structured`: nested and flattened frames in one query, in parallel slices, put together
  from `layout` (the leaves), `attributes`, `time_field` (event_time), `checks` and `raw`;
  `rejects` judges the rows;
- `facts` (what a column holds), `dtypes`, `json_text` (json.dumps column-wise),
  `event_time` (reading and writing times), `schema` (names and words), `partial`;
- `json_lines`: payload frames; `json_attributes`: attributes given as JSON text; both
  through `duckdb_json` (the queries) and `json_leaves` (leaf texts into values);
- `reference`: decode_envelopes for the rows the column-wise paths leave.
"""

from lily_dagster.lib.decode.frame import decode_frame, fill_raw, is_payloads
from lily_dagster.lib.decode.scan import scan_envelopes
from lily_dagster.lib.envelope import DecodeResult

__all__ = ["DecodeResult", "decode_frame", "fill_raw", "is_payloads", "scan_envelopes"]
