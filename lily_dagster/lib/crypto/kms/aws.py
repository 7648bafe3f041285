"""`LILY_KMS=aws-kms:<key id or ARN>`: each tenant's data key is wrapped by an AWS KMS key
(`Encrypt`/`Decrypt` with the tenant as encryption context: a wrapped key copied to
another tenant's file does not unwrap). The data key itself is made locally.

boto3 finds the credentials, the region (AWS_DEFAULT_REGION, a profile; AWS_REGION is
passed in by Lily's settings; else us-east-1) and the endpoint (`AWS_ENDPOINT_URL` or
`AWS_ENDPOINT_URL_KMS`: moto, LocalStack) as it always does. Timeouts are short and
retries few, so that a key service that does not answer fails a tick in seconds
(`KmsUnavailableError`) rather than holding the sensor loop.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lily_dagster.lib.crypto.kms import KmsUnavailableError, register_kms
from lily_dagster.settings import ConfigError

DEFAULT_REGION = "us-east-1"
CONNECT_TIMEOUT_S = 2
READ_TIMEOUT_S = 3
RETRIES = 2  # so a key service that never answers fails in ~10 s: 3 attempts of 2-3 s + backoff
CONTEXT_KEY = "lily_tenant"
# KMS answers that mean "try again later"; any other refusal is a configuration problem.
RETRYABLE_CODES = {
    "ThrottlingException",
    "LimitExceededException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "ServiceUnavailable",
    "InternalFailure",
}


@register_kms("aws-kms")
class AwsKmsKek:
    """One AWS KMS key. boto3 is imported and its client made on the first wrap or unwrap,
    never when Lily's definitions load."""

    def __init__(self, key: str, region: str | None = None) -> None:
        self.key = key
        self.key_id = f"aws-kms:{key}"
        self.region = region
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_argument(cls, argument: str, env: Mapping[str, str], home: Path) -> AwsKmsKek:
        if not argument.strip():
            raise ConfigError("LILY_KMS=aws-kms needs the key: aws-kms:<key id, ARN or alias/NAME>")
        return cls(argument.strip(), env.get("AWS_REGION") or None)

    def wrap(self, tenant: str, data_key: bytes) -> str:
        answer = self._call(
            tenant, "encrypt", KeyId=self.key, Plaintext=data_key, EncryptionContext=_ctx(tenant)
        )
        return base64.b64encode(answer["CiphertextBlob"]).decode("ascii")

    def unwrap(self, tenant: str, wrapped: str) -> bytes:
        try:
            blob = base64.b64decode(wrapped, validate=True)
        except (ValueError, binascii.Error):
            raise ConfigError(f"tenant {tenant!r}'s wrapped data key is not base64") from None
        answer = self._call(
            tenant, "decrypt", KeyId=self.key, CiphertextBlob=blob, EncryptionContext=_ctx(tenant)
        )
        plaintext: bytes = answer["Plaintext"]
        return plaintext

    def _call(self, tenant: str, operation: str, **request: Any) -> dict[str, Any]:
        """One KMS request; its failures as ConfigError (fix the configuration) or
        KmsUnavailableError (try again later), each one line."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        try:
            answer: dict[str, Any] = getattr(self._kms(), operation)(**request)
            return answer
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise ConfigError(
                f"LILY_KMS={self.key_id}: no usable AWS credentials ({exc}); set "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with a role"
            ) from None
        except ClientError as exc:
            raise self._refusal(tenant, operation, exc) from None
        except BotoCoreError as exc:  # unreachable, timed out, connection dropped
            raise KmsUnavailableError(
                f"AWS KMS unreachable for {self.key_id}: {_one_line(exc)}"
            ) from None

    def _refusal(self, tenant: str, operation: str, exc: Any) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "?"))
        message = _one_line(error.get("Message") or code)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in RETRYABLE_CODES or status >= 500:
            return KmsUnavailableError(f"AWS KMS {operation} failed ({code}: {message})")
        if code in ("InvalidCiphertextException", "IncorrectKeyException"):
            return ConfigError(
                f"AWS KMS key {self.key} does not unwrap tenant {tenant!r}'s data key "
                "(another key, or the data key of another tenant)"
            )
        return ConfigError(
            f"LILY_KMS={self.key_id}: AWS KMS {operation} refused ({code}: {message})"
        )

    def _kms(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = _client(self.region)
            return self._client


def _client(region: str | None) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    return session.client(
        "kms",
        region_name=region or session.region_name or DEFAULT_REGION,
        config=Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"total_max_attempts": RETRIES + 1, "mode": "standard"},
        ),
    )


def _ctx(tenant: str) -> dict[str, str]:
    return {CONTEXT_KEY: tenant}


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
