"""LILY_KMS=aws-kms against a real KMS API on loopback (moto's server over HTTP, reached
through AWS_ENDPOINT_URL as boto3 reads it; nothing patched)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from lily_dagster.lib.broker import free_port
from lily_dagster.lib.crypto import KeyRing, KmsUnavailableError, keyring
from lily_dagster.lib.crypto.kms import key_encryption_key
from lily_dagster.settings import ConfigError, Settings
from lily_dagster_tests.support.kms import create_key, unique_alias, use_kms

LOCAL_KEY = "c" * 64


@pytest.fixture
def kms(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The moto endpoint, with the environment boto3 reads set for the test."""
    use_kms(monkeypatch, s3_endpoint)
    return s3_endpoint


def aws_ring(home: Path, key: str) -> KeyRing:
    settings = Settings.resolve({"LILY_HOME": str(home), "LILY_KMS": f"aws-kms:{key}"})
    return keyring(settings)


def test_data_keys_are_wrapped_by_the_kms_key_and_open_in_another_process(
    kms: str, tmp_path: Path
) -> None:
    key = create_key(kms)
    sealed = aws_ring(tmp_path, key).cipher("acme").seal_text("owned by jane")
    stored = json.loads((tmp_path / "keys" / "tenants" / "acme.json").read_text())
    assert stored["kek"] == f"aws-kms:{key}"
    assert not (tmp_path / "keys" / "master.key").exists()
    # A fresh key ring (as another process would have) asks KMS to unwrap it.
    fresh = KeyRing(tmp_path / "keys", key_encryption_key(f"aws-kms:{key}", {}, tmp_path))
    fresh.check()
    assert fresh.cipher("acme").open_text(sealed) == "owned by jane"


def test_an_alias_names_the_key(kms: str, tmp_path: Path) -> None:
    alias = create_key(kms, alias=unique_alias())
    sealed = aws_ring(tmp_path, alias).cipher("acme").seal_text("x")
    fresh = KeyRing(tmp_path / "keys", key_encryption_key(f"aws-kms:{alias}", {}, tmp_path))
    assert fresh.cipher("acme").open_text(sealed) == "x"


def test_a_data_key_under_another_tenants_context_does_not_unwrap(kms: str, tmp_path: Path) -> None:
    key = create_key(kms)
    aws_ring(tmp_path, key).cipher("acme")
    tenants = tmp_path / "keys" / "tenants"
    stolen = json.loads((tenants / "acme.json").read_text())
    (tenants / "globex.json").write_text(json.dumps({**stolen, "tenant": "globex"}))
    fresh = KeyRing(tmp_path / "keys", key_encryption_key(f"aws-kms:{key}", {}, tmp_path))
    with pytest.raises(ConfigError, match="does not unwrap tenant 'globex'"):
        fresh.cipher("globex")


def test_a_key_that_does_not_exist_is_a_configuration_error(kms: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NotFoundException") as error:
        aws_ring(tmp_path, "alias/no-such-key").cipher("acme")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "keys" / "tenants" / "acme.json").exists()


def test_no_credentials_is_a_configuration_error(
    kms: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError, match="no usable AWS credentials"):
        aws_ring(tmp_path, "alias/whatever").cipher("acme")


def test_an_unreachable_kms_fails_fast_as_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    use_kms(monkeypatch, endpoint)
    key = create_key(endpoint)
    sealed = aws_ring(tmp_path, key).cipher("acme").seal_text("kept")
    server.stop()  # the key service goes away
    fresh = KeyRing(tmp_path / "keys", key_encryption_key(f"aws-kms:{key}", {}, tmp_path))
    started = time.monotonic()
    with pytest.raises(KmsUnavailableError, match="AWS KMS unreachable") as error:
        fresh.check()
    assert time.monotonic() - started < 10
    assert "\n" not in str(error.value)
    # A new tenant gets no key while KMS is away; the existing key file is untouched.
    with pytest.raises(KmsUnavailableError):
        fresh.cipher("globex")
    assert fresh.tenants() == ["acme"]
    # The process that unwrapped the key before holds it: its data still opens.
    assert aws_ring(tmp_path, key).cipher("acme").open_text(sealed) == "kept"


def test_rotation_from_the_local_master_key_to_kms_and_between_kms_keys(
    kms: str, tmp_path: Path
) -> None:
    local = KeyRing(
        tmp_path / "keys",
        key_encryption_key("local", {"LILY_MASTER_KEY": LOCAL_KEY}, tmp_path),
    )
    sealed = local.cipher("acme").seal_text("moved")
    first, second = create_key(kms), create_key(kms)
    on_first = aws_ring(tmp_path, first)
    moved = on_first.rotate("acme", previous=local.kek)
    assert moved["from"] == local.kek.key_id and moved["to"] == f"aws-kms:{first}"
    on_second = aws_ring(tmp_path, second)
    with pytest.raises(ConfigError, match=f"wrapped by aws-kms:{first}"):
        on_second.check()
    on_second.rotate("acme", previous=on_first.kek)
    fresh = KeyRing(tmp_path / "keys", key_encryption_key(f"aws-kms:{second}", {}, tmp_path))
    fresh.check()
    assert fresh.cipher("acme").open_text(sealed) == "moved"
