"""What every domain's `register(ctx)` receives: the faust app and the process-wide worker parts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import faust
from prometheus_client import CollectorRegistry

from app.runtime.closing import Closing
from app.runtime.health import Health
from app.runtime.outputs import OutputProducer
from app.runtime.topics import WorkerTopics
from app.runtime.watchdog import AgentActivity, PartitionOffsets
from app.sections import SharedSettings

#: The settings a domain reads: each `register(ctx: WorkerContext[ItsSection])` sees its own section,
#: while the composition root passes the whole `Settings` (covariant: a `Settings` is every section).
SectionT = TypeVar("SectionT", bound=SharedSettings, covariant=True)


@dataclass
class WorkerContext(Generic[SectionT]):
    """Built once per worker by `app.worker.app.create_worker`; domains declare their tables, agents,
    timers and pages on `faust_app` and read everything else from here, never from module globals."""

    faust_app: faust.App
    topics: WorkerTopics
    settings: SectionT
    registry: CollectorRegistry
    health: Health
    activity: AgentActivity
    #: Batched sends of the worker's output records (see `app.runtime.outputs`).
    outputs: OutputProducer
    #: Close functions of long-lived clients, called when the app stops (see `app.runtime.closing`).
    closing: Closing
    #: Positions of the worker's consumers outside faust (the sinks' groups): shown next to faust's in
    #: `kseg_consumer_lag` and /debug/partitions, never watched by the stall watchdog (faust-only).
    positions: list[Callable[[], dict[Any, PartitionOffsets]]] = field(default_factory=list)
