"""Fixtures for the webhook receiver: real keys, a real JWKS endpoint, a real uvicorn server.

Nothing is mocked: tokens are signed with PyJWT by keys generated here, the RS256 issuer keys
are served over HTTP from a local server, and every request goes through uvicorn on a free
loopback port.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import polars as pl
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from prometheus_client.parser import text_string_to_metric_families

from lily_dagster.api.app import create_app
from lily_dagster.lib.broker import free_port
from lily_dagster.lib.crypto import ciphers_of
from lily_dagster.lib.inbox import StoredEvent
from lily_dagster.lib.inbox.sqlite import SqliteInbox
from lily_dagster.lib.quarantine import QuarantineStore
from lily_dagster.settings import Settings
from lily_dagster_tests.support import envelopes

HS256_SECRET = "hs256-test-secret-0123456789abcdef-lily"  # >= 32 characters
RSA_KID = "lily-test-rsa-1"
AUDIENCE = "lily"
_ids = itertools.count()


def unique(prefix: str = "evt") -> str:
    """An id no other test in this process uses."""
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def envelope(
    event_id: str | None = None,
    qualified_name: str | None = None,
    *,
    attributes: dict[str, Any] | None = None,
    event_time: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A valid envelope no other test sends: a fresh event id and table, an hour old, with a
    description and classifications; `fields` as the shared builder's."""
    return envelopes.envelope(
        qualified_name or f"{envelopes.SCHEMA}/{unique('T')}",
        event_id=event_id or unique(),
        event_time=event_time or iso(datetime.now(UTC) - timedelta(hours=1)),
        attributes=attributes if attributes is not None else {"description": "d"},
        **{"source": "test", "classifications": [], **fields},
    )


# --- keys and tokens ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    rsa_other: rsa.RSAPrivateKey  # an attacker's key
    ec: ec.EllipticCurvePrivateKey
    ec_other: ec.EllipticCurvePrivateKey

    def ec_public_pem(self) -> str:
        return (
            self.ec.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


if TYPE_CHECKING:
    from lily_dagster_tests.webhook.vendor_setup import VendorSecrets


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa_other=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        ec_other=ec.generate_private_key(ec.SECP256R1()),
    )


def claims(
    tenant: str | None = "acme",
    scope: str | None = "lily:ingest",
    *,
    lifetime_s: float = 600,
    **extra: Any,
) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {
        "sub": "test-client",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + int(lifetime_s),
        "jti": unique("jti"),  # every token differs, so the verifier's cache never answers
    }
    if tenant is not None:
        out["tenant"] = tenant
    if scope is not None:
        out["scope"] = scope
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class Tokens:
    keys: Keys

    def hs256(self, payload: dict[str, Any] | None = None, secret: str = HS256_SECRET) -> str:
        return jwt.encode(payload or claims(), secret, algorithm="HS256")

    def rs256(self, payload: dict[str, Any] | None = None, *, forged: bool = False) -> str:
        key = self.keys.rsa_other if forged else self.keys.rsa
        return jwt.encode(payload or claims(), key, algorithm="RS256", headers={"kid": RSA_KID})

    def es256(self, payload: dict[str, Any] | None = None, *, forged: bool = False) -> str:
        key = self.keys.ec_other if forged else self.keys.ec
        return jwt.encode(payload or claims(), key, algorithm="ES256")


