"""Prometheus metrics of audiences and the Kochava sink, registered on the registry the worker gives.

Per audience: changes entered/exited, devices sent/failed (S2S events), devices skipped; plus every
path that sends nothing (ignored changes, invalid records) and the sink's requests by status.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.sinks.kochava.requests import KochavaRequest
from app.sinks.kochava.sender import KochavaStats


class AudienceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.changes = Counter(
            "kseg_audience_changes",
            "Membership changes applied, by audience, source and change (entered/exited).",
            ["audience", "source", "change"],
            registry=registry,
        )
        self.ignored = Counter(
            "kseg_audience_changes_ignored",
            "Membership changes that changed nothing (duplicate, stale) or were unusable.",
            ["reason"],
            registry=registry,
        )
        self.devices = Counter(
            "kseg_audience_devices",
            "S2S audience events per device, by audience and outcome (sent, failed, dry_run).",
            ["audience", "outcome"],
            registry=registry,
        )
        self.skipped = Counter(
            "kseg_audience_devices_skipped",
            "Devices of a member not sent, by audience and reason (e.g. no_kochava_device_id).",
            ["audience", "reason"],
            registry=registry,
        )
        self.identity_links = Counter(
            "kseg_kochava_identity_links",
            "IdentityLink requests, by outcome (queued, sent, failed, dry_run).",
            ["outcome"],
            registry=registry,
        )

    def on_result(self, request: KochavaRequest, outcome: str) -> None:
        """The Kochava sink's final outcome of one request."""
        if request.endpoint == "identity_link":
            self.identity_links.labels(outcome).inc()
        else:
            self.devices.labels(request.audience_key or "?", outcome).inc()


class KochavaStatsCollector(Collector):
    """The sink's cumulative `KochavaStats`, read at scrape time."""

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
            "kseg_kochava_dead_letters", "Kochava requests dead-lettered.", labels=["reason"]
        )
        for reason, count in sorted(self.stats.dead_letters_by_reason.items()):
            dead.add_metric([reason], count)
        yield dead
        since = self.stats.failing_since
        yield GaugeMetricFamily(
            "kseg_kochava_failing_since_seconds",
            "Epoch since which Kochava keeps failing (0: healthy).",
            value=since or 0,
        )
