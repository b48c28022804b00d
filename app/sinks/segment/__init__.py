"""Delivery core of the Segment sink: validate, batch, rate-limit, post, retry, bisect, dead-letter.

No Kafka here: the faust agent hands `deliver()` the messages of up to 500 events and acks their
offsets only when it returns (docs/reference.md#segment-delivery). `build_sink()` picks the real
sender or the dry run.
"""

from __future__ import annotations

from typing import Any, Protocol

from app.sections import SegmentSettings
from app.sinks.errors import SinkStopped, TransportError
from app.sinks.policy import Backoff, Outcome, classify_status, parse_retry_after
from app.sinks.ratelimit import AdaptiveRateLimiter
from app.sinks.segment.batching import chunk
from app.sinks.segment.client import HttpResult, SegmentHttpClient
from app.sinks.segment.dryrun import DryRunWriter
from app.sinks.segment.sender import DeadLetterFn, DeliveryReport, SegmentConfigError, SegmentSender
from app.sinks.segment.validation import problems
from app.sinks.stats import SinkStats

__all__ = [
    "AdaptiveRateLimiter",
    "Backoff",
    "Deliverer",
    "DeliveryReport",
    "DryRunWriter",
    "HttpResult",
    "Outcome",
    "SegmentConfigError",
    "SegmentHttpClient",
    "SegmentSender",
    "SinkStats",
    "SinkStopped",
    "TransportError",
    "build_sink",
    "chunk",
    "classify_status",
    "parse_retry_after",
    "problems",
]


class Deliverer(Protocol):
    """What the sink agent needs: `SegmentSender` and `DryRunWriter` both satisfy it."""

    async def deliver(self, messages: list[dict[str, Any]]) -> DeliveryReport: ...

    def stop(self) -> None: ...

    async def close(self) -> None: ...


def build_sink(
    settings: SegmentSettings,
    dead_letter: DeadLetterFn,
    *,
    limiter: AdaptiveRateLimiter | None = None,
    metrics: SinkStats | None = None,
) -> SegmentSender | DryRunWriter:
    """The sender for `settings` (one per process; share `limiter` between agents), or the dry run."""
    if settings.dry_run:
        return DryRunWriter(
            settings.kseg_data_dir,
            dead_letter=dead_letter,
            max_messages=settings.segment_batch_max_messages,
            max_bytes=settings.segment_batch_max_bytes,
        )
    assert settings.segment_write_key is not None
    client = SegmentHttpClient(
        settings.segment_write_key.get_secret_value(),
        settings.segment_endpoint,
        settings.segment_request_timeout,
        settings.segment_gzip,
    )
    return SegmentSender(
        client,
        limiter or AdaptiveRateLimiter(settings.segment_max_requests_per_second),
        dead_letter=dead_letter,
        metrics=metrics,
        max_messages=settings.segment_batch_max_messages,
        max_bytes=settings.segment_batch_max_bytes,
    )
