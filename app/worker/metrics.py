"""Worker-wide Prometheus collectors: consumer lag per kseg input partition (read at scrape time), and
faust's own sensor metrics with their label lookups cached."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.runtime.watchdog import PartitionOffsets


class LagCollector(Collector):
    """`kseg_consumer_lag{topic,partition}`: records not yet committed, per assigned input partition."""

    def __init__(self, offsets: Callable[[], dict[Any, PartitionOffsets]]) -> None:
        self.offsets = offsets

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "kseg_consumer_lag",
            "Consumer lag per topic partition (highwater - committed).",
            labels=["topic", "partition"],
        )
        for tp, where in sorted(self.offsets().items()):
            if where.lag is not None:
                lag.add_metric([tp.topic, str(tp.partition)], float(where.lag))
        yield lag


class CachedLabels:
    """A labelled prometheus metric whose `labels(...)` children are looked up once per label set.

    faust's Prometheus sensor asks `labels()` for every table read and write, every changelog send and
    every event in (about ten times per postback); prometheus_client checks and joins the label values
    and takes a lock each time. The children are the metric's own, so what /metrics exposes is the same.
    `remove` and `clear` (faust's on a rebalance) forget every cached child with the metric's."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._children: dict[tuple[tuple[str, Any], ...], Any] = {}

    def labels(self, *values: Any, **labels: Any) -> Any:
        key = (*((str(i), v) for i, v in enumerate(values)), *labels.items())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.metric.labels(*values, **labels)
        return child

    def remove(self, *values: Any) -> None:
        self._children.clear()
        self.metric.remove(*values)

    def clear(self) -> None:
        self._children.clear()
        self.metric.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.metric, name)


def faust_metrics(registry: CollectorRegistry, prefix: str) -> FaustMetrics:
    """faust's own sensor metrics (`faust_*`: events, commit latency, table operations, sends) in
    `registry`, the labelled ones behind `CachedLabels`."""
    metrics = FaustMetrics.create(registry, prefix)
    labelled: dict[str, Any] = {
        name: CachedLabels(m) for name, m in metrics._asdict().items() if m._labelnames
    }
    return metrics._replace(**labelled)
