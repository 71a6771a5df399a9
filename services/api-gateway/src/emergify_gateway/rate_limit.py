"""Rate limiting: an in-memory token bucket per caller identity (API key id, or client IP).

A key holder is limited per key, at the key's own rate when it has one; a caller without a
valid key is limited per client address. In memory means per gateway process; several
replicas each allow the configured rate.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|min|minute|h|hour)\s*$", re.IGNORECASE)
_PER_MINUTE = {"s": 60, "sec": 60, "second": 60, "min": 1, "minute": 1, "h": 1 / 60, "hour": 1 / 60}


def parse_rate(text: str) -> int:
    """Requests per minute from ``"6000/min"``, ``"10/s"``, ``"120/h"``; ``"unlimited"`` is 0."""
    if text.strip().lower() in ("unlimited", "0"):
        return 0
    match = _RATE.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a rate; write it as <count>/s, <count>/min or <count>/h "
            "(or 'unlimited')"
        )
    per_minute = int(match[1]) * _PER_MINUTE[match[2].lower()]
    if per_minute < 1:
        raise ValueError(f"the rate {text!r} is below 1/min; the smallest rate is 1/min")
    return round(per_minute)


@dataclass
class _Bucket:
    tokens: float
    updated: float
    rate: float  # tokens per second
    burst: float


class TokenBucketLimiter:
    """``burst`` requests at once, refilled at ``per_minute`` per minute, per identity.

    An identity may carry its own rate (a key's); its burst is then the larger of ``burst`` and
    one second of that rate.
    """

    def __init__(
        self,
        per_minute: int,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_identities: int = 100_000,
    ) -> None:
        self.per_minute = per_minute
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._max_identities = max_identities

    def acquire(self, identity: str, per_minute: int | None = None) -> float:
        """Spend one token of ``identity``'s bucket; 0 if allowed, else seconds to wait.

        ``per_minute`` is the identity's own rate (None: the default; 0: unlimited). A refused
        request costs nothing, so waiting out ``Retry-After`` is enough.
        """
        rate_per_minute = self.per_minute if per_minute is None else per_minute
        if rate_per_minute <= 0:
            return 0.0
        now = self._clock()
        bucket = self._refilled(identity, rate_per_minute, now)
        if bucket.tokens < 1.0:
            return (1.0 - bucket.tokens) / bucket.rate
        bucket.tokens -= 1.0
        return 0.0

    def _refilled(self, identity: str, per_minute: int, now: float) -> _Bucket:
        rate = per_minute / 60.0
        burst = max(self.burst, math.ceil(rate))
        bucket = self._buckets.get(identity)
        if bucket is None:
            if len(self._buckets) >= self._max_identities:
                self._forget_idle(now)
            bucket = self._buckets[identity] = _Bucket(burst, now, rate, burst)
        else:
            bucket.rate, bucket.burst = rate, burst  # a key's rate may have changed
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        return bucket

    def _forget_idle(self, now: float) -> None:
        # A bucket that has refilled completely is the same as no bucket: drop those first,
        # then the longest idle, so memory stays bounded under many distinct clients.
        full = [
            k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * b.rate >= b.burst
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


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then the rightmost
    ``X-Forwarded-For`` entry that is not itself a trusted proxy (entries further left are
    whatever the client wrote, so they are never believed)."""
    if peer is None:
        return "unknown"
    if not _trusted(peer, trusted) or not forwarded_for:
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _trusted(hop, trusted):
            return hop
    return peer


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
