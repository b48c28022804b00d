"""The digest's Prometheus counters, on the registry the worker context carries."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from app.metrics import DeadLetterMetrics, RegistryMetrics


class DigestMetrics(RegistryMetrics):
    """Schedule checks by outcome, what a run queued, and its dead letters (in the shared count)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.dead_letters = DeadLetterMetrics.on(registry).total
        self.ticks = Counter(
            "kseg_digest_ticks",
            "Digest schedule checks, by outcome (ran, failed, waiting, ...).",
            ["outcome"],
            registry=registry,
        )
        self.identifies = Counter(
            "kseg_digest_identifies", "Digest identifies queued to the Segment outbox.", registry=registry
        )
        self.spend_rows = Counter("kseg_digest_spend_rows", "Spend rows produced.", registry=registry)
