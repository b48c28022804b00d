"""Lifecycle counters: stage changes, and revenue that could not be converted to the reporting currency."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from app.metrics import RegistryMetrics


class LifecycleMetrics(RegistryMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.stage_changes = Counter(
            "kseg_lifecycle_stage_changes",
            "Lifecycle stage changes sent, by new stage.",
            ["to"],
            registry=registry,
        )
        self.revenue_without_rate = Counter(
            "kseg_lifecycle_revenue_without_rate",
            "Revenue events in a currency the rate file has no rate for (kept apart, never summed), "
            "by currency.",
            ["currency"],
            registry=registry,
        )
