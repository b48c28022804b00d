"""Process-wide Prometheus metrics shared by several domains, on prometheus_client's default registry.

Each domain keeps its own metrics next to its code (`app/pipeline/metrics.py`, `app/identity/metrics.py`,
`app/receiver/metrics.py`); only what more than one domain increments lives here. Every path that does not
deliver an event increments a labelled counter (stream-design-notes §8).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "REGISTRY", "DeadLetterMetrics", "dead_letters", "render", "sample"]


class DeadLetterMetrics:
    """`kseg_dead_letters_total{stage,reason}`, the one count every stage's dead letters share (the
    `KsegDeadLetters` alert reads it); each process that writes dead letters has one on its registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.dead_letters = Counter(
            "kseg_dead_letters",
            "Dead letters written, by stage and reason.",
            ["stage", "reason"],
            registry=registry,
        )


dead_letters = DeadLetterMetrics(REGISTRY).dead_letters


def render(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry in Prometheus text format (what /metrics answers)."""
    return generate_latest(registry)


def sample(name: str, registry: CollectorRegistry = REGISTRY, **labels: str) -> float:
    """One sample's current value (0 when absent): for summaries and tests."""
    return registry.get_sample_value(name, labels) or 0.0