@pytest.fixture(scope="session")
def tokens(keys: Keys) -> Tokens:
    return Tokens(keys)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def jwks_url(keys: Keys) -> Iterator[str]:
    """The issuer's JWKS document, served over real HTTP."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys.rsa.public_key()))
    document = json.dumps({"keys": [{**jwk, "kid": RSA_KID, "alg": "RS256", "use": "sig"}]})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/.well-known/jwks.json":
                self.send_error(404)
                return
            body = document.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()
    thread.join(5)


# --- the receiver -------------------------------------------------------------------------------


_ENV_TO_CLEAR = (
    "LILY_JWT_HS256_SECRET",
    "LILY_JWT_JWKS_URL",
    "LILY_JWT_PUBLIC_KEY_FILE",
    "LILY_JWT_ISSUER",
    "LILY_JWT_AUDIENCE",
    "LILY_WEBHOOK_MAX_BODY_BYTES",
    "LILY_WEBHOOK_RATE_PER_S",
    "LILY_MAX_EVENT_BYTES",
    "LILY_MAX_BATCH_EVENTS",
)


@pytest.fixture
def webhook_env(lily_home: Path, monkeypatch: pytest.MonkeyPatch, jwks_url: str) -> Path:
    """An isolated LILY_HOME with HS256 and RS256 (JWKS) token issuers configured."""
    for name in _ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LILY_JWT_HS256_SECRET", HS256_SECRET)
    monkeypatch.setenv("LILY_JWT_JWKS_URL", jwks_url)
    return lily_home


class ServerErrors(logging.Handler):
    """Keeps the receiver's logged errors (e.g. "Exception in ASGI application") unformatted.

    Formatting a traceback in the server thread while pytest formats a failure in the main
    thread trips a CPython 3.11 bug (both call ast.parse: "AST constructor recursion depth
    mismatch" INTERNALERROR), so the records are kept as one-line texts, never formatted."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.errors.append(f"{record.getMessage()}: {exc!r}"[:500])


@dataclass
class Live:
    """A running receiver and ways to look at what it stored."""

    url: str
    settings: Settings
    client: httpx.Client
    server_log: ServerErrors

    def post_events(
        self,
        tenant: str,
        body: Any,
        token: str | None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            all_headers.update(bearer(token))
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(
            f"/v1/tenants/{tenant}/events", content=content, headers=all_headers
        )

    def sealed_inbox(self) -> SqliteInbox:
        """The receiver's inbox, opened with the tenants' keys (its payloads are sealed)."""
        return SqliteInbox(self.settings.inbox_path, ciphers_of(self.settings))

    def inbox(self) -> list[StoredEvent]:
        return self.sealed_inbox().read_after(0, 100_000)

    def last_seq(self) -> int:
        return SqliteInbox(self.settings.inbox_path).last_seq()

    def inbox_after(self, seq: int) -> list[StoredEvent]:
        return self.sealed_inbox().read_after(seq, 100_000)

    def inbox_by_id(self) -> dict[str, dict[str, Any]]:
        return {e.event_id: json.loads(e.payload) for e in self.inbox()}

    def quarantine(self, tenant: str = "acme") -> pl.DataFrame:
        return QuarantineStore.from_settings(self.settings).read(tenant)

    def quarantine_tenants(self) -> list[str]:
        return QuarantineStore(self.settings.quarantine_dir).tenants()

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        response = self.client.get("/metrics")
        assert response.status_code == 200
        out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and wanted <= ls)


@contextlib.contextmanager
def live_server(settings: Settings | None = None) -> Iterator[Live]:
    """`create_app` on a real uvicorn server on a free loopback port."""
    settings = settings or Settings.from_env()
    app = create_app(settings)
    port = free_port()
    server_log = ServerErrors()
    error_logger = logging.getLogger("uvicorn.error")
    error_logger.addHandler(server_log)
    propagate = error_logger.propagate
    error_logger.propagate = False
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            log_config=None,  # no handler that formats tracebacks (see ServerErrors)
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=30)
    deadline = time.monotonic() + 20
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            error_logger.removeHandler(server_log)
            error_logger.propagate = propagate
            raise RuntimeError(f"webhook receiver did not start on port {port}")
        time.sleep(0.02)
    try:
        yield Live(url=url, settings=settings, client=client, server_log=server_log)
    finally:
        client.close()
        server.should_exit = True
        thread.join(10)
        app.state.receiver.inbox.close()
        error_logger.removeHandler(server_log)
        error_logger.propagate = propagate


@pytest.fixture
def serve(webhook_env: Path) -> Iterator[Callable[[], Live]]:
    """Start a receiver with the environment as it is now (set env first, then call)."""
    with contextlib.ExitStack() as stack:

        def start() -> Live:
            return stack.enter_context(live_server())

        yield start


@pytest.fixture
def live(serve: Callable[[], Live]) -> Live:
    return serve()


@pytest.fixture
def vendor_secrets(
    webhook_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> VendorSecrets:
    """Every vendor configured for tenant acme in a LILY_CONFIG file, secrets in env."""
    from lily_dagster_tests.webhook.vendor_setup import configure_vendors

    return configure_vendors(tmp_path, monkeypatch)


@pytest.fixture
def vendor_live(vendor_secrets: VendorSecrets, serve: Callable[[], Live]) -> Live:
    """A receiver started after the vendors are configured."""
    return serve()
