"""The digest's Prometheus counters, on the registry the worker context carries."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class DigestMetrics:
    """Schedule checks by outcome, and what a run queued (its dead letters count in `kseg_dead_letters`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
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
