"""Per-client rate limiting with :class:`energy.resilience.TokenBucket` (429 + Retry-After)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from api.errors import ApiError
from energy.observability.metrics import Counter, Gauge
from energy.resilience import TokenBucket

RATE_LIMITED = Counter("energy_api_rate_limited_total", "Requests refused by a rate limiter", ["limiter"])
RATE_LIMIT_CLIENTS = Gauge("energy_api_rate_limit_clients", "Clients with a live token bucket", ["limiter"])


class RateLimiter:
    """One token bucket per client key; at most ``max_clients`` buckets (least recently used go)."""

    def __init__(
        self,
        name: str,
        rate_per_s: float,
        burst: int,
        max_clients: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate_per_s, self.burst, clock=self._clock)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            RATE_LIMIT_CLIENTS.labels(self.name).set(len(self._buckets))
        else:
            self._buckets.move_to_end(key)
        return bucket

    def _refuse(self, bucket: TokenBucket) -> ApiError:
        RATE_LIMITED.labels(self.name).inc()
        retry = max(1, math.ceil(bucket.retry_after_s()))
        return ApiError(
            429,
            "rate_limited",
            f"too many requests; retry in {retry}s",
            {"limit_per_s": self.rate_per_s, "burst": self.burst},
            {"Retry-After": str(retry)},
        )

    def check(self, key: str) -> None:
        """Take a token, or raise 429."""
        bucket = self._bucket(key)
        if not bucket.try_acquire():
            raise self._refuse(bucket)

    def ensure_not_exhausted(self, key: str) -> None:
        """Raise 429 if ``key`` has no token left, without taking one (see :meth:`charge`)."""
        bucket = self._bucket(key)
        if bucket.retry_after_s() > 0:
            raise self._refuse(bucket)

    def charge(self, key: str) -> None:
        """Take a token if there is one (for counting failures after the fact)."""
        self._bucket(key).try_acquire()
