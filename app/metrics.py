"""Process-wide Prometheus metrics shared by several domains, on prometheus_client's default registry.

Each domain keeps its own metrics next to its code (`app/pipeline/metrics.py`, `app/identity/metrics.py`,
`app/receiver/metrics.py`); only what more than one domain increments lives here. Every path that does not
deliver an event increments a labelled counter (docs/reference.md#drop-metrics).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "REGISTRY", "dead_letters", "render", "sample"]

dead_letters = Counter("kseg_dead_letters", "Dead letters written, by stage and reason.", ["stage", "reason"])


def render(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry in Prometheus text format (what /metrics answers)."""
    return generate_latest(registry)


def sample(name: str, registry: CollectorRegistry = REGISTRY, **labels: str) -> float:
    """One sample's current value (0 when absent): for summaries and tests."""
    return registry.get_sample_value(name, labels) or 0.0
