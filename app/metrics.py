"""kseg's one metrics style: each domain's metrics are a class whose counters live on the registry its
process's context carries (the worker's `WorkerContext.registry`, the receiver's app, the loader's).

`RegistryMetrics.on(registry)` gives the one instance of a class on a registry, so every domain of a process
that shares a counter (dead letters, identity) counts into the same series, and two processes in one Python
(tests) never share one. Only what several domains increment lives here: `DeadLetterMetrics`, the count every
stage's dead letters share. Every path that does not deliver an event increments a labelled counter
(docs/reference.md#drop-metrics).
"""

from __future__ import annotations

from typing import Any, Self
from weakref import WeakKeyDictionary

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "REGISTRY", "DeadLetterMetrics", "RegistryMetrics", "render", "sample"]

_INSTANCES: WeakKeyDictionary[CollectorRegistry, dict[type[Any], Any]] = WeakKeyDictionary()


class RegistryMetrics:
    """Base of every domain's metrics class: its `__init__(registry)` declares the counters on `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    @classmethod
    def on(cls, registry: CollectorRegistry) -> Self:
        """The instance of this class on `registry`, declared on first use."""
        per_registry = _INSTANCES.setdefault(registry, {})
        found = per_registry.get(cls)
        if found is None:
            found = per_registry[cls] = cls(registry)
        return found  # type: ignore[no-any-return]


class DeadLetterMetrics(RegistryMetrics):
    """`kseg_dead_letters_total{stage,reason}`, the one count every stage's dead letters share (the
    `KsegDeadLetters` alert reads it)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.total = Counter(
            "kseg_dead_letters",
            "Dead letters written, by stage and reason.",
            ["stage", "reason"],
            registry=registry,
        )


def render(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry in Prometheus text format (what /metrics answers)."""
    return generate_latest(registry)


def sample(name: str, registry: CollectorRegistry = REGISTRY, **labels: str) -> float:
    """One sample's current value (0 when absent): for summaries and tests."""
    return registry.get_sample_value(name, labels) or 0.0
