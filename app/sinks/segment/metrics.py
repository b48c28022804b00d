"""The Segment sink's counters as a Prometheus collector, read from its `SinkStats` at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.sinks.segment.sender import SinkStats

_COUNTERS = (
    ("delivered", "Messages Segment answered 2xx for."),
    ("retries", "Segment request retries."),
    ("retry_after_waits", "Pauses honouring Retry-After."),
    ("bisections", "Batch splits to isolate rejected messages."),
    ("auth_failures", "401/403 answers (delivery stopped)."),
)


class SinkStatsCollector(Collector):
    """Exposes one sink's cumulative counters (the sender keeps them; nothing is double-counted)."""

    def __init__(self, stats: SinkStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "kseg_segment_requests", "Segment requests, by status.", labels=["status"]
        )
        for status, count in sorted(self.stats.requests_by_status.items()):
            requests.add_metric([str(status)], float(count))
        yield requests
        for attribute, help_text in _COUNTERS:
            yield CounterMetricFamily(
                f"kseg_segment_{attribute}", help_text, value=float(getattr(self.stats, attribute))
            )
        yield GaugeMetricFamily(
            "kseg_segment_rate_limit", "Current request-rate limit (req/s).", value=self.stats.rate
        )
