"""The worker's side of mapping drift: its metric, and the periodic summary it publishes to
`mapping.reports` so `kseg mapping drift` can add up every worker (the rules: `app.mapping.drift`)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from mode import Service
from prometheus_client import CollectorRegistry, Counter

from app import topics
from app.mapping.drift import DriftReport, DriftTracker
from app.metrics import RegistryMetrics
from app.records import utc_now_iso
from app.runtime.outputs import SendAll
from app.sections import MappingSettings

log = logging.getLogger(__name__)


class DriftMetrics(RegistryMetrics):
    """`kseg_mapping_drift_total{profile,version,kind}` (the `KsegMappingDrift` alert reads it)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.total = Counter(
            "kseg_mapping_drift",
            "Postback observations its mapping profile does not expect: unknown_key, unknown_event, "
            "parse_failure.",
            ["profile", "version", "kind"],
            registry=registry,
        )

    def tracker(self) -> DriftTracker:
        return DriftTracker(lambda profile, version, kind: self.total.labels(profile, version, kind).inc())


class DriftReporter(Service):
    """Every KSEG_DRIFT_REPORT_SECONDS, this worker run's drift as one `DriftReport` (only when it
    changed), keyed by worker and run so compaction keeps each run's last summary."""

    def __init__(
        self, settings: MappingSettings, tracker: DriftTracker, send_all: SendAll, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.tracker = tracker
        self.send_all = send_all
        self.run = uuid.uuid4().hex[:12]
        self._sent: Any = None

    def report(self) -> DriftReport:
        entries = [e.model_copy() for e in self.tracker.entries.values()]
        return DriftReport(
            worker=self.settings.kseg_worker_id, run=self.run, at=utc_now_iso(), entries=entries
        )

    async def publish(self) -> None:
        report = self.report()
        seen = [(e.profile, e.version, e.kind, e.item, e.count) for e in report.entries]
        if seen == self._sent:
            return
        key = f"drift/{report.worker}/{report.run}".encode()
        await self.send_all([(self.settings.topic(topics.MAPPING_REPORTS), key, report.encode())])
        self._sent = seen

    @Service.task
    async def _report_loop(self) -> None:
        while not self.should_stop:
            await self.sleep(self.settings.kseg_drift_report_seconds)
            try:
                await self.publish()
            except Exception as exc:  # Kafka unreachable: the next period sends the newer summary
                log.warning("mapping drift: report not sent (%s); retrying next period", exc)
