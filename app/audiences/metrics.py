"""Prometheus metrics of the audiences agent, registered on the registry the worker gives.

Per audience: changes entered/exited and devices skipped; every path that sends nothing (duplicate and
stale changes, invalid records). Devices sent/failed per audience are the Kochava sink's (its metrics).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from app.metrics import DeadLetterMetrics, RegistryMetrics


class AudienceMetrics(RegistryMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.dead_letters = DeadLetterMetrics.on(registry).total
        self.changes = Counter(
            "kseg_audience_changes",
            "Membership changes applied, by audience, source and change (entered/exited).",
            ["audience", "source", "change"],
            registry=registry,
        )
        self.ignored = Counter(
            "kseg_audience_changes_ignored",
            "Membership changes that changed nothing (duplicate, stale) or were unusable.",
            ["reason"],
            registry=registry,
        )
        self.skipped = Counter(
            "kseg_audience_devices_skipped",
            "Devices of a member not sent, by audience and reason (e.g. no_kochava_device_id).",
            ["audience", "reason"],
            registry=registry,
        )
        self.identity_links = Counter(
            "kseg_audience_identity_links_queued",
            "IdentityLink requests queued for the Kochava sink.",
            registry=registry,
        )
