"""An Atlan-compatible local server: what pyatlan 11.6's `AtlanClient` calls, answered from a
DuckDB store, so Lily's Atlan side runs (and fails) for real without an Atlan tenant.

Run it with `atlan-emulator --port N [--host 127.0.0.1] [--api-key KEY] [--state PATH]
[--rate-limit-per-min N]` (this distribution's console script, `cli`; `lily atlan-emulator`
takes the same flags and serves the same app); point pyatlan at it with
`AtlanClient(base_url="http://127.0.0.1:N", api_key=KEY)`. The key defaults to
`lily-emulator-key` (LILY_ATLAN_EMULATOR_API_KEY overrides the default, --api-key both). State is
in memory unless --state names a DuckDB file, which then survives restarts.

Atlan API (every /api/ call needs `Authorization: Bearer <key>`; a trailing slash is ignored):

- POST /api/meta/entity/bulk: upsert Atlas entities by (typeName, qualifiedName), atomically:
  one bad entity writes nothing. Answers Atlas's AssetMutationResponse (CREATE / UPDATE headers
  and guidAssignments). An entity whose content does not change is listed neither as CREATE
  nor UPDATE (some Atlan versions list it as UPDATE anyway). Upserting a soft-deleted entity
  restores it (ACTIVE). Tags (classifications, by hashed id) are taken on create and, for an
  existing entity, only with replaceClassifications / replaceTags (replace) or appendTags
  (addOrUpdateClassifications / removeClassifications), as Atlan does. Refusals, as Atlas:
  unknown typeName 400 ATLAS-400-00-014; no qualifiedName 400 ATLAS-400-00-073; no name 400
  ATLAS-400-00-02B; unknown tag id 404 ATLAS-404-00-008; a relationship attribute (a
  `{"typeName", "uniqueAttributes": {"qualifiedName"}}` or `{"typeName", "guid"}` ref, or a list
  of them) naming an entity neither stored nor in the same request 404 ATLAS-404-00-00A, whose
  message names the qualifiedName. A ref resolves to its type or any subtype.
- DELETE /api/meta/entity/bulk?guid=..&deleteType=SOFT|HARD|PURGE: SOFT marks DELETED, HARD and
  PURGE remove. Unknown guids are skipped, as Atlas does; nothing cascades to children.
- GET /api/meta/entity/guid/{guid} and /api/meta/entity/uniqueAttribute/type/{type}
  ?attr:qualifiedName=..: `{"entity", "referredEntities"}`, soft-deleted entities included;
  relationship attributes only with ignoreRelationships=false. 404 ATLAS-404-00-005 / -009.
- POST /api/meta/search/indexsearch: see `search` for the DSL subset. Hits carry qualifiedName,
  name, the requested attributes, classifications, createTime and updateTime, which is what
  pyatlan's bulk paging (sort by __timestamp then __guid, range filter on the last timestamp
  seen, else from = assets already seen) needs to see every asset exactly once.
- GET /api/meta/types/typedefs[?type=classification&type=struct..] and
  /api/meta/types/typedef/name/{name}: Atlan tags (hashed `name`, `displayName`), the entity
  types pyatlan models (`typenames`) and a few structs (pyatlan's tag cache needs one).

Authentication: a missing or wrong key gets 401 ATLAS-401-00-001 (pyatlan: AuthenticationError,
no retry, no token refresh for a plain API key). After POST /_emulator/revoke the key gets 403
ATLAS-403-00-001 with `Retry-After: 1`: pyatlan's default Retry retries 403 (it is in its
status_forcelist) five times, one second apart, then raises PermissionError; without the header
its backoff would take about a minute. A Retry without 403 raises PermissionError at once.

Admin API (no authentication), for tests:

- POST /_emulator/faults `{"status": 429|500|503|.. or null, "count": N, "retry_after": s or
  null, "delay_s": 0.0, "path_prefix": "/api/meta/entity/bulk" or null}`: the next N matching
  /api/ requests answer that status (with `Retry-After` when retry_after is set: whole seconds
  as an integer, a fraction as a decimal, which httpx_retries ignores but Lily's limiter
  honours) without touching state; `delay_s` delays them first, and with status null only
  delays them. Faults queue up in the order posted; `"count": 0` clears them all.
- POST /_emulator/config `{"rate_limit_per_min": N or null}`: a sliding one-minute window; a
  request over the limit gets 429 with Retry-After (seconds until a slot frees).
- POST /_emulator/tags `{"names": ["PII", ...]}`: create Atlan tags (existing names are kept).
- POST /_emulator/revoke: the API key answers 403 from now on.
- POST /_emulator/reset: empty store, no faults, no rate limit (a --rate-limit-per-min given at
  start included), key valid, default tags only, counters zeroed.
- GET /_emulator/stats: `{"requests", "by_path", "status_counts", "entities",
  "bulk_entities_received"}` over /api/ requests (parameterised paths by their template).
- GET /_emulator/entities: every stored entity (soft-deleted included) as stored.
- GET /_emulator/health: `{"ok": true}`.

Default tags, created at start and by reset: PII, GDPR:personal-data, Finance, Sensitive,
PII:email, PII:phone. A tag's hashed id derives from its display name, so ids are the same
after a reset or restart and a client's tag cache stays right.

Not emulated: lineage, glossary and custom-metadata typedef APIs, aggregations,
append/removeRelationshipAttributes, cascading deletes, propagated tags; search relevance
(`match` compares words, `term` on a text field compares the whole value).

pyatlan on failures (observed with pyatlan 11.6.0): 400 → InvalidRequestError, 404 →
NotFoundError, 401 → AuthenticationError, 403 → PermissionError, 429 past the retries →
RateLimitError, 500 past the retries → ApiError; a 503 past the retries makes pyatlan's
`_call_api` return None, so the caller fails on it with a TypeError (e.g. `AssetMutationResponse
(**None)`), not an AtlanError.
"""

from __future__ import annotations

DEFAULT_API_KEY = "lily-emulator-key"
API_KEY_ENV = "LILY_ATLAN_EMULATOR_API_KEY"
DEFAULT_TAGS = ("PII", "GDPR:personal-data", "Finance", "Sensitive", "PII:email", "PII:phone")
