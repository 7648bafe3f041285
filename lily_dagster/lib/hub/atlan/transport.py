"""Requests to Atlan through pyatlan's AtlanClient: its authentication (API key or OAuth
client credentials), its httpx transport and its retries on 5xx, with Lily's request
budget in front and Atlan's answers turned into errors an operator can act on.

Bodies are sent as prepared JSON (see entities.py): the bulk path never builds pyatlan
objects. pyatlan is imported when a transport is made, never at definitions load.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from lily_dagster.lib.hub.atlan.rate import AdaptiveRateLimiter
from lily_dagster.lib.hub.base import HubUnavailableError


class AtlanError(RuntimeError):
    """Base of the errors below; the message is one line an operator can act on."""


class AtlanUnavailableError(AtlanError, HubUnavailableError):
    """5xx past the retries, or no connection: retry later; the records stay pending."""


class AtlanAuthError(AtlanError):
    """401/403: the key or client credentials are wrong or revoked; nothing can succeed."""


class AtlanThrottledError(AtlanError, HubUnavailableError):
    """Still answered 429 after every wait it asked for."""


class AtlanRefusedError(AtlanError):
    """Atlan refused the request's content (400, or 404 for a type or a referenced asset
    it does not know)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}".strip())
        self.status, self.code, self.message = status, code, message

    @property
    def missing_reference(self) -> bool:
        """A referenced asset (a parent, a lineage end) does not exist (yet)."""
        return self.code == "ATLAS-404-00-00A" or "referenced entity" in self.message.lower()


RETRIED_STATUSES = (500, 502, 503, 504)


