"""Worker entry point: imports every agent, adds the HTTP pages, and runs the faust worker."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.config import Settings
from app.metrics import label_key

log = logging.getLogger(__name__)


def _register_pages() -> None:
    from faust.web import Request, Response, View

    from app.identity.metrics import identity_metrics
    from app.worker import metrics as m
    from app.worker.faust_app import app, settings
    from app.worker.health import health
    from app.worker.watchdog import StallDetector, activity, exit_for_restart, read_and_committed

    def lag() -> dict[Any, float]:
        """Records not yet committed, per assigned partition (faust keeps no public position API)."""
        consumer = app.consumer
        committed_offsets = getattr(consumer, "_committed_offset", {})
        out = {}
        prefix = f"{app.conf.id}."
        for tp in consumer.assignment():
            if not tp.topic.startswith(prefix):  # changelogs are read only during recovery
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            committed = committed_offsets.get(tp)
            done = committed + 1 if committed is not None else 0
            out[label_key(topic=tp.topic, partition=str(tp.partition))] = float(max(0, highwater - done))
        return out

    m.lag.fn = lag

    detector = StallDetector(settings.kseg_stall_seconds)

    @app.timer(interval=max(1.0, settings.kseg_stall_seconds / 6))
    async def stall_watchdog() -> None:
        stalled = detector.stalled(read_and_committed(app.consumer, f"{app.conf.id}."), activity.idle_for())
        if stalled:
            exit_for_restart(stalled)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            text = m.registry.render() + identity_metrics.registry.render()
            return self.text(text, content_type="text/plain")

    @app.page("/debug/partitions")
    class Partitions(View):
        """Per input partition: fetching or paused, last read, committed and end offsets (for SREs)."""

        async def get(self, request: Request) -> Response:
            consumer = app.consumer
            active = (
                consumer._get_active_partitions() if hasattr(consumer, "_get_active_partitions") else set()
            )
            read = getattr(consumer, "_read_offset", {})
            committed = getattr(consumer, "_committed_offset", {})
            rows = [
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "active": tp in active,
                    "read_offset": read.get(tp),
                    "committed_offset": committed.get(tp),
                    "highwater": consumer.highwater(tp),
                }
                for tp in sorted(consumer.assignment())
            ]
            return self.json({"partitions": rows})

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "alive"})

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            ready = health.ready and bool(app.consumer.assignment())
            body = {
                "ready": ready,
                "blocked": health.blocked_reasons,
                "partitions": len(app.consumer.assignment()),
            }
            return self.json(body, status=200 if ready else 503)


def run_worker(settings: Settings) -> None:
    from app.topics import ensure_topics

    asyncio.run(ensure_topics(settings))
    import app.identity.agents
    import app.pipeline.process
    import app.sinks.segment.agent
    import app.sinks.warehouse.agent  # noqa: F401
    from app.worker.faust_app import app as faust_app

    _register_pages()
    from faust.worker import Worker

    class KsegWorker(Worker):
        """faust's Worker without its terminal spinner, which sets the root logger to DEBUG: every debug
        record of aiokafka and faust was then built and thrown away (about 10 % of the worker's CPU)."""

        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            self.spinner = None
            super().on_setup_root_logger(logger, level)

    level = {"warning": "warn", "error": "error", "debug": "debug"}.get(settings.log_level, "info")
    worker = KsegWorker(faust_app, loglevel=level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
