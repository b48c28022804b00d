"""`kseg worker` and `kseg sinks`: create the topics, build the process from its settings and run it
until stopped (SIGTERM: faust's worker stops the app, its sinks' consumers, then the output producer)."""

from __future__ import annotations

import asyncio
import logging

from faust.worker import Worker

from app.config import Settings
from app.runtime.context import WorkerContext
from app.topics import ensure_topics
from app.worker.app import create_sinks, create_worker, session_warning, sinks_app_id, state_dir


class KsegWorker(Worker):
    """faust's Worker without its terminal spinner, which sets the root logger to DEBUG: every debug
    record of aiokafka and faust was then built and thrown away (about 10 % of the worker's CPU)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)


def run_worker(settings: Settings) -> None:
    from app.admin.cluster import CoPartitionError, check_co_partitioning

    try:
        asyncio.run(ensure_topics(settings))
        asyncio.run(check_co_partitioning(settings))
    except CoPartitionError as exc:
        raise SystemExit(f"kseg worker: refusing to start: {exc}") from exc
    except RuntimeError as exc:
        raise SystemExit(f"kseg worker: {exc}") from exc
    warning = session_warning(settings)
    if warning:
        logging.getLogger("kseg.worker").warning(warning)
    state_dir(settings).parent.mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    _execute(settings, create_worker(settings))


def run_sinks(settings: Settings) -> None:
    """`kseg sinks`: only the Segment and Kochava sinks (no table, no agent), sharing each sink's
    consumer group with every other process that runs it."""
    try:
        asyncio.run(ensure_topics(settings))  # it may start before any worker made the outboxes
    except RuntimeError as exc:
        raise SystemExit(f"kseg sinks: {exc}") from exc
    state_dir(settings, sinks_app_id(settings)).parent.mkdir(parents=True, exist_ok=True)
    _execute(settings, create_sinks(settings))


def _execute(settings: Settings, ctx: WorkerContext[Settings]) -> None:
    level = {"warning": "warn", "error": "error", "debug": "debug"}.get(settings.log_level, "info")
    worker = KsegWorker(ctx.faust_app, loglevel=level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
