"""`lily token`: mint an HS256 bearer token for the receiver (local development),
and the local stack's secret to sign it with."""

from __future__ import annotations

import argparse
import os
import time

from lily_dagster.cli.common import CliError, Subparsers, load_settings, tenant_arg
from lily_dagster.settings import Settings, jwt_environment


def register(sub: Subparsers) -> None:
    token = sub.add_parser("token", help="mint an HS256 bearer token (local development)")
    token.add_argument("--tenant", required=True, action="append", type=tenant_arg)
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    token.add_argument(
        "--scope",
        default="lily:ingest",
        help="space-separated scopes: lily:ingest, lily:read, lily:read:pii, lily:audit",
    )
    token.add_argument(
        "--group", action="append", default=[], help="a `groups` claim entry (repeatable)"
    )
    token.add_argument("--sub", default="lily-cli", help="the token's subject (default lily-cli)")
    token.set_defaults(func=cmd_token)


def dev_jwt_secret(settings: Settings) -> str:
    """The local stack's HS256 secret, made once under $LILY_HOME (development only)."""
    import secrets

    path = settings.home / "dev-jwt-secret"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def mint_token(
    tenants: list[str],
    ttl_s: int,
    scope: str = "lily:ingest",
    groups: list[str] | None = None,
    subject: str = "lily-cli",
) -> str:
    import jwt

    from lily_dagster.lib.receiver.auth import auth_config_from_env

    # The receiver's own check: a token it would refuse to verify is not minted.
    auth = auth_config_from_env(jwt_environment())
    secret = auth.hs256_secret
    if not secret:
        raise CliError("LILY_JWT_HS256_SECRET is not set (make run sets one for the local stack)")
    now = int(time.time())
    claims = {
        "sub": subject,
        "scope": scope,
        "tenants": tenants,
        "aud": auth.audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
    }
    if auth.issuer:
        claims["iss"] = auth.issuer
    if groups:
        claims["groups"] = groups
    return jwt.encode(claims, secret, algorithm="HS256")


def cmd_token(args: argparse.Namespace) -> int:
    settings = load_settings(check_keys=False)  # reads no tenant data
    no_secret = "LILY_JWT_HS256_SECRET" not in jwt_environment()
    if no_secret and (settings.home / "dev-jwt-secret").exists():
        os.environ["LILY_JWT_HS256_SECRET"] = dev_jwt_secret(settings)
    print(mint_token(args.tenant, args.ttl, args.scope, args.group, args.sub))
    return 0
