"""CONTRACT.md §6: the metadata access API, as a user's script sees it. Records loaded with
`lily backfill` (two tenants, two schemas, PII columns, a lineage chain, a deleted record);
`lily serve` on a LILY_CONFIG with access policies; bearer tokens minted here with PyJWT
(HS256, and RS256 from a loopback JWKS issuer); the audit log read back with `lily audit`
and from `$LILY_HOME/audit/`. Built once for the module (one scenario, one receiver)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from lily_dagster_tests.contract import outside

JWT_SECRET = "contract-access-api-hs256-secret-0123456789"
PII_SCOPES = "lily:read lily:read:pii"
REDACTED = "[redacted]"
KEPT_ATTRIBUTES = {"parent_qualified_name", "data_type", "order", "certificate_status"}
HTTP_ACTIONS = {
    "assets.list",
    "assets.get",
    "lineage.read",
    "changes.read",
    "audit.read",
    "events.ingest",
    "webhook.ingest",
}
AUDIT_FIELDS = {
    "seq",
    "time",
    "sub",
    "action",
    "resource",
    "decision",
    "status",
    "prev_hash",
    "hash",
}
CHANGE_FIELDS = {
    "seq",
    "qualified_name",
    "type_name",
    "change",
    "version",
    "name",
    "status",
    "attributes",
    "classifications",
    "changed_at",
}

# --- the estate ----------------------------------------------------------------------------

ROOT = "default/snowflake/1700000000/DB"
SALES, FINANCE = f"{ROOT}/SALES", f"{ROOT}/FINANCE"
# The lineage chain A -> P1 -> B -> P2 -> C, and C -> P3 -> D into FINANCE.
A, B, C = f"{SALES}/RAW_ORDERS", f"{SALES}/ORDERS", f"{SALES}/ORDERS_DAILY"
D = f"{FINANCE}/REVENUE"
P1, P2, P3 = f"{SALES}/LOAD_ORDERS", f"{SALES}/AGGREGATE_ORDERS", f"{SALES}/BOOK_REVENUE"
PII_COLUMN = f"{SALES}/CUSTOMERS/EMAIL"
GDPR_COLUMN = f"{SALES}/CUSTOMERS/CONTACT"
FINANCE_PII_COLUMN = f"{FINANCE}/SALARIES/IBAN"
DELETED = f"{SALES}/T03/C07"
CHANGED = f"{SALES}/T01/C02"  # upserted again by the changes test
POLICY_REGEX_FINANCE, POLICY_REGEX_SALES = "/FINANCE/", "/SALES/"

_event_seq = iter(range(1, 1_000_000))


def _envelope(
    tenant: str,
    type_name: str,
    qualified_name: str,
    *,
    op: str = "upsert",
    second: int = 0,
    attributes: dict[str, Any] | None = None,
    classifications: list[str] | None = None,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
) -> dict[str, Any]:
    parent = qualified_name.rsplit("/", 1)[0]
    asset: dict[str, Any] = {
        "type_name": type_name,
        "qualified_name": qualified_name,
        "name": qualified_name.rsplit("/", 1)[1],
        "attributes": {"parent_qualified_name": parent, **(attributes or {})},
        "classifications": classifications or [],
    }
    if type_name == "Process":
        asset["inputs"], asset["outputs"] = inputs or [], outputs or []
    return {
        "event_id": f"contract-access-{tenant}-{next(_event_seq):06d}",
        "tenant": tenant,
        "source": "snowflake",
        "op": op,
        "event_time": f"2026-01-01T10:{second // 60:02d}:{second % 60:02d}Z",
        "asset": asset,
    }


def _schema_envelopes(tenant: str, schema: str, tables: list[str], columns: int) -> list[Any]:
    out = [_envelope(tenant, "Schema", schema, attributes={"description": "a schema"})]
    for table in tables:
        out.append(
            _envelope(
                tenant,
                "Table",
                f"{schema}/{table}",
                attributes={"description": f"table {table}", "owner_users": ["dana"]},
            )
        )
        for i in range(columns):
            out.append(
                _envelope(
                    tenant,
                    "Column",
                    f"{schema}/{table}/C{i:02d}",
                    attributes={
                        "description": f"column {i} of {table}",
                        "data_type": "NUMBER",
                        "order": i,
                    },
                )
            )
    return out


def acme_estate() -> list[dict[str, Any]]:
    """~300 records: DB, SALES (lineage chain, PII columns, a deleted column), FINANCE."""
    tenant = "acme"
    events = [_envelope(tenant, "Database", ROOT, attributes={"description": "the warehouse"})]
    events += _schema_envelopes(tenant, SALES, [f"T{i:02d}" for i in range(10)], 18)
    events += _schema_envelopes(tenant, FINANCE, [f"T{i:02d}" for i in range(5)], 18)
    for table in (A, B, C, D, f"{SALES}/CUSTOMERS", f"{FINANCE}/SALARIES"):
        events.append(
            _envelope(tenant, "Table", table, attributes={"description": "lineage table"})
        )
    pii = {
        "description": "customer e-mail address",
        "owner_users": ["jdoe"],
        "owner_groups": ["crm"],
        "certificate_status": "VERIFIED",
        "data_type": "VARCHAR",
        "order": 1,
        "sample_values": ["jane@example.com"],
    }
    events.append(_envelope(tenant, "Column", PII_COLUMN, attributes=pii, classifications=["PII"]))
    events.append(
        _envelope(
            tenant,
            "Column",
            GDPR_COLUMN,
            attributes={**pii, "description": "contact address", "order": 2},
            classifications=["GDPR:email", "Confidential"],
        )
    )
    events.append(
        _envelope(
            tenant,
            "Column",
            FINANCE_PII_COLUMN,
            attributes={**pii, "description": "salary account"},
            classifications=["PII:bank"],
        )
    )
    for process, source, target in ((P1, A, B), (P2, B, C), (P3, C, D)):
        events.append(
            _envelope(
                tenant,
                "Process",
                process,
                attributes={"description": f"moves {source} to {target}"},
                inputs=[source],
                outputs=[target],
            )
        )
    deleted = next(e for e in events if e["asset"]["qualified_name"] == DELETED)
    events.append({**deleted, "event_id": "contract-access-acme-delete", "op": "delete"})
    events[-1]["event_time"] = "2026-01-01T11:00:00Z"
    return events


def globex_estate() -> list[dict[str, Any]]:
    tenant = "globex"
    events = [_envelope(tenant, "Database", ROOT, attributes={"description": "globex db"})]
    events += _schema_envelopes(tenant, SALES, ["T00"], 2)
    events += _schema_envelopes(tenant, FINANCE, ["T00"], 2)
    return events


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def write_config(path: Path, policies: list[dict[str, Any]] | None = None) -> Path:
    config = {
        "access": {
            "policies": policies
            if policies is not None
            else [
                {
                    "name": "no-finance-for-contractors",
                    "effect": "deny",
                    "groups": ["contractors"],
                    "qualified_name": POLICY_REGEX_FINANCE,
                }
            ]
        },
        "tenants": [
            {
                "name": "acme",
                "access": {
                    "policies": [
                        {
                            "name": "analysts-only-sales",
                            "effect": "allow",
                            "groups": ["analysts"],
                            "qualified_name": POLICY_REGEX_SALES,
                        }
                    ]
                },
            },
            {"name": "globex"},
        ],
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


# --- tokens and requests -------------------------------------------------------------------


def mint(
    tenant: str | list[str] = "acme",
    scope: str = PII_SCOPES,
    *,
    groups: list[str] | None = None,
    sub: str = "alice",
    key: Any = JWT_SECRET,
    algorithm: str = "HS256",
    ttl_s: int = 600,
    extra: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
) -> str:
    claims: dict[str, Any] = {"sub": sub, "aud": "lily", "exp": int(time.time()) + ttl_s}
    claims["tenants" if isinstance(tenant, list) else "tenant"] = tenant
    claims["scope"] = scope
    if groups is not None:
        claims["groups"] = groups
    claims.update(extra or {})
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def _sub_of(token: str | None) -> str:
    """The `sub` the audit log should name for a request with this token ("" if invalid)."""
    if token is None:
        return ""
    try:
        claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="lily")
    except jwt.PyJWTError:
        return ""
    return str(claims.get("sub", ""))


@dataclass
class Sent:
    """One request the tests sent: what the audit log has to record."""

    tenant: str
    path: str  # as sent (percent-encoded)
    status: int
    sub: str


@dataclass
class Api:
    base_url: str
    sent: list[Sent] = field(default_factory=list)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def get(
        self,
        path: str,
        token: str | None,
        params: dict[str, Any] | None = None,
        sub: str | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        response = self.client.get(self.base_url + path, params=params, headers=headers)
        match = re.match(r"/v1/tenants/([^/]+)/", path)
        self.sent.append(
            Sent(
                tenant=match.group(1) if match else "",
                path=path,
                status=response.status_code,
                sub=_sub_of(token) if sub is None else sub,
            )
        )
        return response

    def ok(self, path: str, token: str | None, **params: Any) -> dict[str, Any]:
        response = self.get(path, token, params or None)
        assert response.status_code == 200, (path, params, response.status_code, response.text)
        body = outside.strict_json(response.content)
        assert isinstance(body, dict), body
        return body

    def error(
        self, path: str, token: str | None, status: int, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        response = self.get(path, token, params)
        return error_body(response, status)

    def all_assets(self, tenant: str, token: str, **params: Any) -> list[dict[str, Any]]:
        """Every page of GET …/assets, following next_cursor until null."""
        out: list[dict[str, Any]] = []
        cursor = None
        for _ in range(1000):
            query = {**params, **({"cursor": cursor} if cursor else {})}
            page = self.ok(f"/v1/tenants/{tenant}/assets", token, **query)
            assert set(page) == {"assets", "next_cursor"}, set(page)
            out += page["assets"]
            cursor = page["next_cursor"]
            if cursor is None:
                return out
            assert isinstance(cursor, str) and cursor
        raise AssertionError("next_cursor never became null")


def error_body(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (
        str(response.request.url),
        response.status_code,
        response.text[:500],
    )
    body = outside.strict_json(response.content)
    assert isinstance(body, dict) and {"error", "detail"} <= set(body), body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["detail"], str)
    return body


def asset_path(tenant: str, qualified_name: str) -> str:
    return f"/v1/tenants/{tenant}/assets/{quote(qualified_name, safe='')}"


def lineage_path(tenant: str, qualified_name: str) -> str:
    return f"/v1/tenants/{tenant}/lineage/{quote(qualified_name, safe='')}"


# --- the scenario --------------------------------------------------------------------------


@dataclass
class Scenario:
    env: dict[str, str]
    home: Path
    root: Path
    api: Api

    def export(self, tenant: str) -> list[dict[str, Any]]:
        return outside.hub_export(self.env, tenant)

    def export_by_name(self, tenant: str) -> dict[str, dict[str, Any]]:
        return {r["qualified_name"]: r for r in self.export(tenant)}


def start_server(env: dict[str, str], log: Path) -> tuple[Any, str]:
    port = outside.free_port()
    proc = outside.start(
        ["serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        log,
        outside.http_ready(f"http://127.0.0.1:{port}/healthz"),
    )
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("access-api")
    env = outside.clean_environment(
        LILY_HOME=str(root / "home"),
        LILY_CONFIG=str(write_config(root / "lily.yaml")),
        LILY_JWT_HS256_SECRET=JWT_SECRET,
    )
    for tenant, events in (("acme", acme_estate()), ("globex", globex_estate())):
        source = write_jsonl(root / f"{tenant}.jsonl", events)
        outside.lily_ok("backfill", "--tenant", tenant, "--source", str(source), env=env)
    with outside.processes() as started:
        proc, url = start_server(env, root / "serve.log")
        started.append(proc)
        api = Api(url)
        try:
            yield Scenario(env=env, home=root / "home", root=root, api=api)
        finally:
            api.client.close()


@pytest.fixture(scope="module")
def api(scenario: Scenario) -> Api:
    return scenario.api


def by_name(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {r["qualified_name"]: r for r in records}
    assert len(out) == len(records), "a qualified name twice"
    return out


def names(records: list[dict[str, Any]]) -> list[str]:
    return [r["qualified_name"] for r in records]


# --- 1. authentication and authorisation ---------------------------------------------------


def test_the_estate_was_loaded(scenario: Scenario) -> None:
    acme = scenario.export_by_name("acme")
    assert 280 <= len(acme) <= 400, len(acme)
    assert acme[DELETED]["status"] == "DELETED"
    # (The default hooks may classify further, e.g. an e-mail column as PII:email.)
    assert "PII" in acme[PII_COLUMN]["classifications"]
    assert "GDPR:email" in acme[GDPR_COLUMN]["classifications"]
    assert acme[P1]["inputs"] == [A] and acme[P1]["outputs"] == [B]
    assert len(scenario.export("globex")) >= 4


@pytest.mark.parametrize(
    "kind", ["none", "garbage", "tampered", "other-secret", "expired", "wrong-audience"]
)
def test_no_or_bad_token_is_401(api: Api, kind: str) -> None:
    good = mint()
    header, payload, signature = good.split(".")
    tokens: dict[str, str | None] = {
        "none": None,
        "garbage": "not-a-jwt",
        "tampered": f"{header}.{payload}.{signature[::-1]}",
        "other-secret": mint(key="another-secret-of-at-least-32-characters!"),
        "expired": mint(ttl_s=-120),
        "wrong-audience": mint(extra={"aud": "someone-else"}),
    }
    for path in ("/v1/tenants/acme/assets", asset_path("acme", A), "/v1/tenants/acme/changes"):
        body = api.error(path, tokens[kind], 401)
        assert body["error"] == "unauthenticated", body


def test_a_token_without_the_read_scope_is_403(api: Api) -> None:
    for scope in ("lily:ingest", "lily:read:pii", "lily:audit"):
        token = mint(scope=scope)
        for path in ("/v1/tenants/acme/assets", asset_path("acme", A), lineage_path("acme", A)):
            body = api.error(path, token, 403)
            assert body["error"] == "insufficient_scope", body


def test_a_token_naming_only_another_tenant_is_403(api: Api) -> None:
    for token in (mint("globex"), mint(["globex"])):
        for path in ("/v1/tenants/acme/assets", asset_path("acme", A), "/v1/tenants/acme/changes"):
            body = api.error(path, token, 403)
            assert body["error"] == "wrong_tenant", body
    # Naming both is enough.
    assert api.ok("/v1/tenants/acme/assets", mint(["globex", "acme"]), limit=1)["assets"]


# --- 2. listing ----------------------------------------------------------------------------


def test_paging_through_all_assets_gives_the_hub_export(scenario: Scenario, api: Api) -> None:
    export = scenario.export("acme")
    listed = api.all_assets("acme", mint(), limit=50)
    assert len(listed) > 5 * 50  # several pages
    assert names(listed) == sorted(names(listed)), "not in qualified_name order"
    assert len(set(names(listed))) == len(listed), "a record listed twice"
    assert by_name(listed) == by_name(export)
    # The default page size is 100, a page of 1000 takes everything.
    first = api.ok("/v1/tenants/acme/assets", mint())
    assert len(first["assets"]) == 100 and first["next_cursor"]
    whole = api.ok("/v1/tenants/acme/assets", mint(), limit=1000)
    assert whole["next_cursor"] is None and whole["assets"] == listed


def test_a_page_exactly_at_the_end_has_no_next_cursor(scenario: Scenario, api: Api) -> None:
    count = len(scenario.export("acme"))
    page = api.ok("/v1/tenants/acme/assets", mint(), limit=count)
    assert len(page["assets"]) == count
    # The last page may or may not say more is coming; following it must end empty.
    if page["next_cursor"] is not None:
        rest = api.ok("/v1/tenants/acme/assets", mint(), limit=1, cursor=page["next_cursor"])
        assert rest == {"assets": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "matches"),
    [
        pytest.param({"type_name": "Column"}, lambda r: r["type_name"] == "Column", id="type"),
        pytest.param({"type_name": "Process"}, lambda r: r["type_name"] == "Process", id="proc"),
        pytest.param({"status": "DELETED"}, lambda r: r["status"] == "DELETED", id="deleted"),
        pytest.param({"status": "ACTIVE"}, lambda r: r["status"] == "ACTIVE", id="active"),
        pytest.param({"classification": "PII"}, lambda r: "PII" in r["classifications"], id="pii"),
        pytest.param(
            {"classification": "GDPR:email"},
            lambda r: "GDPR:email" in r["classifications"],
            id="gdpr",
        ),
        pytest.param(
            {"qualified_name_prefix": f"{FINANCE}/"},
            lambda r: r["qualified_name"].startswith(f"{FINANCE}/"),
            id="prefix",
        ),
        pytest.param(
            {"q": "order"},
            lambda r: (
                "order" in r["name"].lower()
                or "order" in str(r["attributes"].get("description", "")).lower()
            ),
            id="q",
        ),
        pytest.param(
            {"q": "E-MAIL"},
            lambda r: (
                "e-mail" in r["name"].lower()
                or "e-mail" in str(r["attributes"].get("description", "")).lower()
            ),
            id="q-case",
        ),
        pytest.param(
            {"type_name": "Column", "qualified_name_prefix": f"{SALES}/T0"},
            lambda r: r["type_name"] == "Column" and r["qualified_name"].startswith(f"{SALES}/T0"),
            id="combined",
        ),
        pytest.param({"type_name": "Dashboard"}, lambda r: False, id="none"),
    ],
)
def test_filters_return_exactly_the_matching_records(
    scenario: Scenario, api: Api, params: dict[str, str], matches: Any
) -> None:
    wanted = [r for r in scenario.export("acme") if matches(r)]
    listed = api.all_assets("acme", mint(), limit=50, **params)
    assert names(listed) == sorted(r["qualified_name"] for r in wanted)
    assert by_name(listed) == by_name(wanted)


# --- 3. one record by name -----------------------------------------------------------------


def test_a_record_by_name_as_one_segment_or_the_rest_of_the_path(
    scenario: Scenario, api: Api
) -> None:
    export = scenario.export_by_name("acme")
    for name in (A, P1, DELETED, PII_COLUMN, GDPR_COLUMN, ROOT):
        assert api.ok(asset_path("acme", name), mint()) == export[name]
        assert api.ok(f"/v1/tenants/acme/assets/{name}", mint()) == export[name]


@pytest.mark.parametrize(
    "path",
    [
        asset_path("acme", f"{SALES}/NO_SUCH_TABLE"),
        f"/v1/tenants/acme/assets/{SALES}/NO_SUCH_TABLE",
        asset_path("acme", f"{SALES}/T00/../T01"),
        asset_path("acme", f"{SALES}/.."),
        f"/v1/tenants/acme/assets/{SALES}/%2E%2E/T01",
        asset_path("acme", f"{A}\x00"),
        f"/v1/tenants/acme/assets/{A}%00",
        asset_path("globex", A),  # acme's name, not globex's
    ],
    ids=[
        "unknown",
        "unknown-path",
        "dotdot",
        "trailing-dotdot",
        "dotdot-path",
        "nul",
        "nul-path",
        "other-tenant",
    ],
)
def test_a_name_that_is_no_record_is_404(api: Api, path: str) -> None:
    token = mint(["acme", "globex"])
    assert api.error(path, token, 404)["error"] == "not_found"


# --- 4. PII redaction ----------------------------------------------------------------------


def _assert_redacted(record: dict[str, Any], plain: dict[str, Any]) -> None:
    assert record["classifications"] == plain["classifications"]
    assert set(record["attributes"]) == set(plain["attributes"])
    for key, value in plain["attributes"].items():
        if key in KEPT_ATTRIBUTES:
            assert record["attributes"][key] == value, key
        else:
            assert record["attributes"][key] == REDACTED, key
    others = {k: v for k, v in record.items() if k != "attributes"}
    assert others == {k: v for k, v in plain.items() if k != "attributes"}


def test_pii_is_redacted_without_the_pii_scope(scenario: Scenario, api: Api) -> None:
    export = scenario.export_by_name("acme")
    sensitive = {n for n, r in export.items() if _is_sensitive(r)}
    assert {PII_COLUMN, GDPR_COLUMN, FINANCE_PII_COLUMN} <= sensitive
    reader = mint(scope="lily:read")
    listed = by_name(api.all_assets("acme", reader, limit=100))
    assert set(listed) == set(export)
    for name, record in listed.items():
        if name in sensitive:
            _assert_redacted(record, export[name])
        else:
            assert record == export[name], name
    for name in (PII_COLUMN, GDPR_COLUMN):
        _assert_redacted(api.ok(asset_path("acme", name), reader), export[name])
        assert api.ok(asset_path("acme", name), mint()) == export[name]
        assert export[name]["attributes"]["description"] != REDACTED
    # The classification filter still finds them.
    found = api.all_assets("acme", reader, classification="PII")
    assert PII_COLUMN in names(found)
    assert names(found) == sorted(n for n, r in export.items() if "PII" in r["classifications"])
    for record in found:
        _assert_redacted(record, export[record["qualified_name"]])


def test_a_search_never_finds_pii_by_words_the_caller_sees_redacted(
    scenario: Scenario, api: Api
) -> None:
    words = "customer e-mail"  # only in the PII column's description
    assert PII_COLUMN in names(api.all_assets("acme", mint(), q=words))
    assert PII_COLUMN not in names(api.all_assets("acme", mint(scope="lily:read"), q=words))
    # Its name stays searchable: names are never redacted.
    assert PII_COLUMN in names(api.all_assets("acme", mint(scope="lily:read"), q="EMAIL"))


def test_pii_is_redacted_in_changes_without_the_pii_scope(scenario: Scenario, api: Api) -> None:
    changes = _all_changes(api, "acme", mint(scope="lily:read"))
    export = scenario.export_by_name("acme")
    mine = [c for c in changes if c["qualified_name"] in (PII_COLUMN, GDPR_COLUMN)]
    assert mine
    for change in mine:
        assert change["attributes"]["description"] == REDACTED
        assert change["attributes"]["owner_users"] == REDACTED
        assert change["attributes"]["data_type"] == "VARCHAR"
        assert change["classifications"] == export[change["qualified_name"]]["classifications"]
    plain = [
        c
        for c in _all_changes(api, "acme", mint())
        if c["qualified_name"] in (PII_COLUMN, GDPR_COLUMN)
    ]
    assert all(c["attributes"]["description"] != REDACTED for c in plain)


def _is_sensitive(record: dict[str, Any]) -> bool:
    return any(c == "PII" or c.startswith(("PII:", "GDPR:")) for c in record["classifications"])


# --- 5. policies ---------------------------------------------------------------------------


def test_contractors_never_see_finance(scenario: Scenario, api: Api) -> None:
    export = scenario.export_by_name("acme")
    token = mint(groups=["contractors"])
    visible = {n for n in export if not re.search(POLICY_REGEX_FINANCE, n)}
    listed = api.all_assets("acme", token, limit=50)
    assert by_name(listed) == {n: _without_names(export[n], visible) for n in visible}
    # Not even a visible Process's inputs or outputs name a hidden record.
    referenced = {n for r in listed for n in (*r.get("inputs", ()), *r.get("outputs", ()))}
    assert D not in referenced and referenced <= visible
    assert api.all_assets("acme", token, qualified_name_prefix=FINANCE + "/") == []
    assert api.all_assets("acme", token, classification="PII:bank") == []
    for name in (D, FINANCE_PII_COLUMN, f"{FINANCE}/T00"):
        assert api.error(asset_path("acme", name), token, 404)["error"] == "not_found"
        assert api.error(lineage_path("acme", name), token, 404)["error"] == "not_found"
    # Lineage from C downstream stops at the FINANCE table.
    lineage = api.ok(lineage_path("acme", C), token, direction="downstream", depth=3)
    assert D not in names(lineage["nodes"])
    assert all(D not in (e["from"], e["to"]) for e in lineage["edges"])
    # Changes: none of FINANCE.
    changed = {c["qualified_name"] for c in _all_changes(api, "acme", token)}
    assert changed == visible
    # Groups the deny names only: a token of other groups (or none) sees FINANCE.
    assert api.ok(asset_path("acme", D), mint(groups=["staff"])) == export[D]


def _without_names(record: dict[str, Any], visible: set[str]) -> dict[str, Any]:
    """A record as a caller who sees only `visible` sees it: a Process's inputs and outputs
    that name hidden records left out."""
    if "inputs" not in record:
        return record
    return {
        **record,
        "inputs": [n for n in record["inputs"] if n in visible],
        "outputs": [n for n in record["outputs"] if n in visible],
    }


def test_analysts_on_acme_see_only_sales(scenario: Scenario, api: Api) -> None:
    export = scenario.export_by_name("acme")
    token = mint(groups=["analysts"])
    sales = {n for n in export if re.search(POLICY_REGEX_SALES, n)}
    assert ROOT not in sales and SALES not in sales  # "/SALES/" is searched, nothing more
    assert by_name(api.all_assets("acme", token, limit=50)) == {
        n: _without_names(export[n], sales) for n in sales
    }
    assert api.error(asset_path("acme", ROOT), token, 404)["error"] == "not_found"
    assert api.error(asset_path("acme", D), token, 404)["error"] == "not_found"
    assert api.ok(asset_path("acme", A), token) == export[A]
    changed = {c["qualified_name"] for c in _all_changes(api, "acme", token)}
    assert changed == sales
    # An analyst who is also a contractor: SALES only, and the deny still wins.
    both = mint(groups=["analysts", "contractors"])
    assert set(names(api.all_assets("acme", both, limit=1000))) == sales


def test_on_globex_only_the_global_deny_applies(scenario: Scenario, api: Api) -> None:
    export = scenario.export_by_name("globex")
    finance = {n for n in export if re.search(POLICY_REGEX_FINANCE, n)}
    assert finance and len(finance) < len(export)
    analysts = mint("globex", groups=["analysts"])
    assert by_name(api.all_assets("globex", analysts, limit=3)) == export
    contractors = mint("globex", groups=["contractors"])
    assert set(names(api.all_assets("globex", contractors, limit=3))) == set(export) - finance
    for name in finance:
        assert api.error(asset_path("globex", name), contractors, 404)["error"] == "not_found"


# --- 6. lineage ----------------------------------------------------------------------------


def _edge(process: str, source: str, target: str) -> dict[str, str]:
    return {"process": process, "from": source, "to": target}


def _sorted_edges(edges: list[dict[str, str]]) -> list[dict[str, str]]:
    for edge in edges:
        assert set(edge) == {"process", "from", "to"}, edge
    return sorted(edges, key=lambda e: (e["process"], e["from"], e["to"]))


def test_lineage_downstream_and_upstream_by_depth(scenario: Scenario, api: Api) -> None:
    export = scenario.export_by_name("acme")
    token = mint()

    def lineage(name: str, **params: Any) -> tuple[set[str], list[dict[str, str]]]:
        body = api.ok(lineage_path("acme", name), token, **params)
        assert set(body) == {"nodes", "edges"}
        for node in body["nodes"]:
            assert node == export[node["qualified_name"]]
        assert len(set(names(body["nodes"]))) == len(body["nodes"]), "a node twice"
        return set(names(body["nodes"])), _sorted_edges(body["edges"])

    nodes, edges = lineage(A, direction="downstream", depth=1)
    assert nodes == {A, P1, B}
    assert edges == [_edge(P1, A, B)]
    assert lineage(A) == (nodes, edges)  # downstream, depth 1 by default
    nodes, edges = lineage(A, direction="downstream", depth=2)
    assert nodes == {A, P1, B, P2, C}
    assert edges == _sorted_edges([_edge(P1, A, B), _edge(P2, B, C)])
    nodes, edges = lineage(C, direction="upstream", depth=2)
    assert nodes == {C, P2, B, P1, A}
    assert edges == _sorted_edges([_edge(P1, A, B), _edge(P2, B, C)])
    nodes, edges = lineage(C, direction="upstream", depth=10)
    assert nodes == {C, P2, B, P1, A}
    nodes, _ = lineage(A, direction="downstream", depth=10)
    assert nodes == {A, P1, B, P2, C, P3, D}
    nodes, edges = lineage(A, direction="upstream", depth=3)
    assert (nodes, edges) == ({A}, [])
    # Rest-of-path form, too.
    body = api.ok(f"/v1/tenants/acme/lineage/{A}", token, depth=2)
    assert set(names(body["nodes"])) == {A, P1, B, P2, C}
    assert api.error(lineage_path("acme", f"{SALES}/NOPE"), token, 404)["error"] == "not_found"


# --- 7. changes ----------------------------------------------------------------------------


def _all_changes(
    api: Api, tenant: str, token: str, since: int = 0, limit: int = 50
) -> list[dict[str, Any]]:
    return _changes_after(api, tenant, token, since, limit)[0]


def _changes_after(
    api: Api, tenant: str, token: str, since: int, limit: int = 50
) -> tuple[list[dict[str, Any]], int]:
    out: list[dict[str, Any]] = []
    for _ in range(1000):
        page = api.ok(f"/v1/tenants/{tenant}/changes", token, since=since, limit=limit)
        assert set(page) == {"changes", "next_since"}, set(page)
        assert isinstance(page["next_since"], int) and page["next_since"] >= since
        out += page["changes"]
        if page["next_since"] == since:
            assert page["changes"] == []
            return out, since
        since = page["next_since"]
    raise AssertionError("next_since never stopped moving")


def test_changes_page_through_the_log_then_return_only_what_is_new(
    scenario: Scenario, api: Api
) -> None:
    token = mint()
    export = scenario.export_by_name("acme")
    changes, next_since = _changes_after(api, "acme", token, 0)
    seqs = [c["seq"] for c in changes]
    assert seqs == sorted(set(seqs)) and seqs[0] >= 1, "seq not increasing"
    assert next_since >= seqs[-1]
    latest: dict[str, dict[str, Any]] = {}
    for change in changes:
        assert set(change) == CHANGE_FIELDS, set(change)
        assert change["change"] in {"created", "updated", "archived", "restored"}
        outside.rfc3339(change["changed_at"])
        latest[change["qualified_name"]] = change
    assert set(latest) == set(export)
    for name, change in latest.items():
        record = export[name]
        for key in ("type_name", "name", "status", "attributes", "classifications"):
            assert change[key] == record[key], (name, key)
    assert latest[DELETED]["change"] == "archived"

    # One record changed by a second backfill: exactly that change after next_since.
    before = export[CHANGED]
    event = _envelope(
        "acme",
        "Column",
        CHANGED,
        second=3000,
        attributes={**before["attributes"], "description": "changed by the second load"},
    )
    source = write_jsonl(scenario.root / f"acme-change-{uuid.uuid4().hex[:8]}.jsonl", [event])
    outside.lily_ok("backfill", "--tenant", "acme", "--source", str(source), env=scenario.env)
    after = scenario.export_by_name("acme")[CHANGED]
    assert after["attributes"]["description"] == "changed by the second load"
    new, newer_since = _changes_after(api, "acme", token, next_since)
    assert len(new) == 1, new
    (change,) = new
    assert change["qualified_name"] == CHANGED and change["change"] == "updated"
    assert change["seq"] > next_since and newer_since >= change["seq"]
    assert change["version"] > latest[CHANGED]["version"]
    assert change["attributes"] == after["attributes"]
    assert _changes_after(api, "acme", token, newer_since) == ([], newer_since)
    # The listing and the record show it as well.
    assert api.ok(asset_path("acme", CHANGED), token) == after


# --- 8. bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "params", "pointer"),
    [
        ("assets", {"limit": "1001"}, "/query/limit"),
        ("assets", {"limit": "0"}, "/query/limit"),
        ("assets", {"limit": "abc"}, "/query/limit"),
        ("assets", {"type": "Column"}, "/query/type"),
        ("assets", {"status": "GONE"}, "/query/status"),
        ("changes", {"since": "-1"}, "/query/since"),
        ("changes", {"since": "soon"}, "/query/since"),
        ("changes", {"limit": "1001"}, "/query/limit"),
        ("changes", {"after": "3"}, "/query/after"),
        ("lineage", {"depth": "0"}, "/query/depth"),
        ("lineage", {"depth": "11"}, "/query/depth"),
        ("lineage", {"depth": "two"}, "/query/depth"),
        ("lineage", {"direction": "sideways"}, "/query/direction"),
        ("lineage", {"hops": "2"}, "/query/hops"),
        ("asset", {"fields": "name"}, "/query/fields"),
    ],
)
def test_a_bad_query_parameter_is_400_naming_it(
    api: Api, route: str, params: dict[str, str], pointer: str
) -> None:
    path = {
        "assets": "/v1/tenants/acme/assets",
        "changes": "/v1/tenants/acme/changes",
        "lineage": lineage_path("acme", A),
        "asset": asset_path("acme", A),
    }[route]
    body = api.error(path, mint(), 400, params)
    assert body["error"] == "bad_parameter", body
    assert body.get("pointer") == pointer, body


def test_a_forged_or_foreign_cursor_is_400(api: Api) -> None:
    token = mint(["acme", "globex"])
    cursor = api.ok("/v1/tenants/acme/assets", token, limit=50)["next_cursor"]
    middle = len(cursor) // 2
    flipped = "A" if cursor[middle] != "A" else "B"
    forged = cursor[:middle] + flipped + cursor[middle + 1 :]
    for bad in (forged, cursor[:-4], "not-a-cursor", cursor + "x"):
        body = api.error("/v1/tenants/acme/assets", token, 400, {"cursor": bad, "limit": 50})
        assert body["error"] == "bad_cursor", (bad, body)
    foreign = api.ok("/v1/tenants/globex/assets", token, limit=1)["next_cursor"]
    assert foreign
    body = api.error("/v1/tenants/acme/assets", token, 400, {"cursor": foreign, "limit": 1})
    assert body["error"] == "bad_cursor", body
    # The genuine one still works.
    assert api.ok("/v1/tenants/acme/assets", token, limit=50, cursor=cursor)["assets"]


# --- 9. audit ------------------------------------------------------------------------------


def _action(path: str) -> str:
    route = path.split("/")[4].split("?")[0] if path.count("/") >= 4 else ""
    if route == "assets":
        return "assets.get" if path.count("/") >= 5 else "assets.list"
    return {"lineage": "lineage.read", "changes": "changes.read", "audit": "audit.read"}[route]


def _canonical_hash(entry: dict[str, Any]) -> str:
    rest = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(
        json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _check_chain(entries: list[dict[str, Any]]) -> None:
    prev = "0" * 64
    for seq, entry in enumerate(entries, 1):
        assert set(entry) == AUDIT_FIELDS, entry
        assert entry["seq"] == seq, (seq, entry)
        assert entry["prev_hash"] == prev, entry
        assert entry["hash"] == _canonical_hash(entry), entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]), entry
        outside.rfc3339(entry["time"])
        prev = entry["hash"]


def test_every_request_is_in_the_tenants_audit_log(scenario: Scenario, api: Api) -> None:
    # A few requests of every outcome, whatever ran before.
    api.get("/v1/tenants/acme/assets", None, {"limit": 1})
    api.get("/v1/tenants/acme/assets", mint(scope="lily:ingest"), {"limit": 1})
    api.get("/v1/tenants/acme/assets", mint("globex"), {"limit": 1})
    api.get(asset_path("acme", A), mint(sub="bob"))
    api.get(asset_path("acme", D), mint(sub="carol", groups=["contractors"]))
    api.get(lineage_path("acme", A), mint(sub="dave"))
    api.get("/v1/tenants/acme/changes", mint(sub="erin"), {"limit": 1})

    entries = outside.json_lines(
        outside.lily_ok("audit", "export", "--tenant", "acme", env=scenario.env)
    )
    _check_chain(entries)
    http = [e for e in entries if e["action"] in HTTP_ACTIONS]
    assert all(e["resource"].startswith("/v1/tenants/acme/") for e in http)
    sent = [s for s in api.sent if s.tenant == "acme"]
    assert len(http) == len(sent), (len(http), len(sent))
    for entry, request in zip(http, sent, strict=True):
        assert entry["resource"] in (request.path, unquote(request.path)), (entry, request)
        assert entry["status"] == request.status, (entry, request)
        assert entry["sub"] == request.sub, (entry, request)
        assert entry["action"] == _action(request.path), (entry, request)
        if request.status in (401, 403):
            assert entry["decision"] == "deny", entry
        if request.status == 200:
            assert entry["decision"] == "allow", entry

    verify = outside.lily("audit", "verify", "--tenant", "acme", env=scenario.env)
    assert verify.returncode == 0, verify.stderr
    summary = outside.strict_json(verify.stdout)
    assert summary == {"tenant": "acme", "entries": len(entries), "head": entries[-1]["hash"]}


def test_the_audit_route_needs_the_audit_scope_and_serves_the_log(
    scenario: Scenario, api: Api
) -> None:
    body = api.error("/v1/tenants/acme/audit", mint(scope="lily:read lily:read:pii"), 403)
    assert body["error"] == "insufficient_scope", body
    auditor = mint(scope="lily:audit", sub="auditor")
    served: list[dict[str, Any]] = []
    since = 0
    while True:
        page = api.ok("/v1/tenants/acme/audit", auditor, since=since, limit=1000)
        assert set(page) == {"entries", "next_since"}
        served += page["entries"]
        if len(page["entries"]) < 1000:
            break
        since = page["next_since"]
    exported = outside.json_lines(
        outside.lily_ok("audit", "export", "--tenant", "acme", env=scenario.env)
    )
    assert served == exported[: len(served)]
    assert len(exported) - len(served) <= 1  # this request's own entry, at most
    assert exported[-1]["action"] == "audit.read" and exported[-1]["sub"] == "auditor"
    later = api.ok("/v1/tenants/acme/audit", auditor, since=served[-1]["seq"])
    assert [e["seq"] for e in later["entries"]][:1] == [served[-1]["seq"] + 1]


def test_a_changed_audit_entry_fails_verification_naming_its_seq(
    scenario: Scenario, api: Api
) -> None:
    for _ in range(5):
        api.get("/v1/tenants/acme/assets", mint(), {"limit": 1})
    log = scenario.home / "audit" / "acme.jsonl"
    original = log.read_bytes()
    lines = original.decode().splitlines(keepends=True)
    assert len(lines) >= 5
    target = 3
    entry = json.loads(lines[target - 1])
    assert entry["seq"] == target
    entry["status"] = 200 if entry["status"] != 200 else 404
    lines[target - 1] = json.dumps(entry) + "\n"
    try:
        log.write_text("".join(lines))
        verify = outside.lily("audit", "verify", "--tenant", "acme", env=scenario.env)
        assert verify.returncode == 1, (verify.returncode, verify.stdout, verify.stderr)
        assert verify.stderr.count("\n") == 1, verify.stderr
        assert re.search(rf"\b{target}\b", verify.stderr), verify.stderr
    finally:
        log.write_bytes(original)
    assert outside.lily("audit", "verify", "--tenant", "acme", env=scenario.env).returncode == 0


# --- RS256 tokens from a JWKS issuer -------------------------------------------------------


class JwksIssuer:
    """A loopback OAuth2 issuer serving its JWKS."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid="contract-key-1", alg="RS256", use="sig")
        body = json.dumps({"keys": [jwk]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        port = self.server.server_address[1]
        self.issuer = f"http://127.0.0.1:{port}/"
        self.jwks_url = f"http://127.0.0.1:{port}/.well-known/jwks.json"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_rs256_tokens_from_a_jwks_issuer(scenario: Scenario) -> None:
    issuer = JwksIssuer()
    env = {
        **{k: v for k, v in scenario.env.items() if k != "LILY_JWT_HS256_SECRET"},
        "LILY_JWT_JWKS_URL": issuer.jwks_url,
        "LILY_JWT_ISSUER": issuer.issuer,
    }
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def rs256(key: Any = issuer.key, iss: str = issuer.issuer, **kwargs: Any) -> str:
        return mint(
            key=key,
            algorithm="RS256",
            headers={"kid": "contract-key-1"},
            extra={"iss": iss},
            **kwargs,
        )

    try:
        with outside.processes() as started:
            proc, url = start_server(env, scenario.root / "serve-rs256.log")
            started.append(proc)
            rs = Api(url)
            export = scenario.export_by_name("acme")
            listed = rs.all_assets("acme", rs256(), limit=1000)
            assert by_name(listed) == export
            hidden = rs.all_assets("acme", rs256(groups=["contractors"]), limit=1000)
            assert not any(re.search(POLICY_REGEX_FINANCE, n) for n in names(hidden))
            for bad in (
                rs256(key=other_key),  # not the issuer's key
                rs256(iss="http://127.0.0.1:9/elsewhere/"),  # another issuer
                mint(),  # HS256: off on this server
            ):
                assert error_body(rs.get("/v1/tenants/acme/assets", bad), 401)["error"] == (
                    "unauthenticated"
                )
            assert error_body(rs.get("/v1/tenants/acme/assets", rs256(tenant="globex")), 403)
            # Its requests are in the same audit log, the chain whole.
            entries = outside.json_lines(
                outside.lily_ok("audit", "export", "--tenant", "acme", env=scenario.env)
            )
            _check_chain(entries)
            assert entries[-1]["status"] == 403 and entries[-1]["sub"] == "alice"
            rs.client.close()
        # The other receiver's requests count as requests to acme for the audit test.
        for request in rs.sent:
            request.sub = "" if request.status == 401 else "alice"
        scenario.api.sent += rs.sent
    finally:
        issuer.close()


# --- 10. configuration errors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "mention"),
    [
        pytest.param({"effect": "deny", "qualified_name": "(["}, "qualified_name", id="bad-regex"),
        pytest.param({"effect": "deny", "colour": "red"}, "colour", id="unknown-field"),
        pytest.param({"effect": "maybe"}, "effect", id="bad-effect"),
    ],
)
def test_a_bad_policy_is_refused_at_start_naming_it(
    tmp_path: Path, policy: dict[str, Any], mention: str
) -> None:
    name = "broken-policy-for-the-test"
    config = write_config(tmp_path / "lily.yaml", [{"name": name, **policy}])
    env = outside.clean_environment(
        LILY_HOME=str(tmp_path / "home"),
        LILY_CONFIG=str(config),
        LILY_JWT_HS256_SECRET=JWT_SECRET,
    )
    for args in (
        ["serve", "--host", "127.0.0.1", "--port", str(outside.free_port())],
        ["hub", "export", "--tenant", "acme"],
    ):
        started = time.monotonic()
        proc = outside.lily(*args, env=env, timeout=30)
        assert proc.returncode not in (0, -9), (args, proc.returncode, proc.stderr[-2000:])
        assert time.monotonic() - started < 20
        assert proc.stderr.startswith("lily: error:"), proc.stderr[-2000:]
        assert proc.stderr.count("\n") == 1, proc.stderr[-2000:]
        assert name in proc.stderr and mention in proc.stderr, proc.stderr
