"""One HTTP sink's cumulative counters (`SinkStats`, kept by its sender) and their Prometheus export.

Both sinks keep the same counters and export them the same way, `kseg_<sink>_*`, read at scrape time from
the registry the worker context carries, so nothing is counted twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass
class SinkStats:
    """Cumulative counters of one sink (the sender updates them; the collector reads them)."""

    requests_by_status: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    retry_after_waits: int = 0
    retry_after_seconds: float = 0.0
    dead_letters_by_reason: Counter[str] = field(default_factory=Counter)
    bisections: int = 0
    delivered: int = 0
    #: Configuration refusals (401/403 key, 404 endpoint) that stopped delivery.
    auth_failures: int = 0
    rate: float = 0.0
    #: Wall-clock time since which the current request keeps failing (None when healthy): alert on its age.
    failing_since: float | None = None

    def failing(self, now: float) -> None:
        """A retryable failure: start the failing clock unless it runs already."""
        if self.failing_since is None:
            self.failing_since = now

    def answered(self) -> None:
        """A final answer (2xx or a rejection): the API is reachable again."""
        self.failing_since = None


#: `kseg_<sink>_<attribute>_total` counters, with their help text (`{sink}` is the sink's display name).
_COUNTERS = (
    ("delivered", "Messages {sink} answered 2xx for."),
    ("retries", "{sink} request retries."),
    ("retry_after_waits", "Pauses honouring Retry-After."),
    ("bisections", "Batch splits to isolate rejected messages."),
    ("auth_failures", "401/403/404 answers: a configuration refused, delivery stopped."),
)


class SinkStatsCollector(Collector):
    """Exposes one sink's `SinkStats` as `kseg_<sink>_*` (requests by status, dead letters by reason, the
    counters above, the current rate limit and `failing_since_seconds`)."""

    def __init__(self, sink: str, display: str, stats: SinkStats) -> None:
        self.sink = sink
        self.display = display
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        prefix = f"kseg_{self.sink}"
        requests = CounterMetricFamily(
            f"{prefix}_requests", f"{self.display} requests, by status.", labels=["status"]
        )
        for status, count in sorted(self.stats.requests_by_status.items()):
            requests.add_metric([str(status)], float(count))
        yield requests
        dead = CounterMetricFamily(
            f"{prefix}_dead_letters", f"{self.display} messages dead-lettered, by reason.", labels=["reason"]
        )
        for reason, count in sorted(self.stats.dead_letters_by_reason.items()):
            dead.add_metric([reason], float(count))
        yield dead
        for attribute, help_text in _COUNTERS:
            yield CounterMetricFamily(
                f"{prefix}_{attribute}",
                help_text.format(sink=self.display),
                value=float(getattr(self.stats, attribute)),
            )
        yield GaugeMetricFamily(
            f"{prefix}_rate_limit", "Current request-rate limit (req/s).", value=self.stats.rate
        )
        yield GaugeMetricFamily(
            f"{prefix}_failing_since_seconds",
            f"Epoch seconds since which {self.display} keeps failing (0: healthy).",
            value=self.stats.failing_since or 0.0,
        )
