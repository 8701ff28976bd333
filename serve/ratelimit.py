"""Per-key token buckets: each key may make ``requests_per_second`` requests per second on
average, in bursts of the same size (at least one request); beyond that ThrottlingException (which AWS SDKs retry)."""

from __future__ import annotations

import threading
import time


class RateLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def allow(self, key: str, rate: float) -> bool:
        now = time.monotonic()
        with self._lock:
            burst = max(1.0, rate)
            tokens, last = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1.0, now)
            return True
