"""The worker's Prometheus metrics, one registry for every agent in the process."""

from __future__ import annotations

from app.metrics import LabelKey, Reader, Registry, label_key
from app.sinks.segment.sender import SinkStats

registry = Registry()
processed = registry.counter("kseg_worker_processed_total", "Events processed, by event kind.")
parked = registry.counter(
    "kseg_worker_parked_total", "Postbacks held until a reinstall's first-touch answer came."
)
deduplicated = registry.counter("kseg_worker_deduplicated_total", "Exact repeats of a postback dropped.")
dead_letters = registry.counter("kseg_dead_letters_total", "Dead letters written, by stage and reason.")
segment_messages = registry.counter("kseg_segment_messages_total", "Segment messages queued, by type.")
warehouse_rows = registry.counter("kseg_warehouse_rows_total", "Warehouse rows written.")
lag = registry.gauge("kseg_consumer_lag", "Consumer lag per topic partition (highwater - position).")


def expose_sink_stats(stats: SinkStats) -> None:
    """Publish the Segment sink's own cumulative counters, read at scrape time."""

    def by_status() -> dict[LabelKey, float]:
        return {label_key(status=k): float(v) for k, v in stats.requests_by_status.items()}

    def reader(attribute: str) -> Reader:
        return lambda: {(): float(getattr(stats, attribute))}

    registry.gauge("kseg_segment_requests_total", "Segment requests, by status.", by_status, kind="counter")
    for attribute, help_text in (
        ("delivered", "Messages Segment answered 2xx for."),
        ("retries", "Segment request retries."),
        ("retry_after_waits", "Pauses honouring Retry-After."),
        ("bisections", "Batch splits to isolate rejected messages."),
        ("auth_failures", "401/403 answers (delivery stopped)."),
    ):
        registry.gauge(f"kseg_segment_{attribute}_total", help_text, reader(attribute), kind="counter")
    registry.gauge("kseg_segment_rate_limit", "Current request-rate limit (req/s).", reader("rate"))
