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
    from app.worker.watchdog import StallDetector, activity, exit_for_restart, partition_offsets

    prefix = f"{app.conf.id}."

    def lag() -> dict[Any, float]:
        """Records not yet committed, per assigned input partition."""
        return {
            label_key(topic=tp.topic, partition=str(tp.partition)): float(where.lag)
            for tp, where in partition_offsets(app.consumer, prefix).items()
            if where.lag is not None
        }

    m.lag.fn = lag

    detector = StallDetector(settings.kseg_stall_seconds)

    @app.timer(interval=max(1.0, settings.kseg_stall_seconds / 6))
    async def stall_watchdog() -> None:
        stalled = detector.stalled(partition_offsets(app.consumer, prefix), activity.idle_for())
        if stalled:
            exit_for_restart(stalled)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            text = m.registry.render() + identity_metrics.registry.render() + _domain_metrics()
            return self.text(text, content_type="text/plain")

    @app.page("/debug/partitions")
    class Partitions(View):
        """Per input partition: fetching or paused, last read, committed and end offsets (for SREs)."""

        async def get(self, request: Request) -> Response:
            offsets = partition_offsets(app.consumer, prefix)
            rows = [
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "active": where.active,
                    "read_offset": where.read,
                    "committed_offset": where.committed,
                    "highwater": where.highwater,
                    "lag": where.lag,
                }
                for tp, where in sorted(offsets.items())
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


_domain_registry: Any = None


def _domain_metrics() -> str:
    from prometheus_client import generate_latest

    return generate_latest(_domain_registry).decode() if _domain_registry is not None else ""


def _register_domains() -> None:
    """Domains already shaped as `register(ctx)` (audiences, Kochava sink), on a context built from
    today's module-level app; the composition root (issue 9) replaces this with `create_worker`."""
    global _domain_registry
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    import app.audiences.agent as audiences_agent
    import app.sinks.kochava.agent as kochava_agent
    from app.worker import channels
    from app.worker import metrics as m
    from app.worker.faust_app import app, settings
    from app.worker.health import health
    from app.worker.watchdog import activity

    _domain_registry = CollectorRegistry()
    ctx = SimpleNamespace(
        app=app,
        topics=channels,
        settings=settings,
        registry=_domain_registry,
        metrics=m,
        health=health,
        activity=activity,
    )
    audiences_agent.register(ctx)
    kochava_agent.register(ctx)


def run_worker(settings: Settings) -> None:
    from app.topics import ensure_topics

    asyncio.run(ensure_topics(settings))
    import app.identity.agents
    import app.pipeline.process
    import app.sinks.segment.agent
    import app.sinks.warehouse.agent  # noqa: F401
    from app.worker.faust_app import app as faust_app

    _register_domains()
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
