"""Worker-wide Prometheus collectors read at scrape time: consumer lag per kseg input partition."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

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
