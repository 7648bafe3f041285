"""OAuth2 bearer tokens (JWT) for the receiver's tenant routes (CONTRACT.md §4, §6), verified
with PyJWT.

RS256/ES256 tokens are checked against the issuer's JWKS (LILY_JWT_JWKS_URL) or a PEM public
key (LILY_JWT_PUBLIC_KEY_FILE); HS256 against LILY_JWT_HS256_SECRET (local development).
`exp` is required; `nbf`, `iss` (when LILY_JWT_ISSUER is set) and `aud` are checked.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from lily_dagster.lib.access.decision import Principal
from lily_dagster.lib.receiver.errors import unauthenticated

ASYMMETRIC_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


@dataclass(frozen=True)
class AuthConfig:
    hs256_secret: str | None = None
    jwks_url: str | None = None
    public_key_pem: str | None = None
    issuer: str | None = None
    audience: str = "lily"
    leeway_s: float = 30.0

    @property
    def enabled(self) -> bool:
        return bool(self.hs256_secret or self.jwks_url or self.public_key_pem)


def auth_config_from_env(env: dict[str, str]) -> AuthConfig:
    from lily_dagster.settings import ConfigError

    key_file = env.get("LILY_JWT_PUBLIC_KEY_FILE")
    pem = None
    if key_file:
        try:
            pem = Path(key_file).read_text()
        except OSError as exc:
            raise ConfigError(f"LILY_JWT_PUBLIC_KEY_FILE={key_file}: {exc.strerror}") from None
        if "PUBLIC KEY" not in pem:
            raise ConfigError(f"LILY_JWT_PUBLIC_KEY_FILE={key_file}: not a PEM public key")
    jwks = env.get("LILY_JWT_JWKS_URL") or None
    if jwks and not jwks.startswith(("https://", "http://")):
        raise ConfigError(f"LILY_JWT_JWKS_URL={jwks!r} is not an http(s) URL")
    secret = env.get("LILY_JWT_HS256_SECRET") or None
    if secret is not None and len(secret) < 32:
        raise ConfigError("LILY_JWT_HS256_SECRET must be at least 32 characters")
    return AuthConfig(
        hs256_secret=secret,
        jwks_url=jwks,
        public_key_pem=pem,
        issuer=env.get("LILY_JWT_ISSUER") or None,
        audience=env.get("LILY_JWT_AUDIENCE") or "lily",
    )


class TokenVerifier:
    """Verifies bearer tokens; a verified token is cached until it expires (bounded)."""

    def __init__(self, config: AuthConfig, cache_size: int = 10_000) -> None:
        self.config = config
        self._jwks = (
            jwt.PyJWKClient(config.jwks_url, cache_keys=True, lifespan=300)
            if config.jwks_url
            else None
        )
        self._cache: dict[str, Principal] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def verify(self, authorization: str | None) -> Principal:
        if not self.config.enabled:
            raise unauthenticated("no token issuer is configured (set LILY_JWT_* variables)")
        if not authorization:
            raise unauthenticated("missing Authorization: Bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("Authorization must be 'Bearer <token>'")
        token = token.strip()
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None and cached.expires_at > now:
            return cached
        principal = self._decode(token)
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[token] = principal
        return principal

    def _key_and_algorithms(self, token: str) -> tuple[Any, list[str]]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise unauthenticated(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if alg == "HS256":
            if not self.config.hs256_secret:
                raise unauthenticated("HS256 tokens are not accepted here")
            return self.config.hs256_secret, ["HS256"]
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise unauthenticated(f"token algorithm {alg!r} is not accepted")
        if self._jwks is not None:
            try:
                return self._jwks.get_signing_key_from_jwt(token).key, [alg]
            except jwt.PyJWKClientError as exc:
                raise unauthenticated(f"no issuer key for this token: {exc}") from None
        if self.config.public_key_pem:
            return self.config.public_key_pem, [alg]
        raise unauthenticated("asymmetric tokens are not accepted here (no JWKS or public key)")

    def _decode(self, token: str) -> Principal:
        key, algorithms = self._key_and_algorithms(token)
        required = ["exp", "iss"] if self.config.issuer else ["exp"]
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_s,
                options={"require": required, "verify_aud": True},
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated("token expired") from None
        except jwt.ImmatureSignatureError:
            raise unauthenticated("token not yet valid (nbf)") from None
        except jwt.InvalidAudienceError:
            raise unauthenticated(f"token audience is not {self.config.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise unauthenticated("token issuer is not trusted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthenticated(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise unauthenticated(f"invalid token: {exc}") from None
        return principal_of(claims)


def principal_of(claims: dict[str, Any]) -> Principal:
    """The verified claims as a principal: `sub`, `scope` (space-separated), `tenant` or
    `tenants`, `groups` (a list; anything else names no group)."""
    scope = claims.get("scope", "")
    scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
    tenants: set[str] = set()
    if isinstance(claims.get("tenant"), str):
        tenants.add(claims["tenant"])
    if isinstance(claims.get("tenants"), list):
        tenants.update(t for t in claims["tenants"] if isinstance(t, str))
    # "*" is the operator's own wildcard: a token naming it names no tenant.
    tenants.discard("*")
    groups = claims.get("groups")
    return Principal(
        subject=str(claims.get("sub", "")),
        tenants=frozenset(tenants),
        scopes=scopes,
        expires_at=float(claims["exp"]),
        groups=frozenset(g for g in groups if isinstance(g, str))
        if isinstance(groups, list)
        else frozenset(),
    )
