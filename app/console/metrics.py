"""The console's metrics: the reconciliation gap per campaign (the `KsegReconcileGap` alert reads it)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from app.metrics import RegistryMetrics


class ConsoleMetrics(RegistryMetrics):
    """`kseg_reconcile_gap_percent{network,campaign}`: the latest reconciled day's gap between Kochava's
    installs and the installs Segment accepted; `kseg_reconcile_threshold_percent`: KSEG_RECONCILE_GAP_PCT;
    `kseg_reconcile_flagged`: campaign days over it in the reconciliation window."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.gap = Gauge(
            "kseg_reconcile_gap_percent",
            "Gap between Kochava's installs and those delivered to Segment, % of Kochava's (latest day).",
            ["network", "campaign"],
            registry=registry,
        )
        self.threshold = Gauge(
            "kseg_reconcile_threshold_percent",
            "KSEG_RECONCILE_GAP_PCT: a larger gap is flagged.",
            registry=registry,
        )
        self.flagged = Gauge(
            "kseg_reconcile_flagged", "Campaign days whose gap exceeds the threshold.", registry=registry
        )

    def reconciled(self, rows: list[dict[str, Any]], threshold: float) -> None:
        """Set the gauges from the reconciliation rows (newest day first)."""
        self.threshold.set(threshold)
        self.flagged.set(sum(1 for r in rows if r.get("flagged")))
        latest = next((r["date"] for r in rows if r.get("gap_pct") is not None), None)
        self.gap.clear()
        for r in rows:
            if r["date"] == latest and r.get("gap_pct") is not None:
                self.gap.labels(r["network"], r["campaign"]).set(r["gap_pct"])
