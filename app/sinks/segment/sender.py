"""Offset-safe delivery of one Kafka batch's Segment messages (docs/reference.md#segment-delivery).

`SegmentSender.deliver()` returns only when every message is either accepted (2xx) or dead-lettered
(and the dead-letter callback has been awaited), so the caller may then ack the Kafka offsets.
Transient failures are retried forever: Kafka holds the backlog, and lag is the alert signal.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from app.records import DeadLetter, DeliveryOutcome, DeliveryReceipt, utc_now_iso
from app.sinks.errors import SinkConfigError, SinkStopped, TransportError
from app.sinks.policy import Backoff, Outcome, classify_status, retry_wait_from_headers
from app.sinks.ratelimit import AdaptiveRateLimiter, sleep_or_stop
from app.sinks.receipts import new_request_id, receipt, segment_refs
from app.sinks.segment.batching import chunk
from app.sinks.segment.client import HttpResult, SegmentHttpClient
from app.sinks.segment.validation import message_size, problems, reason_for
from app.sinks.stats import SinkStats

log = logging.getLogger(__name__)

Message = dict[str, Any]
DeadLetterFn = Callable[[list[DeadLetter]], Awaitable[None]]
T = TypeVar("T")


class SegmentConfigError(SinkConfigError):
    """Segment refused the configuration: the write key (401/403) or the endpoint (404), never the data."""

    def __init__(self, status: int, body: str = "", url: str = "") -> None:
        if status == 404:
            hint = (
                f"Segment answered 404 at {url or 'SEGMENT_ENDPOINT'}: SEGMENT_ENDPOINT is wrong. "
                "Fix SEGMENT_ENDPOINT and restart the worker"
            )
        else:
            hint = (
                f"Segment answered {status}: the write key was refused. Fix SEGMENT_WRITE_KEY (and "
                "SEGMENT_ENDPOINT's region) and restart the worker"
            )
        super().__init__(status, hint, body)


@dataclass
class DeliveryReport:
    """What one `deliver()` call did."""

    delivered: int = 0
    requests: int = 0
    retries: int = 0
    dead_lettered: int = 0
    bisections: int = 0
    status_counts: Counter[str] = field(default_factory=Counter)
    #: One per request that got a final answer or a logged retry, plus one for messages refused unsent.
    receipts: list[DeliveryReceipt] = field(default_factory=list)


@dataclass
class _Part:
    """A slice of a chunk, with how many POSTs its messages already went through and when first tried."""

    messages: list[Message]
    attempts: int = 0
    first_seen: str | None = None
    request_id: str | None = None


class SegmentSender:
    """Validates, batches, rate-limits, posts, retries, bisects and dead-letters Segment messages."""

    def __init__(
        self,
        client: SegmentHttpClient,
        limiter: AdaptiveRateLimiter,
        *,
        dead_letter: DeadLetterFn,
        metrics: SinkStats | None = None,
        max_messages: int = 500,
        max_bytes: int = 450_000,
        backoff: Backoff | None = None,
        event_id_of: Callable[[Message], str | None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.limiter = limiter
        self._dead_letter = dead_letter
        self.stats = metrics if metrics is not None else SinkStats()
        self.stats.rate = limiter.rate
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.backoff = backoff or Backoff()
        self._event_id_of = event_id_of
        self._rng = rng or random.Random()
        self._stop = asyncio.Event()

    # ---- public ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Abort every wait (limiter, backoff, in-flight POST) promptly; `deliver` raises `SinkStopped`."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    async def close(self) -> None:
        self.stop()
        await self.client.close()

    async def deliver(self, messages: list[Message]) -> DeliveryReport:
        """Deliver or dead-letter every message; safe to ack the Kafka offsets once this returns.

        Raises `SegmentConfigError` on 401/403/404 (nothing dead-lettered; do not ack) and `SinkStopped`
        after `stop()`. Dead letters are written once, at the end, so an auth failure or a stop leaves
        none behind for a batch that will be redelivered anyway.
        """
        if self.stopped:
            raise SinkStopped("sink is stopped")
        report = DeliveryReport()
        dead: list[DeadLetter] = []
        valid: list[Message] = []
        sizes: list[int] = []
        invalid: list[Message] = []
        for message in messages:
            found = problems(message)
            if found:
                dead.append(self._dead(message, reason_for(found), "; ".join(found), None, 0, None))
                invalid.append(message)
            else:
                valid.append(message)
                sizes.append(message_size(message))
        if invalid:
            refs = segment_refs(invalid)
            report.receipts.append(receipt("segment", "dead_lettered", refs, reason="invalid_message"))
        for batch in chunk(valid, self.max_messages, self.max_bytes, sizes=sizes):
            await self._deliver_chunk(batch, report, dead)
        if dead:
            await self._dead_letter(dead)
            for letter in dead:
                self.stats.dead_letters_by_reason[letter.reason] += 1
            report.dead_lettered = len(dead)
        return report

    # ---- internals ---------------------------------------------------------------------------
    async def _deliver_chunk(
        self, batch: list[Message], report: DeliveryReport, dead: list[DeadLetter]
    ) -> None:
        """Post the chunk; on a non-retryable 4xx split it in two until the offenders stand alone."""
        stack = [_Part(batch)]
        while stack:
            part = stack.pop()
            result = await self._post_until_answered(part, report)
            outcome = classify_status(result.status)
            if outcome is Outcome.SUCCESS:
                report.delivered += len(part.messages)
                self.stats.delivered += len(part.messages)
                report.receipts.append(self._receipt("delivered", part, result.status))
                continue
            # Outcome.REJECT: this part holds at least one message Segment refuses.
            if len(part.messages) == 1:
                message = part.messages[0]
                reason = f"segment_rejected_{result.status}"
                status = result.status
                dead.append(self._dead(message, reason, result.text, status, part.attempts, part.first_seen))
                report.receipts.append(self._receipt("rejected", part, status, reason))
                log.warning(
                    "Segment rejected message %s with %s: %s", _mid(message), result.status, result.text[:300]
                )
                continue
            report.bisections += 1
            self.stats.bisections += 1
            mid = len(part.messages) // 2
            left = _Part(part.messages[:mid], part.attempts, part.first_seen)
            right = _Part(part.messages[mid:], part.attempts, part.first_seen)
            stack.extend((right, left))  # left first: keeps delivery order

    async def _post_until_answered(self, part: _Part, report: DeliveryReport) -> HttpResult:
        """POST until Segment gives a non-retryable answer (2xx or reject); raise on 401/403/404."""
        failures = 0
        while True:
            await self.limiter.acquire(self._stop)
            part.attempts += 1
            part.request_id = new_request_id()
            if part.first_seen is None:
                part.first_seen = utc_now_iso()
            report.requests += 1
            wait: float | None = None
            try:
                result = await self._until_stopped(self.client.post_batch(part.messages))
            except TransportError as exc:
                label, detail = exc.kind, str(exc)
                outcome = Outcome.RETRY
            else:
                label, detail = str(result.status), result.text[:300]
                outcome = classify_status(result.status)
                if outcome is Outcome.RETRY:
                    wait = retry_wait_from_headers(result.headers)
            report.status_counts[label] += 1
            self.stats.requests_by_status[label] += 1

            if outcome is Outcome.CONFIG:
                self.stats.auth_failures += 1
                error = SegmentConfigError(result.status, result.text, self.client.url)
                log.critical("%s; stopping delivery", error.hint)
                raise error
            if outcome is not Outcome.RETRY:
                if outcome is Outcome.SUCCESS:
                    self.limiter.on_success()
                self.stats.rate = self.limiter.rate
                self.stats.answered()
                return result

            failures += 1
            report.retries += 1
            self.stats.retries += 1
            self.stats.failing(time.time())
            if label == "429" and self.limiter.on_rate_limited():
                log.info("Segment answered 429: request rate lowered to %.1f/s", self.limiter.rate)
            self.stats.rate = self.limiter.rate
            if failures in (1, 5) or failures % 20 == 0:  # receipts of retries: as sparse as the log
                status = int(label) if label.isdigit() else None  # a transport error has no status
                report.receipts.append(self._receipt("retried", part, status, label))
                log.warning(
                    "Segment batch of %d failed (%s, attempt %d), retrying: %s",
                    len(part.messages),
                    label,
                    failures,
                    detail,
                )
            if wait:  # a `Retry-After: 0` must not turn into a tight loop: back off instead
                # Retry-After pauses the whole sink (every sender sharing the limiter), not just this request.
                self.stats.retry_after_waits += 1
                self.stats.retry_after_seconds += wait
                self.limiter.pause_for(wait)
            else:
                await sleep_or_stop(self.backoff.delay(failures, self._rng), self._stop)

    async def _until_stopped(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable`, cancelling it and raising `SinkStopped` as soon as `stop()` is called."""
        if self.stopped:
            raise SinkStopped("sink is stopped")
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise SinkStopped("sink stopped during a request")
        return task.result()

    def _receipt(
        self, outcome: DeliveryOutcome, part: _Part, status: int | None, reason: str | None = None
    ) -> DeliveryReceipt:
        return receipt(
            "segment",
            outcome,
            segment_refs(part.messages),
            request_id=part.request_id,
            http_status=status,
            attempts=part.attempts,
            first_attempt_at=part.first_seen,
            reason=reason,
        )

    def _dead(
        self,
        message: Message,
        reason: str,
        error: str,
        status: int | None,
        attempts: int,
        first_seen: str | None,
    ) -> DeadLetter:
        payload = message if isinstance(message, dict) else {"invalid_message": repr(message)[:2000]}
        letter = DeadLetter(
            stage="segment",
            reason=reason,
            error=error[:2000],
            event_id=self._event_id_of(payload) if self._event_id_of else None,
            http_status=status,
            attempts=attempts,
            payload=payload,
        )
        if first_seen is not None:
            letter.first_seen = first_seen
        return letter


def _mid(message: Message) -> str:
    return str(message.get("messageId")) if isinstance(message, dict) else "?"
