"""An adaptive (AIMD) token bucket shared by every sender of one process.

Segment asks for ≤ ~1,000 req/s per workspace and answers 429 above it (docs/reference.md#segment-limits).
One shared bucket per process keeps all agents of a worker under the ceiling; 429s halve the rate, successes
win it back slowly, and `Retry-After` pauses everyone, as Segment asks (docs/reference.md#sink-responses).
The bucket is per process: with N worker processes, give each `ceiling / N`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from app.sinks.errors import SinkStopped
from app.sinks.policy import MAX_SINGLE_SLEEP


async def sleep_or_stop(delay: float, stop: asyncio.Event | None) -> None:
    """Sleep `delay` seconds in slices of ≤ 60 s; raise `SinkStopped` as soon as `stop` is set."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(delay, 0.0)
    while True:
        if stop is not None and stop.is_set():
            raise SinkStopped("sink stopped while waiting")
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        step = min(remaining, MAX_SINGLE_SLEEP)
        if stop is None:
            await asyncio.sleep(step)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=step)


class AdaptiveRateLimiter:
    """Token bucket whose rate halves on 429 (down to `min_rate`) and grows by `increase` per success.

    `acquire()` is FIFO (one lock), so a burst of agents is paced instead of stampeding.
    `pause_until()` holds every acquirer until a monotonic deadline (used for `Retry-After`).
    """

    def __init__(
        self,
        rate: float = 500.0,
        *,
        min_rate: float = 1.0,
        increase: float | None = None,
        burst: float | None = None,
        decrease_cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or min_rate <= 0:
            raise ValueError("rates must be positive")
        self.ceiling = float(rate)
        self.min_rate = min(float(min_rate), self.ceiling)
        self.increase = increase if increase is not None else max(self.ceiling * 0.02, 0.1)
        self._burst = burst
        self.decrease_cooldown = decrease_cooldown
        self._clock = clock
        self._rate = self.ceiling
        self._tokens = self.capacity
        self._stamp = clock()
        self._paused_until = 0.0
        self._last_decrease = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float:
        """Current allowed requests per second (for metrics)."""
        return self._rate

    @property
    def capacity(self) -> float:
        """Bucket size: `burst`, else a tenth of a second's worth of requests (at least one)."""
        return self._burst if self._burst is not None else max(1.0, self._rate / 10.0)

    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    def pause_until(self, deadline: float) -> None:
        """Hold every `acquire()` until the monotonic time `deadline` (never shortens a pause)."""
        self._paused_until = max(self._paused_until, deadline)

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self._clock() + seconds)

    def on_rate_limited(self) -> bool:
        """Multiplicative decrease after a 429; at most once per cooldown so one burst halves once.
        Returns whether the rate changed."""
        now = self._clock()
        if now - self._last_decrease < self.decrease_cooldown:
            return False
        self._last_decrease = now
        old = self._rate
        self._rate = max(self.min_rate, self._rate / 2.0)
        self._tokens = min(self._tokens, self.capacity)
        return self._rate != old

    def on_success(self) -> None:
        """Additive increase back towards the configured ceiling."""
        self._rate = min(self.ceiling, self._rate + self.increase)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def acquire(self, stop: asyncio.Event | None = None) -> None:
        """Wait for a pause to end and for a token; `SinkStopped` if `stop` is set meanwhile."""
        async with self._lock:
            while True:
                pause = self.paused_for()
                if pause > 0:
                    await sleep_or_stop(pause, stop)
                    continue
                self._refill()
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await sleep_or_stop((1.0 - self._tokens) / self._rate, stop)
