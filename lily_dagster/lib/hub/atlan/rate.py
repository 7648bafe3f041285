"""A client-side request budget per Atlan tenant, adaptive on 429s.

Atlan documents 400 requests/min per tenant. Staying under the budget costs less than
being throttled: a refused request still counts, and a storm of retries extends the storm.
The budget is a token bucket; a 429 halves the rate (and honours Retry-After), and each
success wins back a little of it, up to the configured rate (AIMD, as TCP does).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class AdaptiveRateLimiter:
    def __init__(
        self,
        per_minute: float | None,
        *,
        floor_per_minute: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # None or 0: no client-side limit (the server's 429s still slow us down).
        self.ceiling = float(per_minute) if per_minute else None
        self.rate = self.ceiling
        self.floor = min(floor_per_minute, self.ceiling or floor_per_minute)
        self._clock, self._sleep = clock, sleep
        self._tokens = 1.0
        self._last = clock()
        self._not_before = 0.0
        self._lock = threading.Lock()
        self.waited_s = 0.0
        self.throttled = 0

    def acquire(self) -> None:
        """Block until one request may be sent."""
        while True:
            with self._lock:
                now = self._clock()
                wait = self._not_before - now
                if wait <= 0 and self.rate is None:
                    return
                if wait <= 0 and self.rate is not None:
                    per_s = self.rate / 60.0
                    # At most one second of burst: a budget saved while idle is not spent
                    # in a spike that the server would throttle.
                    self._tokens = min(max(1.0, per_s), self._tokens + (now - self._last) * per_s)
                    self._last = now
                    if self._tokens >= 1.0:
                        self._tokens -= 1.0
                        return
                    wait = (1.0 - self._tokens) / per_s
            self.waited_s += wait
            self._sleep(wait)

    def throttle(self, retry_after_s: float | None) -> None:
        """The server answered 429: wait as it says (or a second) and halve the rate."""
        with self._lock:
            self.throttled += 1
            pause = retry_after_s if retry_after_s is not None and retry_after_s >= 0 else 1.0
            self._not_before = max(self._not_before, self._clock() + pause)
            if self.rate is not None:
                self.rate = max(self.floor, self.rate / 2)

    def success(self) -> None:
        """A request went through: recover 5 % of the ceiling."""
        with self._lock:
            if self.rate is not None and self.ceiling is not None:
                self.rate = min(self.ceiling, self.rate + self.ceiling * 0.05)