class AtlanTransport:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        oauth_client_id: str | None = None,
        oauth_client_secret: str | None = None,
        rate_per_min: float | None = 400,
        retries: int = 5,
        backoff_s: float = 1.0,
        max_throttles: int = 20,
        timeout_s: float = 120.0,
    ) -> None:
        from pyatlan.client.atlan import AtlanClient

        self.base_url = base_url.rstrip("/")
        self.retries = retries
        # Requests by outcome (lily_hub_requests_total): ok, retried (each retry of a 5xx
        # or a dropped connection, made inside pyatlan's transport), throttled (a 429),
        # failed.
        self.outcomes: Counter[str] = Counter()
        # 429 is not in the list: Lily's limiter handles it, so it can slow down for all
        # later requests too, not only retry this one.
        retry = counting_retry(
            self.outcomes,
            total=retries,
            backoff_factor=backoff_s,
            status_forcelist=list(RETRIED_STATUSES),
            allowed_methods=["GET", "POST", "PUT", "DELETE"],
            respect_retry_after_header=True,
        )
        self.client = AtlanClient(
            base_url=self.base_url,
            api_key=api_key,
            oauth_client_id=oauth_client_id,
            oauth_client_secret=oauth_client_secret,
            retry=retry,
            read_timeout=timeout_s,
        )
        self.limiter = AdaptiveRateLimiter(rate_per_min)
        self.max_throttles = max_throttles
        self.requests = 0

    # -- requests -----------------------------------------------------------------------

    def call(self, api: Any, body: str | None = None, query: dict[str, Any] | None = None) -> Any:
        """One API call (a pyatlan `API` constant), under the budget; the JSON answer."""
        import httpx

        path = self.client._create_path(api)
        params = self.client._create_params(api, query, None)
        for _ in range(self.max_throttles + 1):
            self.limiter.acquire()
            self.requests += 1
            try:
                response = self.client._session.request(
                    api.method.value, path, content=body, **params, timeout=None
                )
            except (httpx.TransportError, TypeError) as exc:
                # pyatlan's transport raises TypeError when a 5xx persists past its retries.
                self.outcomes["failed"] += 1
                raise AtlanUnavailableError(
                    f"Atlan at {self.base_url} unreachable or failing after {self.retries} "
                    f"retries ({type(exc).__name__}: {exc}); the records stay pending"
                ) from exc
            status = response.status_code
            if status == 429:
                self.outcomes["throttled"] += 1
                self.limiter.throttle(_retry_after(response.headers.get("Retry-After")))
                continue
            if 200 <= status < 300:
                self.outcomes["ok"] += 1
                self.limiter.success()
                return response.json() if response.content else {}
            self.outcomes["failed"] += 1
            raise _error(status, response.text, api.method.value, path)
        raise AtlanThrottledError(
            f"Atlan kept answering 429 after {self.max_throttles} waits; "
            "lower LILY_ATLAN_RATE_PER_MIN or retry later"
        )

    def bulk_upsert(self, body: str) -> dict[str, Any]:
        from pyatlan.client.constants import BULK_UPDATE

        # Records carry their whole tag set: tags removed at the source go in Atlan too.
        result: dict[str, Any] = self.call(
            BULK_UPDATE,
            body,
            {"replaceClassifications": "true", "replaceBusinessAttributes": "false"},
        )
        return result

    def soft_delete(self, guids: list[str]) -> dict[str, Any]:
        return self.delete(guids, "SOFT")

    def delete(self, guids: list[str], delete_type: str) -> dict[str, Any]:
        """Delete these assets: SOFT archives them; PURGE (pyatlan's AtlanDeleteType.PURGE)
        removes them with their audit history, which an erasure needs."""
        from pyatlan.client.constants import DELETE_ENTITIES_BY_GUIDS

        result: dict[str, Any] = self.call(
            DELETE_ENTITIES_BY_GUIDS, None, {"guid": guids, "deleteType": delete_type}
        )
        return result

    def find(self, qualified_names: list[str]) -> dict[str, tuple[str, str, str]]:
        """qualified_name → (guid, type_name, status) of the assets Atlan holds among these."""
        from pyatlan.client.constants import INDEX_SEARCH

        found: dict[str, tuple[str, str, str]] = {}
        for i in range(0, len(qualified_names), 100):
            chunk = qualified_names[i : i + 100]
            dsl = {
                "from": 0,
                "size": len(chunk) * 2,
                "query": {"bool": {"filter": [{"terms": {"qualifiedName": chunk}}]}},
            }
            answer = self.call(
                INDEX_SEARCH, json.dumps({"dsl": dsl, "attributes": ["qualifiedName"]})
            )
            for entity in answer.get("entities") or []:
                qn = (entity.get("attributes") or {}).get("qualifiedName")
                if qn in chunk:
                    found[qn] = (entity["guid"], entity["typeName"], entity.get("status", ""))
        return found

    def tag_ids(self) -> dict[str, str]:
        """Atlan tag display name → internal id, for the tags whose typedef exists."""
        from pyatlan.client.constants import GET_ALL_TYPE_DEFS

        answer = self.call(GET_ALL_TYPE_DEFS, None, {"type": "classification"})
        return {
            d["displayName"]: d["name"]
            for d in answer.get("classificationDefs") or []
            if d.get("displayName") and d.get("name")
        }

    def search_assets(self, prefixes: list[str], page_size: int = 300) -> Iterator[Any]:
        """Every asset (active or archived) under these qualified-name prefixes, through
        pyatlan's FluentSearch with its bulk paging."""
        from pyatlan.model.assets import Asset
        from pyatlan.model.fluent_search import FluentSearch

        if not prefixes:
            return
        search = FluentSearch(_includes_on_results=[]).page_size(page_size)
        for prefix in prefixes:
            search = search.where_some(Asset.QUALIFIED_NAME.startswith(prefix))
        search = search.min_somes(1).where(Asset.STATUS.within(["ACTIVE", "DELETED"]))
        for field in (
            Asset.NAME,
            Asset.DESCRIPTION,
            Asset.OWNER_USERS,
            Asset.OWNER_GROUPS,
            Asset.CERTIFICATE_STATUS,
        ):
            search = search.include_on_results(field)
        self.limiter.acquire()
        try:
            yield from search.execute(client=self.client, bulk=True)
        except TypeError as exc:
            raise AtlanUnavailableError(f"Atlan search failed after retries: {exc}") from exc
        except Exception as exc:
            status = getattr(getattr(exc, "error_code", None), "http_error_code", None)
            if status in (401, 403):
                raise AtlanAuthError(_auth_message(int(status), self.base_url)) from exc
            raise


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _auth_message(status: int, base_url: str) -> str:
    return (
        f"Atlan at {base_url} refused the credentials ({status}): check ATLAN_API_KEY "
        "(or ATLAN_OAUTH_CLIENT_ID/SECRET) and the key's permissions"
    )


def _error(status: int, text: str, method: str, path: str) -> AtlanError:
    if status in (401, 403):
        return AtlanAuthError(_auth_message(status, path.split("/api/")[0]))
    if status >= 500:
        return AtlanUnavailableError(f"Atlan answered {status} to {method} {path}; retry later")
    try:
        body = json.loads(text)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("errorCode") or body.get("code") or "")
    message = str(body.get("errorMessage") or body.get("message") or text[:300])
    return AtlanRefusedError(status, code, message)


def counting_retry(outcomes: Counter[str], **settings: Any) -> Any:
    """httpx-retries' Retry (pyatlan's retry policy) that counts each retry it makes in
    `outcomes["retried"]`: the retries happen inside pyatlan's transport, out of sight of
    `call`. Retry copies itself by its class on each attempt, so the class carries the
    counter."""
    from httpx_retries import Retry

    class CountingRetry(Retry):
        def increment(self) -> Retry:
            outcomes["retried"] += 1
            return super().increment()

    return CountingRetry(**settings)
