"""How kseg's HTTP sinks react to each HTTP outcome, and how long they wait before trying again.

Shared by the Segment and Kochava sinks and the digest's Reporting API client. Mirrors the retry policy
of segment-analytics-python 2.4.0 (docs/reference.md#segment-retries), with one deliberate difference: we
never give up on a transient failure, because Kafka, not memory, holds the backlog.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp

#: Segment's own cap on a `Retry-After` wait; longer values are treated as this.
MAX_RETRY_AFTER = 300.0
#: Longest single sleep, so faust's processing-timeout and liveness checks never see a silent hang.
MAX_SINGLE_SLEEP = 60.0


class Outcome(enum.Enum):
    SUCCESS = "success"
    RETRY = "retry"
    #: The API refused the configuration (key, endpoint): stop, hold the batch, dead-letter nothing.
    CONFIG = "config"
    REJECT = "reject"


_RETRY_4XX = frozenset({408, 410, 429, 460})
_CONFIG_4XX = frozenset({401, 403, 404})


def classify_status(status: int) -> Outcome:
    """Segment's policy: 2xx ok; 408/410/429/460 and 5xx (not 501/505) retry; else reject — except that
    401/403 (a refused key) and 404 (a wrong endpoint) are configuration errors: no message is at fault,
    so bisecting and dead-lettering would throw a whole backlog away for one wrong setting."""
    if 200 <= status < 300:
        return Outcome.SUCCESS
    if status in _RETRY_4XX or (500 <= status < 600 and status not in (501, 505)):
        return Outcome.RETRY
    if status in _CONFIG_4XX:
        return Outcome.CONFIG
    return Outcome.REJECT


def transport_error_kind(exc: BaseException) -> str | None:
    """`"timeout"` / `"connection_error"` for errors worth retrying, None for anything else (a bug)."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientError | ConnectionError | OSError):
        return "connection_error"
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), capped at 300 s.

    Fractional seconds are accepted (the emulator uses them to keep tests fast). Returns None when
    the header is absent or unparseable, so the caller falls back to its own backoff.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def retry_wait_from_headers(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` first; else `X-RateLimit-Reset` as delta seconds (or an epoch, if it looks like one)."""
    wait = parse_retry_after(headers.get("Retry-After"))
    if wait is not None:
        return wait
    reset = headers.get("X-RateLimit-Reset")
    if reset is None:
        return None
    try:
        seconds = float(reset)
    except ValueError:
        return None
    if seconds != seconds:  # NaN: unusable, so the caller's own backoff applies (never a zero wait)
        return None
    if seconds > 1_000_000_000:  # an epoch timestamp, not a delta
        seconds -= time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter (AWS style): spreads a fleet's retries apart."""

    base: float = 0.5
    cap: float = 30.0
    max_sleep: float = MAX_SINGLE_SLEEP

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Sleep before retry number `failures` (1 = first retry): uniform(0, min(cap, base * 2**(n-1)))."""
        exponent = min(max(failures - 1, 0), 32)
        ceiling = min(self.cap, self.base * (2**exponent), self.max_sleep)
        return (rng or random).uniform(0.0, ceiling)
