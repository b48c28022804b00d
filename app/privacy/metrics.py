"""The privacy domain's counters: what the suppression list dropped, and how the fan-out went."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from app.metrics import RegistryMetrics


class PrivacyMetrics(RegistryMetrics):
    """`kseg_privacy_dropped_total{reason,kind}` at the processing step; requests and target attempts in
    the privacy agent; the age of the oldest open request (the `KsegPrivacyRequestOverdue` alert)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.dropped = Counter(
            "kseg_privacy_dropped",
            "Records of a deleted or suppressed subject dropped at the processing step, by reason and kind.",
            ["reason", "kind"],
            registry=registry,
        )
        self.commands = Counter(
            "kseg_privacy_commands",
            "Erase/suppress commands applied, by agent and action.",
            ["agent", "action"],
            registry=registry,
        )
        self.attempts = Counter(
            "kseg_privacy_target_attempts",
            "Privacy target attempts, by target and outcome.",
            ["target", "outcome"],
            registry=registry,
        )
        self.open_oldest_days = Gauge(
            "kseg_privacy_open_request_oldest_days",
            "Age in days of the oldest privacy request not done (0: none open), on this worker's partitions.",
            registry=registry,
        )
        self.overdue = Gauge(
            "kseg_privacy_overdue_requests",
            "Privacy requests not done after KSEG_PRIVACY_ALERT_DAYS, on this worker's partitions.",
            registry=registry,
        )
        self.open_requests = Gauge(
            "kseg_privacy_open_requests",
            "Privacy requests not done, on this worker's partitions.",
            registry=registry,
        )
