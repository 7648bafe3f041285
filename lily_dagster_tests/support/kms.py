"""AWS KMS on loopback for tests: moto's server (the session's `s3_endpoint`, which serves
every AWS API over HTTP), reached through the environment boto3 reads, never patched."""

from __future__ import annotations

import uuid

import pytest

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "lily-test",
    "AWS_SECRET_ACCESS_KEY": "lily-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def aws_environment(endpoint: str) -> dict[str, str]:
    """What a process needs to reach the KMS at `endpoint` (AWS_ENDPOINT_URL: boto3's own)."""
    return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}


def use_kms(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    for name, value in aws_environment(endpoint).items():
        monkeypatch.setenv(name, value)


def create_key(endpoint: str, alias: str | None = None) -> str:
    """A new symmetric KMS key; returns its key id (or `alias/<alias>` when given)."""
    import boto3

    kms = boto3.client("kms", endpoint_url=endpoint, **_client_credentials())
    key_id = str(kms.create_key(Description="lily test key")["KeyMetadata"]["KeyId"])
    if alias is None:
        return key_id
    kms.create_alias(AliasName=f"alias/{alias}", TargetKeyId=key_id)
    return f"alias/{alias}"


def unique_alias() -> str:
    return f"lily-{uuid.uuid4().hex[:12]}"


def _client_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": FAKE_CREDENTIALS["AWS_DEFAULT_REGION"],
    }
