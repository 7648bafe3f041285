"""`lily keys`: the tenants' data keys (docs/encryption.md). `status` says which key wraps
each (never key material); `rotate` re-wraps data keys with the configured key-encryption
key, from the previous one (LILY_PREVIOUS_MASTER_KEY / LILY_PREVIOUS_KMS) when the master
key changes. The data itself is untouched: a rotation costs a KMS call per tenant."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from lily_dagster.cli.common import (
    CliError,
    Subparsers,
    command_group,
    load_settings,
    print_json,
    tenant_arg,
)
from lily_dagster.settings import ConfigError, Settings

if TYPE_CHECKING:
    from lily_dagster.lib.crypto import KeyRing
    from lily_dagster.lib.crypto.kms import KeyEncryptionKey


def register(sub: Subparsers) -> None:
    keys = command_group(sub, "keys", "the tenants' data keys", dest="keys_command")
    status = keys.add_parser("status", help="which key wraps each tenant's data key (JSON)")
    status.set_defaults(func=cmd_keys_status)
    rotate = keys.add_parser(
        "rotate",
        help="re-wrap data keys with the configured key-encryption key (LILY_KMS / "
        "LILY_MASTER_KEY); the previous one in LILY_PREVIOUS_MASTER_KEY or LILY_PREVIOUS_KMS",
    )
    which = rotate.add_mutually_exclusive_group(required=True)
    which.add_argument("--tenant", type=tenant_arg, help="one tenant's data key")
    which.add_argument("--all", action="store_true", help="every tenant's data key")
    rotate.set_defaults(func=cmd_keys_rotate)


def cmd_keys_status(args: argparse.Namespace) -> int:
    from lily_dagster.lib.crypto import keyring
    from lily_dagster.lib.crypto.kms.local import NOT_GENERATED

    # No check: this is what one runs to see why the check fails.
    settings = load_settings(check_keys=False)
    ring = keyring(settings)
    print_json(
        {
            "encryption": "on" if settings.encryption else "off",
            "kms": settings.kms,
            "key_id": None if ring.kek.key_id == NOT_GENERATED else ring.kek.key_id,
            "tenants": [ring.status(tenant) for tenant in ring.tenants()],
        }
    )
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from lily_dagster.lib.access.decision import Action
    from lily_dagster.lib.audit import operator_action
    from lily_dagster.lib.crypto import KmsUnavailableError, keyring

    # Not checked at start: the data keys may be wrapped by the previous key.
    settings = load_settings(check_keys=False)
    ring = keyring(settings)
    tenants = ring.tenants() if args.all else [args.tenant]
    if not args.all and args.tenant not in ring.tenants():
        raise CliError(f"tenant {args.tenant!r} has no data key under {settings.keys_dir}")
    unwrapping = _unwrapping_keys(settings, ring, tenants)
    rotated: list[dict[str, Any]] = []
    for tenant in tenants:
        try:
            with operator_action(settings, tenant, Action.KEYS_ROTATE, f"keys/{tenant}"):
                rotated.append(ring.rotate(tenant, unwrapping[tenant]))
        except KmsUnavailableError as exc:  # each rotation is whole: run the command again
            done = [r["tenant"] for r in rotated]
            raise CliError(
                f"key service unavailable at tenant {tenant!r}: {exc}; rotated: {done}"
            ) from None
    print_json({"rotated": rotated})
    return 0


def _unwrapping_keys(
    settings: Settings, ring: KeyRing, tenants: list[str]
) -> dict[str, KeyEncryptionKey | None]:
    """The key that unwraps each tenant's data key (None: the configured one), every
    tenant checked before any is rotated: a key no given key wrapped stops the command."""
    previous = _previous_keys(settings, ring)
    unwrapping: dict[str, KeyEncryptionKey | None] = {}
    for tenant in tenants:
        wrapped_by = ring.status(tenant)["kek"]
        if wrapped_by != ring.kek.key_id and wrapped_by not in previous:
            given = ", ".join(sorted(previous)) or "none"
            raise ConfigError(
                f"tenant {tenant!r}'s data key is wrapped by {wrapped_by}: neither the "
                f"configured key ({ring.kek.key_id}) nor a previous one ({given}); set "
                "LILY_PREVIOUS_MASTER_KEY or LILY_PREVIOUS_KMS to the key that wrapped it"
            )
        unwrapping[tenant] = previous.get(wrapped_by)
    return unwrapping


def _previous_keys(settings: Settings, ring: KeyRing) -> dict[str, KeyEncryptionKey]:
    """By key id: the key in LILY_PREVIOUS_KMS / LILY_PREVIOUS_MASTER_KEY, and the generated
    $LILY_HOME/keys/master.key when LILY_MASTER_KEY now replaces it."""
    from lily_dagster.lib.crypto import kek_of
    from lily_dagster.lib.crypto.kms.local import NOT_GENERATED

    found: dict[str, KeyEncryptionKey] = {}
    if settings.previous_kms or settings.previous_master_key:
        try:
            kek = kek_of(settings, settings.previous_kms or "local", settings.previous_master_key)
        except ConfigError as exc:  # name the variables the user set
            raise ConfigError(f"previous key: {_renamed(str(exc))}") from None
        found[kek.key_id] = kek
    if settings.kms == "local" and settings.master_key and not settings.previous_master_key:
        generated = kek_of(settings, "local", None)
        found.setdefault(generated.key_id, generated)
    return {
        key_id: kek
        for key_id, kek in found.items()
        if key_id not in (ring.kek.key_id, NOT_GENERATED)
    }


def _renamed(message: str) -> str:
    return message.replace("LILY_MASTER_KEY", "LILY_PREVIOUS_MASTER_KEY").replace(
        "LILY_KMS", "LILY_PREVIOUS_KMS"
    )
