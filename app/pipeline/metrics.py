"""The processing agent's Prometheus counters: what each postback became, and what was held or dropped."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter

from app.lifecycle.metrics import LifecycleMetrics
from app.metrics import DeadLetterMetrics, RegistryMetrics


class PipelineMetrics(RegistryMetrics):
    """The processing agent's counters, and the lifecycle's and dead-letter counts it increments."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.processed = Counter(
            "kseg_worker_processed", "Events processed, by event kind.", ["kind"], registry=registry
        )
        self.parked = Counter(
            "kseg_worker_parked",
            "Postbacks held until a reinstall's first-touch answer came.",
            registry=registry,
        )
        self.deduplicated = Counter(
            "kseg_worker_deduplicated", "Exact repeats of a postback dropped.", registry=registry
        )
        self.segment_messages = Counter(
            "kseg_segment_messages", "Segment messages queued, by type.", ["type"], registry=registry
        )
        self.warehouse_rows = Counter(
            "kseg_warehouse_rows", "Warehouse rows written to the warehouse topic.", registry=registry
        )
        self.lifecycle = LifecycleMetrics.on(registry)
        self.dead_letters = DeadLetterMetrics.on(registry).total
        self._children: dict[tuple[int, str], Any] = {}

    def labelled(self, counter: Counter, value: str) -> Any:
        """`counter.labels(value)` (a one-label counter), kept: the steps count every postback and every
        Segment message, and `labels` validates and locks on each call."""
        key = (id(counter), value)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(value)
        return child
