"""The receiver's Prometheus metrics: what arrived, what Kafka acknowledged, what was refused and why."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

received = Counter("kseg_receiver_requests", "Requests received, by route.", ["route"])
accepted = Counter("kseg_receiver_accepted", "Records acked by Kafka, by route.", ["route"])
rejected = Counter("kseg_receiver_rejected", "Requests answered 4xx/5xx, by reason.", ["reason"])
produce_latency = Histogram("kseg_receiver_produce_seconds", "Time from produce to Kafka ack.")
pending_produces = Gauge("kseg_receiver_pending_produces", "Produces awaiting a Kafka ack.")
ready = Gauge("kseg_receiver_ready", "1 when the receiver can produce.")
unauthenticated_calls = Counter(
    "kseg_receiver_unauthenticated_calls",
    "Calls accepted whose own bytes no credential covered (Segment batch elements 1..n, signed only by "
    "element 0's X-Signature): set SEGMENT_WEBHOOK_HEADER_SECRET.",
    ["route"],
)
