"""Offset-safe delivery of one Kafka batch of Kochava requests, on the sinks' shared policy and limiter.

`KochavaSender.deliver()` returns only when every request was answered 2xx or dead-lettered (and the
dead-letter callback awaited), so the caller may ack. Status classification, `Retry-After`, capped
backoff with jitter, the adaptive rate limiter and the stats are shared with the Segment sink
(`app.sinks.policy`, `.ratelimit`, `.stats`); Kochava has no batch endpoint, so requests go one by one,
a few in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from app.records import DeadLetter, DeliveryOutcome, DeliveryReceipt, ReceiptMessage, utc_now_iso
from app.sinks.errors import SinkConfigError, SinkStopped, TransportError
from app.sinks.http import HttpResult
from app.sinks.kochava.client import KochavaHttpClient, refused
from app.sinks.kochava.requests import KochavaRequest
from app.sinks.policy import Backoff, Outcome, classify_status, retry_wait_from_headers
from app.sinks.ratelimit import AdaptiveRateLimiter, sleep_or_stop
from app.sinks.receipts import new_request_id, receipt
from app.sinks.stats import SinkStats

log = logging.getLogger(__name__)

DeadLetterFn = Callable[[list[DeadLetter]], Awaitable[None]]
#: Called once per request with its final outcome: "sent" or "failed".
ResultFn = Callable[[KochavaRequest, str], None]


class KochavaConfigError(SinkConfigError):
    """Kochava refused the configuration (401/403, or 404: a wrong tracking URL), never the data."""

    def __init__(self, status: int, body: str = "") -> None:
        super().__init__(
            status,
            f"Kochava answered {status}: check KOCHAVA_APP_GUID and KOCHAVA_TRACKING_URL, "
            "then restart the worker",
            body,
        )


class KochavaSender:
    """Posts, retries (forever on transient failures), rate-limits and dead-letters Kochava requests."""

    def __init__(
        self,
        client: KochavaHttpClient,
        limiter: AdaptiveRateLimiter,
        *,
        app_guid: str,
        dead_letter: DeadLetterFn,
        on_result: ResultFn | None = None,
        stats: SinkStats | None = None,
        concurrency: int = 8,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.limiter = limiter
        self.app_guid = app_guid
        self._dead_letter = dead_letter
        self._on_result = on_result
        self.stats = stats if stats is not None else SinkStats()
        self.stats.rate = limiter.rate
        self.concurrency = concurrency
        self.backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._stop = asyncio.Event()
        self._receipts: list[DeliveryReceipt] = []

    def take_receipts(self) -> list[DeliveryReceipt]:
        """The receipts of the requests answered since the last call (one per request and final answer)."""
        taken, self._receipts = self._receipts, []
        return taken

    def _receipt(
        self,
        request: KochavaRequest,
        outcome: DeliveryOutcome,
        status: int | None,
        attempts: int,
        first_seen: str,
        reason: str | None = None,
    ) -> None:
        ref = ReceiptMessage.model_construct(
            message_id=request.request_id,
            event_id=None,
            call_type=request.endpoint,
            event_name=_event_name(request),
            device_key=request.device_key,
        )
        self._receipts.append(
            receipt(
                "kochava",
                outcome,
                [ref],
                request_id=new_request_id(),
                http_status=status,
                attempts=attempts,
                first_attempt_at=first_seen,
                reason=reason,
            )
        )

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        self.stop()
        await self.client.close()

    async def deliver(self, requests: list[KochavaRequest]) -> int:
        """Deliver or dead-letter every request; returns how many were delivered. Raises `KochavaConfigError`
        on 401/403/404 and `SinkStopped` after `stop()` (nothing is dead-lettered then: do not ack)."""
        if self._stop.is_set():
            raise SinkStopped("sink is stopped")
        gate = asyncio.Semaphore(self.concurrency)
        dead: list[DeadLetter] = []
        delivered = 0

        async def one(request: KochavaRequest) -> None:
            nonlocal delivered
            async with gate:
                letter = await self._post_until_answered(request)
            if letter is None:
                delivered += 1
            else:
                dead.append(letter)
            if self._on_result is not None:
                self._on_result(request, "sent" if letter is None else "failed")

        results = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if dead:
            await self._dead_letter(dead)
            for letter in dead:
                self.stats.dead_letters_by_reason[letter.reason] += 1
        return delivered

    async def _post_until_answered(self, request: KochavaRequest) -> DeadLetter | None:
        """POST until 2xx (None) or a non-retryable answer (its dead letter)."""
        failures = 0
        first_seen = utc_now_iso()
        body = request.with_app_id(self.app_guid)
        while True:
            await self.limiter.acquire(self._stop)
            wait: float | None = None
            result: HttpResult | None = None
            try:
                result = await self.client.post_json(request.path(), body)
            except TransportError as exc:
                label, detail, outcome = exc.kind, str(exc), Outcome.RETRY
            else:
                label, detail = str(result.status), result.text[:300]
                outcome = classify_status(result.status)
                if outcome is Outcome.RETRY:
                    wait = retry_wait_from_headers(result.headers)
            self.stats.requests_by_status[label] += 1
            if outcome is Outcome.CONFIG:
                self.stats.auth_failures += 1
                raise KochavaConfigError(int(label), detail)
            if outcome is Outcome.SUCCESS and result is not None and refused(result):
                outcome = Outcome.REJECT
                label = f"{label}_refused"
            if outcome is Outcome.SUCCESS:
                self.limiter.on_success()
                self.stats.rate = self.limiter.rate
                self.stats.delivered += 1
                self.stats.answered()
                self._receipt(
                    request, "delivered", result.status if result else None, failures + 1, first_seen
                )
                return None
            if outcome is Outcome.REJECT:
                self.stats.answered()
                log.warning(
                    "Kochava rejected %s %s (%s): %s", request.endpoint, request.request_id, label, detail
                )
                status = result.status if result is not None else None
                self._receipt(
                    request, "rejected", status, failures + 1, first_seen, f"kochava_rejected_{label}"
                )
                return DeadLetter(
                    stage="kochava",
                    reason=f"kochava_rejected_{label}",
                    error=detail[:2000],
                    event_id=request.request_id,
                    http_status=result.status if result is not None else None,
                    attempts=failures + 1,
                    first_seen=first_seen,
                    payload=request.model_dump(mode="json"),
                )
            failures += 1
            self.stats.retries += 1
            self.stats.failing(time.time())
            if label == "429":
                self.limiter.on_rate_limited()
                self.stats.rate = self.limiter.rate
            if failures in (1, 5) or failures % 20 == 0:  # receipts of retries: as sparse as the log
                self._receipt(
                    request, "retried", int(label) if label.isdigit() else None, failures, first_seen, label
                )
                log.warning(
                    "Kochava %s failed (%s, attempt %d), retrying: %s",
                    request.endpoint,
                    label,
                    failures,
                    detail,
                )
            if wait:
                self.stats.retry_after_waits += 1
                self.stats.retry_after_seconds += wait
                self.limiter.pause_for(wait)  # pauses every Kochava request, as Retry-After asks
            else:
                await sleep_or_stop(self.backoff.delay(failures, self._rng), self._stop)


def _event_name(request: KochavaRequest) -> str | None:
    """The S2S event's name (`data.event_name`), or `IdentityLink`."""
    if request.endpoint != "track":
        return "IdentityLink"
    data = request.body.get("data")
    name = data.get("event_name") if isinstance(data, dict) else None
    return str(name) if name is not None else None
