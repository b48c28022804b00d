"""Prometheus metrics of the Kochava sink: per-audience device outcomes and the sender's cumulative stats."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.sinks.kochava.requests import KochavaRequest
from app.sinks.kochava.sender import KochavaStats


class KochavaSinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.devices = Counter(
            "kseg_audience_devices",
            "S2S audience events per device, by audience and outcome (sent, failed, dry_run).",
            ["audience", "outcome"],
            registry=registry,
        )
        self.identity_links = Counter(
            "kseg_kochava_identity_links",
            "IdentityLink requests, by outcome (sent, failed, dry_run).",
            ["outcome"],
            registry=registry,
        )

    def on_result(self, request: KochavaRequest, outcome: str) -> None:
        """The sink's final outcome of one request."""
        if request.endpoint == "identity_link":
            self.identity_links.labels(outcome).inc()
        else:
            self.devices.labels(request.audience_key or "?", outcome).inc()


class KochavaStatsCollector(Collector):
    """The sender's cumulative `KochavaStats`, read at scrape time."""

    def __init__(self, stats: KochavaStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        by_status = CounterMetricFamily(
            "kseg_kochava_requests", "Kochava requests, by status.", labels=["status"]
        )
        for status, count in sorted(self.stats.requests_by_status.items()):
            by_status.add_metric([status], count)
        yield by_status
        yield CounterMetricFamily(
            "kseg_kochava_retries", "Kochava request retries.", value=self.stats.retries
        )
        dead = CounterMetricFamily(
            "kseg_kochava_dead_letters", "Kochava requests dead-lettered, by reason.", labels=["reason"]
        )
        for reason, count in sorted(self.stats.dead_letters_by_reason.items()):
            dead.add_metric([reason], count)
        yield dead
        yield GaugeMetricFamily(
            "kseg_kochava_failing_since_seconds",
            "Epoch seconds since which Kochava keeps failing (0: healthy).",
            value=self.stats.failing_since or 0,
        )
