"""The receiver's Prometheus metrics: what arrived, what Kafka acknowledged, what was refused and why.

A class on the registry the receiver's app carries (`RECEIVER_METRICS`), like every domain's, so two
receivers in one Python (tests) never share a count, and the HTTP protocol (`app.receiver.wire`) counts into
the same instance as the handlers.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from app.metrics import RegistryMetrics


class ReceiverMetrics(RegistryMetrics):
    """The receiver's counters, gauges and produce-latency histogram."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.received = Counter(
            "kseg_receiver_requests", "Requests received, by route.", ["route"], registry=registry
        )
        self.accepted = Counter(
            "kseg_receiver_accepted", "Records acked by Kafka, by route.", ["route"], registry=registry
        )
        self.rejected = Counter(
            "kseg_receiver_rejected", "Requests answered 4xx/5xx, by reason.", ["reason"], registry=registry
        )
        self.produce_latency = Histogram(
            "kseg_receiver_produce_seconds", "Time from produce to Kafka ack.", registry=registry
        )
        self.pending_produces = Gauge(
            "kseg_receiver_pending_produces", "Produces awaiting a Kafka ack.", registry=registry
        )
        self.ready = Gauge("kseg_receiver_ready", "1 when the receiver can produce.", registry=registry)
        self.unauthenticated_calls = Counter(
            "kseg_receiver_unauthenticated_calls",
            "Calls accepted whose own bytes no credential covered (Segment batch elements 1..n, signed "
            "only by element 0's X-Signature): set SEGMENT_WEBHOOK_HEADER_SECRET.",
            ["route"],
            registry=registry,
        )


#: The receiver's metrics, set by `build_app`; `/metrics` serves their registry.
RECEIVER_METRICS = web.AppKey("receiver_metrics", ReceiverMetrics)


def receiver_registry() -> CollectorRegistry:
    """A new receiver's registry: its own metrics, plus the default registry's (the process collectors and
    identity's counters, which pure rules increment there)."""
    registry = CollectorRegistry()
    registry.register(REGISTRY)
    return registry
