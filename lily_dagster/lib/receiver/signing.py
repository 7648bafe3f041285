"""Signature checks and small conversions shared by the vendor webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time

from lily_dagster.lib.receiver.errors import RequestRejectedError
from lily_dagster.lib.times import iso_utc_millis


def bad_signature(detail: str) -> RequestRejectedError:
    return RequestRejectedError(401, "bad_signature", detail)


def hmac_hex(secret: bytes, message: bytes, algorithm: str) -> str:
    return hmac.new(secret, message, getattr(hashlib, algorithm)).hexdigest()


def hmac_b64(secret: bytes, message: bytes, algorithm: str) -> str:
    return base64.b64encode(
        hmac.new(secret, message, getattr(hashlib, algorithm)).digest()
    ).decode()


def same(given: str | None, expected: str) -> bool:
    """Constant-time comparison; a missing value never matches."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def rfc3339_from_ms(ms: int | float | None, default: float) -> str:
    seconds = ms / 1000 if isinstance(ms, int | float) and ms > 0 else default
    return iso_utc_millis(seconds)


def body_id(prefix: str, body: bytes, index: int = 0) -> str:
    """A deterministic event id for vendor payloads that carry none: a redelivery of the same
    body gets the same id, so the inbox stores it once."""
    return f"{prefix}-{hashlib.sha256(body).hexdigest()[:24]}-{index}"


class ReplayGuard:
    """Remembers signatures for `window_s`; a second use inside the window is a replay."""

    def __init__(self, window_s: float = 300) -> None:
        self.window_s = window_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, signature: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {s: t for s, t in self._seen.items() if now - t < self.window_s}
            seen_at = self._seen.get(signature)
            if seen_at is not None and now - seen_at < self.window_s:
                raise bad_signature("replayed request")
            self._seen[signature] = now
