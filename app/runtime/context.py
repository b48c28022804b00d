"""What every domain's `register(ctx)` receives: the faust app and the process-wide worker parts."""

from __future__ import annotations

from dataclasses import dataclass

import faust
from prometheus_client import CollectorRegistry

from app.config import Settings
from app.runtime.closing import Closing
from app.runtime.health import Health
from app.runtime.outputs import OutputProducer
from app.runtime.topics import WorkerTopics
from app.runtime.watchdog import AgentActivity


@dataclass
class WorkerContext:
    """Built once per worker by `app.worker.app.create_worker`; domains declare their tables, agents,
    timers and pages on `faust_app` and read everything else from here, never from module globals."""

    faust_app: faust.App
    topics: WorkerTopics
    settings: Settings
    registry: CollectorRegistry
    health: Health
    activity: AgentActivity
    #: Batched sends of the worker's output records (see `app.runtime.outputs`).
    outputs: OutputProducer
    #: Close functions of long-lived clients, called when the app stops (see `app.runtime.closing`).
    closing: Closing
