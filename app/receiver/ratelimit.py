"""Per-credential request-rate limits of the receiver: one token bucket per credential, 429 + Retry-After.

Off by default (`KSEG_RATE_LIMIT_PER_TOKEN=0`). Kochava releases delayed postbacks in bursts (up to 10
minutes of held postbacks at once: docs/reference.md#kochava-postbacks), a partner configured "Do Not Retry"
loses every postback answered 429, and the receiver already protects itself with 503 + Retry-After when
Kafka falls behind (`KSEG_MAX_PENDING_PRODUCES`). Turn it on to stop one leaked or misbehaving credential
from flooding the pipeline, with a burst well above the largest legitimate backlog.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

from aiohttp import web

from app.receiver.errors import ClientError

#: Buckets kept before idle, full ones are dropped (bounds memory; credentials are few).
MAX_BUCKETS = 10_000


def credential_id(secret: str) -> str:
    """A short, non-reversible name for a credential: safe in logs, metrics labels and bucket keys."""
    return hashlib.sha256(secret.encode("utf-8", "backslashreplace")).hexdigest()[:12]


class TokenBucket:
    """`rate` tokens per second up to `burst`; `take()` answers 0 (allowed) or the seconds to wait."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self.tokens = burst
        self.stamp = clock()

    def take(self) -> float:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    @property
    def full(self) -> bool:
        return self.tokens + (self._clock() - self.stamp) * self.rate >= self.burst


class CredentialLimiter:
    """One `TokenBucket` per (route, credential); `check()` raises a 429 `ClientError` when empty."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, float(burst), clock
        self.buckets: dict[tuple[str, str], TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, route: str, secret: str) -> None:
        if not self.enabled:
            return
        key = (route, credential_id(secret))
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self.buckets = {k: b for k, b in self.buckets.items() if not b.full}
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, self._clock)
        wait = bucket.take()
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise ClientError(
                429,
                "rate_limited",
                f"This credential is over {self.rate:g} requests/s (KSEG_RATE_LIMIT_PER_TOKEN); "
                f"retry after {retry_after} s.",
                {"retry_after": retry_after},
                headers={"Retry-After": str(retry_after)},
            )


#: Where the receiver's aiohttp application keeps its limiter.
LIMITER = web.AppKey("limiter", CredentialLimiter)
