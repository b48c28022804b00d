"""How to react to each Segment HTTP outcome, and how long to wait before trying again.

Mirrors the retry policy of segment-analytics-python 2.4.0 (docs/reference.md#segment-retries), with one
deliberate difference: we never give up on a transient failure, because Kafka, not memory, holds the
backlog.
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
    AUTH = "auth"
    REJECT = "reject"


class SegmentAuthError(RuntimeError):
    """Segment refused the write key (401/403): a configuration error, never a data error.

    The sink must stop and the caller must not ack offsets; nothing is dead-lettered.
    """

    def __init__(self, status: int, body: str = "") -> None:
        super().__init__(
            f"Segment answered {status}: the write key was refused. Fix SEGMENT_WRITE_KEY (and "
            f"SEGMENT_ENDPOINT's region) and restart the worker; offsets were not committed. {body[:200]}"
        )
        self.status = status
        self.body = body


class SinkStopped(Exception):
    """The sink was stopped while a delivery was waiting; the caller must not ack."""


class SegmentTransportError(Exception):
    """No HTTP status: timeout or connection failure. Always retryable."""

    def __init__(self, kind: str, cause: BaseException) -> None:
        super().__init__(f"{kind}: {type(cause).__name__}: {cause}")
        self.kind = kind  # "timeout" | "connection_error"
        self.cause = cause


_RETRY_4XX = frozenset({408, 410, 429, 460})


def classify_status(status: int) -> Outcome:
    """Segment's policy: 2xx ok; 408/410/429/460 and 5xx (not 501/505) retry; 401/403 auth; else reject."""
    if 200 <= status < 300:
        return Outcome.SUCCESS
    if status in _RETRY_4XX or (500 <= status < 600 and status not in (501, 505)):
        return Outcome.RETRY
    if status in (401, 403):
        return Outcome.AUTH
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
