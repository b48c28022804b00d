"""Prometheus metrics of the Kochava sink: per-audience device outcomes (the sender's cumulative stats are
exported by the shared `app.sinks.stats.SinkStatsCollector`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from app.metrics import RegistryMetrics
from app.sinks.kochava.requests import KochavaRequest


class KochavaSinkMetrics(RegistryMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
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
