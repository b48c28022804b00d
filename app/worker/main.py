"""`kseg worker`: create the topics, build the worker from its settings and run it until stopped."""

from __future__ import annotations

import asyncio
import logging

from faust.worker import Worker

from app.config import Settings
from app.topics import ensure_topics
from app.worker.app import create_worker, session_warning, state_dir


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
    ctx = create_worker(settings)
    level = {"warning": "warn", "error": "error", "debug": "debug"}.get(settings.log_level, "info")
    worker = KsegWorker(ctx.faust_app, loglevel=level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
