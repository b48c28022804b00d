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
from app.mapping.shadow import ShadowReport
from app.metrics import RegistryMetrics
from app.pipeline.steps import StepConfig
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


class MappingReporter(Service):
    """Every KSEG_DRIFT_REPORT_SECONDS, this worker run's drift (`DriftReport`) and shadow comparisons
    (`ShadowReport`), each only when it changed, keyed by worker and run so compaction keeps each run's
    last summary."""

    def __init__(
        self, settings: MappingSettings, config: StepConfig, send_all: SendAll, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.config = config
        self.send_all = send_all
        self.run = uuid.uuid4().hex[:12]
        self._sent: dict[str, bytes] = {}

    def reports(self) -> list[DriftReport | ShadowReport]:
        worker, at = self.settings.kseg_worker_id, utc_now_iso()
        entries = [e.model_copy() for e in self.config.drift.entries.values()]
        runs = [s.model_copy(deep=True) for s in self.config.shadows.summaries.values()]
        return [
            DriftReport(worker=worker, run=self.run, at=at, entries=entries),
            ShadowReport(worker=worker, run=self.run, at=at, runs=runs),
        ]

    async def publish(self) -> None:
        sends = []
        for report in self.reports():
            body = report.model_copy(update={"at": ""}).encode()  # unchanged apart from the time: not sent
            before = self._sent.get(report.kind)
            if body == before or (before is None and not _has_data(report)):
                continue
            key = f"{report.kind}/{report.worker}/{report.run}".encode()
            sends.append((self.settings.topic(topics.MAPPING_REPORTS), key, report.encode()))
            self._sent[report.kind] = body
        if sends:
            await self.send_all(sends)

    @Service.task
    async def _report_loop(self) -> None:
        while not self.should_stop:
            await self.sleep(self.settings.kseg_drift_report_seconds)
            try:
                await self.publish()
            except Exception as exc:  # Kafka unreachable: the next period sends the newer summary
                log.warning("mapping drift: report not sent (%s); retrying next period", exc)


def _has_data(report: DriftReport | ShadowReport) -> bool:
    return bool(report.entries if isinstance(report, DriftReport) else report.runs)
