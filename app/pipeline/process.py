"""The processing agent and its tables: micro-batches of the device stream through `app.pipeline.steps`.

It consumes two co-partitioned topics keyed by device key: raw postbacks, and user-link notices from
the identity index. Its tables (profiles, dedupe) are keyed by that same device key or by ids derived
from it, so every write for a key comes from one partition.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from app.mapping import ProfileRegistry
from app.pipeline.steps import Batch, StepConfig, handle_record
from app.runtime.context import WorkerContext

#: Events per micro-batch, and how long to wait for a batch to fill.
BATCH_MAX = 250
BATCH_WITHIN = 0.01


def register(ctx: WorkerContext) -> None:
    """Declare the `profiles` and `dedupe` tables and the `process` agent on the worker."""
    settings, faust_app = ctx.settings, ctx.faust_app
    config = StepConfig(settings, ProfileRegistry.load(settings.kseg_mapping_dir))
    partitions = settings.kseg_topic_partitions

    #: Per-device attribution and identity state (AttributionProfile as JSON).
    profiles = faust_app.Table("profiles", default=None, partitions=partitions)

    ttl = timedelta(hours=settings.kseg_dedupe_ttl_hours)
    ttl_seconds = ttl.total_seconds()
    # Event ids seen recently: tumbling windows one TTL wide, expiring after two, keyed by wall-clock time
    # (not record timestamps, which brokers may leave unset). A lookup checks this window and the previous.
    windowed: Any = faust_app.Table("dedupe", default=int, partitions=partitions).tumbling(
        ttl, expires=ttl * 2
    )
    dedupe = windowed.relative_to(lambda event=None: time.time())
    dedupe_previous = windowed.relative_to(lambda event=None: time.time() - ttl_seconds)

    def seen_before(event_id: str) -> bool:
        return bool(dedupe[event_id].value() or dedupe_previous[event_id].value())

    async def process_batch(stream: Any, context: Any, events: list[Any]) -> None:
        """`stream` is the one being iterated and acked; `context` is the agent's parent stream, used only
        to point faust's current-event context at each event, so table reads and writes use its
        partition. (Setting it on `stream` itself would overwrite the event noack_take is about to buffer.)"""
        batch = Batch(stored_profile=profiles.get, seen_before=seen_before)
        for event in events:
            context._set_current_event(event)
            handle_record(batch, event, event.key, event.value, config)
        futures = [
            await ctx.topics.by_name(name).send(key=key, value=value) for name, key, value in batch.sends
        ]
        for fut in futures:
            await fut
        for event, profile, dedupe_id in batch.table_writes():
            context._set_current_event(event)
            if profile is not None:
                profiles[profile[0]] = profile[1]
            if dedupe_id:
                dedupe[dedupe_id] = 1
        for event in events:
            await stream.ack(event)

    @faust_app.agent(ctx.topics.device_stream, name="process")
    async def process(stream: Any) -> None:
        """Micro-batches in partition order; see `Batch` for why table writes come last."""
        s = stream.noack()
        async for events in s.noack_take(BATCH_MAX, within=BATCH_WITHIN):
            with ctx.activity.working("process"):
                await process_batch(s, stream, events)
