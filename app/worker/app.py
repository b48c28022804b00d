"""The worker's composition root: one function builds the faust app, its topics, tables, agents, timers
and pages from a `Settings` object. Only this module knows every domain; each adds itself with `register`.

The same root builds `kseg sinks` (`create_sinks`): the sinks' domains alone, with the worker's output
producer, health and pages, on a faust app of its own id (its own group: faust's assignor never hands it
a table partition). A worker with KSEG_WORKER_SINKS=false leaves the sinks out; either way the sinks'
consumer groups are the same, so every process that runs a sink shares its outbox partitions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.types.transports import ProducerT
from prometheus_client import REGISTRY, CollectorRegistry

from app.audiences import agents as audiences_agent
from app.config import Settings
from app.digest import agents as digest_agents
from app.identity import agents as identity_agents
from app.kafka import client_config, exact_end_offsets, faust_credentials
from app.pipeline import process
from app.privacy import agents as privacy_agents
from app.runtime.batching import BATCH_MAX
from app.runtime.closing import Closing
from app.runtime.context import WorkerContext
from app.runtime.health import ALIVE, Health, readiness
from app.runtime.outputs import OutputProducer
from app.runtime.topics import WorkerTopics
from app.runtime.watchdog import AgentActivity, StallDetector, exit_for_restart, partition_offsets
from app.sinks.kochava import agents as kochava_sink
from app.sinks.segment import agents as segment_sink
from app.worker.metrics import LagCollector
from app.worker.recovery import EndOffsets, KsegTableManager
from app.worker.transport import FETCH_MAX_WAIT_MS
from app.worker.web import web_settings

#: Every domain with agents, in pipeline order: adding a capability is one more entry.
DOMAINS = (
    process.register,
    identity_agents.register,
    segment_sink.register,
    audiences_agent.register,
    kochava_sink.register,
    digest_agents.register,
    privacy_agents.register,
)
#: The domains that deliver the outboxes: no tables, each its own consumer group (`app.sinks.consumer`).
SINKS = (segment_sink.register, kochava_sink.register)

#: Suffix of the faust app id (so of its consumer group) of `kseg sinks` processes.
SINKS_APP_SUFFIX = "-sinks"


def worker_domains(settings: Settings) -> tuple[Callable[[WorkerContext[Settings]], None], ...]:
    """The domains a worker registers: all of them, or all but the sinks (KSEG_WORKER_SINKS=false)."""
    return DOMAINS if settings.kseg_worker_sinks else tuple(d for d in DOMAINS if d not in SINKS)


def broker_urls(bootstrap: str) -> list[str]:
    """faust broker URLs on kseg's transport (faust's aiokafka one, with a short fetch wait)."""
    return [f"ksegkafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()]


def state_dir(settings: Settings, app_id: str | None = None) -> Path:
    """One RocksDB directory per worker: workers cannot share one (fs#98)."""
    app_id = app_id or settings.kseg_app_id
    return (settings.kseg_data_dir / "state" / app_id / settings.kseg_worker_id).resolve()


#: Shortest session timeout that is safe on the embedded broker. Tansu answers a SyncGroup about 3 s
#: after the JoinGroup and counts the session from the request, so the first heartbeat after a join must
#: come within (session - 3 s): at 4 s a busy worker was evicted right after joining, and two workers
#: then re-joined each other forever (measured; README "The embedded broker").
EMBEDDED_MIN_SESSION_TIMEOUT = 8.0


def session_warning(settings: Settings) -> str | None:
    """What to tell the operator when the session timeout is too short for the embedded broker."""
    if not settings.kseg_embedded_broker or settings.kseg_session_timeout >= EMBEDDED_MIN_SESSION_TIMEOUT:
        return None
    floor = f"{EMBEDDED_MIN_SESSION_TIMEOUT:g}"
    return (
        f"KSEG_SESSION_TIMEOUT={settings.kseg_session_timeout:g} is below {floor} s: on the embedded broker "
        "a busy worker can be dropped from its group right after joining, and two workers can then re-join "
        f"each other without end. Set KSEG_SESSION_TIMEOUT={floor} or more."
    )


#: Table writes faust's producer may hold before its conductor pauses the streams to drain them. faust's
#: default, 100, is below one micro-batch's changelog records (about 3 per event, `BATCH_MAX` events, and
#: two stateful agents flush batches), so nearly every flush warned "producer buffer full": 1,458 warnings
#: in one spike run, ~110 per 8,000-postback drain (~10 at 4 x BATCH_MAX; events/s the same within noise).
PRODUCER_BUFFER_MAX = 8 * BATCH_MAX


#: Fetch wait of the reads that find the changelogs' ends on the embedded broker (which holds an empty
#: fetch for all of it, and the last read of each recovery is an empty one).
CHANGELOG_END_FETCH_WAIT_MS = 50


class KsegApp(faust.App):
    """faust's App with the settings faust has no option for: the consumer's fetch wait
    (`app.worker.transport`), the size of the producer's buffer of table writes, and how table
    recovery learns where each changelog ends (`app.worker.recovery`)."""

    #: The worker consumer's longest fetch wait, ms (`build_faust_app` sets it from the settings).
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
    #: The changelogs' real end offsets from the reported ones; None: the broker's are exact.
    changelog_ends: EndOffsets | None = None

    def _new_producer(self) -> ProducerT:
        producer = super()._new_producer()
        producer.buffer.max_messages = PRODUCER_BUFFER_MAX
        return producer


def build_faust_app(settings: Settings, app_id: str | None = None, web_port: int | None = None) -> faust.App:
    """The faust App with every stream setting kseg relies on (docs/reference.md#faust-settings).
    `app_id` (default KSEG_APP_ID) is faust's app id and consumer group; `web_port` its pages' port."""
    session = settings.kseg_session_timeout
    app_id = app_id or settings.kseg_app_id
    app = KsegApp(
        app_id,
        broker=broker_urls(settings.bootstrap),
        broker_credentials=faust_credentials(settings),
        store="rocksdb://",
        datadir=str(state_dir(settings, app_id)),
        autodiscover=False,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        producer_linger_ms=settings.kseg_changelog_linger_ms,  # only the changelogs: no event waits
        # Changelogs in real batches on every broker; on the embedded broker recovery reads their ends.
        producer_max_batch_size=settings.changelog_batch_bytes,
        TableManager=KsegTableManager,
        topic_partitions=settings.kseg_topic_partitions,
        topic_replication_factor=settings.kseg_topic_replication,
        topic_allow_declare=True,
        table_standby_replicas=0 if settings.kseg_embedded_broker else 1,
        broker_session_timeout=session,
        broker_heartbeat_interval=max(0.5, min(3.0, session / 6)),
        broker_rebalance_timeout=max(session, 10.0),
        broker_request_timeout=max(session * 1.5, 30.0),
        broker_max_poll_records=500,
        consumer_auto_offset_reset="earliest",
        # Static membership: a restarted worker takes its old place without waiting for a rebalance.
        consumer_group_instance_id=f"{app_id}-{settings.kseg_worker_id}",
        # Shutdown does not wait for in-flight events to be acked: a sink held by a Segment 401 would
        # block it forever. Safe because only acked offsets are committed and every handler is
        # idempotent (dedupe marks in the profiles, deterministic messageIds).
        stream_wait_empty=False,
        **web_settings(settings, web_port),
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    if settings.kseg_embedded_broker:  # Tansu's end offsets count only a last batch's first record
        probe = client_config(settings) | {"fetch_max_wait_ms": CHANGELOG_END_FETCH_WAIT_MS}
        app.changelog_ends = partial(exact_end_offsets, probe)
    return app


def create_worker(settings: Settings) -> WorkerContext[Settings]:
    """Build the whole worker for `settings`; `run_worker` starts it. Creates no directory and reads no
    environment (`run_worker` makes the state directory's parent before starting)."""
    ctx = compose(build_faust_app(settings), settings, worker_domains(settings))
    register_operations(ctx, faust_assigned(ctx))
    return ctx


def sinks_app_id(settings: Settings) -> str:
    """faust's app id of `kseg sinks`: a group of its own, never the worker's (whose assignor would hand
    its members table partitions)."""
    return f"{settings.kseg_app_id}{SINKS_APP_SUFFIX}"


def create_sinks(settings: Settings) -> WorkerContext[Settings]:
    """Build `kseg sinks`: the sinks' domains only, on a faust app with no agent and no table (faust's
    consumer reads only its own leader topic), its pages on KSEG_SINKS_WEB_PORT."""
    faust_app = build_faust_app(settings, sinks_app_id(settings), settings.kseg_sinks_web_port)
    ctx = compose(faust_app, settings, SINKS)
    register_operations(ctx, sinks_assigned(ctx))
    return ctx


def compose(
    faust_app: faust.App, settings: Settings, domains: Iterable[Callable[[WorkerContext[Settings]], None]]
) -> WorkerContext[Settings]:
    """The process-wide parts every domain receives, and `domains` registered on them."""
    registry = CollectorRegistry()
    registry.register(REGISTRY)  # identity's counters (default registry), the process's
    ctx = WorkerContext(
        faust_app=faust_app,
        topics=WorkerTopics.declare(faust_app, settings),
        settings=settings,
        registry=registry,
        health=Health(),
        activity=AgentActivity(),
        outputs=OutputProducer(settings),
        closing=Closing(),
    )
    faust_app.add_dependency(ctx.outputs)  # started before the agents, stopped after them
    faust_app.add_dependency(ctx.closing)
    for register in domains:
        register(ctx)
    return ctx


#: The partitions a process counts as its own for /readyz.
Assigned = Callable[[], set[Any]]


def faust_assigned(ctx: WorkerContext[Settings]) -> Assigned:
    """A worker is ready once faust's consumer has partitions."""
    return lambda: set(ctx.faust_app.consumer.assignment())


def sinks_assigned(ctx: WorkerContext[Settings]) -> Assigned:
    """`kseg sinks` is ready once its sinks' consumers have partitions (faust's has only its leader
    topic's)."""
    return lambda: {tp for positions in ctx.positions for tp in positions()}


def register_operations(ctx: WorkerContext[Settings], assigned_partitions: Assigned) -> None:
    """The SRE surface: /metrics (kseg's and faust's own sensors), /healthz, /readyz, /debug/partitions
    and the stall watchdog."""
    from faust.web import Request, Response, View

    faust_app, settings = ctx.faust_app, ctx.settings
    prefix = f"{settings.kseg_app_id}."

    def offsets() -> dict[Any, Any]:
        return partition_offsets(faust_app.consumer, prefix)

    def every_offset() -> dict[Any, Any]:
        """faust's input partitions and those of the consumers outside faust (the sinks')."""
        merged = offsets()
        for positions in ctx.positions:
            merged |= positions()
        return merged

    ctx.registry.register(LagCollector(every_offset))
    setup_prometheus_sensors(faust_app, pattern="/metrics", registry=ctx.registry, name_prefix="faust")

    detector = StallDetector(settings.kseg_stall_seconds)

    @faust_app.timer(interval=max(1.0, settings.kseg_stall_seconds / 6))
    async def stall_watchdog() -> None:
        stalled = detector.stalled(offsets(), ctx.activity.idle_for())
        if stalled:
            exit_for_restart(stalled)

    @faust_app.page("/debug/partitions")
    class Partitions(View):
        """Per input partition: fetching or paused, last read, committed and end offsets (for SREs)."""

        async def get(self, request: Request) -> Response:
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
                for tp, where in sorted(every_offset().items())
            ]
            return self.json({"partitions": rows})

    @faust_app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return self.json(ALIVE)

    @faust_app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            assigned = assigned_partitions()
            blocked = dict(ctx.health.blocked_reasons)
            if not assigned:
                blocked["partitions"] = "no partition assigned yet (starting or rebalancing)"
            body, status = readiness(blocked, partitions=len(assigned))
            return self.json(body, status=status)
