"""Rate limiting: an in-memory token bucket per caller identity (client IP, API key id).

In memory means per gateway process; several replicas each allow the configured rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """``burst`` requests at once, refilled at ``per_minute`` per minute, per identity."""

    def __init__(
        self,
        per_minute: int,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_identities: int = 100_000,
    ) -> None:
        self.enabled = per_minute > 0
        self.rate = per_minute / 60.0  # tokens per second
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._max_identities = max_identities

    def acquire(self, *identities: str) -> float:
        """Spend one token from each identity's bucket; 0 if allowed, else seconds to wait.

        A request is let through only when every bucket has a token, and then all pay; a
        refused request costs nothing, so waiting out ``Retry-After`` is enough.
        """
        if not self.enabled:
            return 0.0
        now = self._clock()
        buckets = [self._refilled(identity, now) for identity in identities]
        shortfall = max((1.0 - b.tokens for b in buckets), default=0.0)
        if shortfall > 0:
            return shortfall / self.rate
        for bucket in buckets:
            bucket.tokens -= 1.0
        return 0.0

    def _refilled(self, identity: str, now: float) -> _Bucket:
        bucket = self._buckets.get(identity)
        if bucket is None:
            if len(self._buckets) >= self._max_identities:
                self._forget_idle(now)
            bucket = self._buckets[identity] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        return bucket

    def _forget_idle(self, now: float) -> None:
        # A bucket that has refilled completely is the same as no bucket: drop those first,
        # then the longest idle, so memory stays bounded under many distinct clients.
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.rate >= self.burst
        ]
        for identity in full:
            del self._buckets[identity]
        if len(self._buckets) >= self._max_identities:
            oldest = sorted(self._buckets, key=lambda k: self._buckets[k].updated)
            for identity in oldest[: len(oldest) // 2]:
                del self._buckets[identity]


def retry_after_header(wait_seconds: float) -> str:
    """``Retry-After`` in whole seconds, never 0 (a client would retry at once and fail)."""
    return str(max(1, math.ceil(wait_seconds)))
