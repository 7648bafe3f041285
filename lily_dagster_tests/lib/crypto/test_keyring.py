"""Per-tenant data keys under LILY_KMS=local: made on first use, wrapped by the master key,
refused in one line (and nothing written) when the master key is not the one that wrapped
them, re-wrapped by a rotation, destroyed by a tenant deletion."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from lily_dagster.lib.crypto import CryptoError, KeyRing, keyring
from lily_dagster.lib.crypto.kms import key_encryption_key
from lily_dagster.settings import ConfigError, Settings

KEY_A = "a" * 64
KEY_B = "b" * 64


def ring(home: Path, master: str | None = None, kms: str = "local") -> KeyRing:
    env = {"LILY_MASTER_KEY": master} if master else {}
    return KeyRing(home / "keys", key_encryption_key(kms, env, home))


def tree(home: Path) -> dict[str, str]:
    """Every file under `home` with the hash of its bytes."""
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file()
    }


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_use_makes_a_key_file_and_the_generated_master_key_private(tmp_path: Path) -> None:
    keys = ring(tmp_path)
    assert not (tmp_path / "keys").exists()  # nothing made until a tenant needs a key
    sealed = keys.cipher("acme").seal_text("the warehouse")
    assert sealed is not None and "warehouse" not in sealed
    assert mode(tmp_path / "keys" / "master.key") == 0o600
    key_file = tmp_path / "keys" / "tenants" / "acme.json"
    assert mode(key_file) == 0o600 and mode(tmp_path / "keys") == 0o700
    stored = json.loads(key_file.read_text())
    assert set(stored) == {"format", "tenant", "kek", "wrapped", "wrapped_at"}
    # Another process (a fresh ring) opens what this one sealed.
    assert ring(tmp_path).cipher("acme").open_text(sealed) == "the warehouse"


def test_each_tenant_has_its_own_data_key(tmp_path: Path) -> None:
    keys = ring(tmp_path, KEY_A)
    sealed = keys.cipher("acme").seal_text("acme only")
    with pytest.raises(CryptoError):
        keys.cipher("globex").open_text(sealed)


def test_a_wrong_master_key_is_refused_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    ring(tmp_path, KEY_A).cipher("acme")
    before = tree(tmp_path)
    wrong = ring(tmp_path, KEY_B)
    with pytest.raises(ConfigError) as check:
        wrong.check()
    # A new tenant gets no key wrapped by the wrong master key either.
    with pytest.raises(ConfigError) as create:
        wrong.cipher("globex")
    for error in (check.value, create.value):
        assert "LILY_MASTER_KEY is not the key" in str(error) and "\n" not in str(error)
    assert tree(tmp_path) == before


def test_a_missing_master_key_is_named_and_no_key_is_generated(tmp_path: Path) -> None:
    ring(tmp_path, KEY_A).cipher("acme")
    before = tree(tmp_path)
    unset = ring(tmp_path)
    with pytest.raises(ConfigError, match="LILY_MASTER_KEY is not set"):
        unset.check()
    with pytest.raises(ConfigError, match="LILY_MASTER_KEY is not set"):
        unset.cipher("acme")
    assert tree(tmp_path) == before  # no master.key appeared


def test_a_data_key_copied_to_another_tenant_does_not_unwrap(tmp_path: Path) -> None:
    keys = ring(tmp_path, KEY_A)
    keys.cipher("acme")
    keys_dir = tmp_path / "keys" / "tenants"
    stolen = json.loads((keys_dir / "acme.json").read_text())
    (keys_dir / "globex.json").write_text(json.dumps({**stolen, "tenant": "globex"}))
    with pytest.raises(ConfigError, match="does not unwrap tenant 'globex'"):
        ring(tmp_path, KEY_A).cipher("globex")


def test_rotation_rewraps_the_data_key_and_the_data_still_opens(tmp_path: Path) -> None:
    sealed = ring(tmp_path, KEY_A).cipher("acme").seal_text("kept")
    before = json.loads((tmp_path / "keys" / "tenants" / "acme.json").read_text())
    new = ring(tmp_path, KEY_B)
    result = new.rotate("acme", previous=ring(tmp_path, KEY_A).kek)
    assert result == {"tenant": "acme", "from": before["kek"], "to": new.kek.key_id}
    after = json.loads((tmp_path / "keys" / "tenants" / "acme.json").read_text())
    assert after["wrapped"] != before["wrapped"] and after["kek"] == new.kek.key_id
    fresh = ring(tmp_path, KEY_B)
    fresh.check()
    assert fresh.cipher("acme").open_text(sealed) == "kept"
    with pytest.raises(ConfigError):
        ring(tmp_path, KEY_A).check()  # the old key is no longer the one


def test_a_running_process_sees_a_rotation_by_another(tmp_path: Path) -> None:
    running = ring(tmp_path, KEY_A)
    sealed = running.cipher("acme").seal_text("still here")
    ring(tmp_path, KEY_A).rotate("acme")  # same master key: re-wrapped only
    assert running.cipher("acme").open_text(sealed) == "still here"


def test_destroy_leaves_nothing_that_opens_the_data(tmp_path: Path) -> None:
    keys = ring(tmp_path, KEY_A)
    sealed = keys.cipher("acme").seal_text("gone")
    assert keys.destroy("acme") and not keys.destroy("acme")
    assert keys.tenants() == []
    # A new key is made on next use; it does not open what the destroyed one sealed.
    with pytest.raises(CryptoError):
        ring(tmp_path, KEY_A).cipher("acme").open_text(sealed)


def test_bad_configuration_names_the_variable(tmp_path: Path) -> None:
    for env, expected in (
        ({"LILY_MASTER_KEY": "abc"}, "LILY_MASTER_KEY: expected 32 bytes"),
        ({"LILY_KMS": "bogus"}, "LILY_KMS='bogus': unknown key service"),
        ({"LILY_KMS": "local:x"}, "LILY_KMS=local takes no argument"),
        ({"LILY_KMS": "aws-kms"}, "LILY_KMS=aws-kms needs the key"),
    ):
        settings = Settings.resolve({"LILY_HOME": str(tmp_path), **env})
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
            keyring(settings)
    assert not (tmp_path / "keys").exists()


def test_with_encryption_off_nothing_is_sealed_but_sealed_data_opens(tmp_path: Path) -> None:
    sealed = ring(tmp_path, KEY_A).cipher("acme").seal_text("sealed before")
    env = {"LILY_HOME": str(tmp_path), "LILY_MASTER_KEY": KEY_A, "LILY_ENCRYPTION": "off"}
    off = keyring(Settings.resolve(env))
    assert off.cipher("acme").open_text(sealed) == "sealed before"
    assert off.cipher("acme").seal_text("plain") == "plain"
    assert off.cipher("globex").seal_text("plain") == "plain"
    assert off.tenants() == ["acme"]  # no key made for a tenant while off
