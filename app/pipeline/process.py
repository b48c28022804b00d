"""The processing agent and its tables: micro-batches of the device stream through `app.pipeline.steps`.

It consumes two co-partitioned topics keyed by device key: raw postbacks, and user-link notices from
the identity index. Its one table (profiles, with each device's dedupe marks) is keyed by that same
device key, so every write for a key comes from one partition.
"""

from __future__ import annotations

from typing import Any

from app.mapping import ProfileRegistry
from app.pipeline.metrics import PipelineMetrics
from app.pipeline.steps import Batch, StepConfig, handle_record, processing_receipts
from app.runtime.batching import BATCH_MAX, BATCH_WITHIN, acked_batches, write_held
from app.runtime.context import WorkerContext
from app.sections import PipelineSettings


def register(ctx: WorkerContext[PipelineSettings]) -> None:
    """Declare the `profiles` table and the `process` agent on the worker."""
    settings, faust_app = ctx.settings, ctx.faust_app
    config = StepConfig(
        settings, ProfileRegistry.load(settings.kseg_mapping_dir), metrics=PipelineMetrics.on(ctx.registry)
    )

    #: Per-device attribution, identity and dedupe state (AttributionProfile as JSON).
    profiles = faust_app.Table("profiles", default=None, partitions=settings.kseg_topic_partitions)

    async def process_batch(context: Any, events: list[Any]) -> None:
        """`context` is the agent's parent stream, used only to point faust's current-event context at
        each event, so table reads and writes use its partition (see `write_held`).

        Records go to the worker's output producer in real batches, acks awaited together (faust's
        per-record `Topic.send` machinery cost more than kseg's own code: bench/README.md)."""
        batch = Batch(stored_profile=profiles.get, config=config)
        for event in events:
            context._set_current_event(event)
            handle_record(batch, event, event.key, event.value, config)
        sends = [*batch.sends, *processing_receipts(batch)]
        await ctx.outputs.send_all((settings.topic(name), key, value) for name, key, value in sends)
        write_held(context, profiles, batch.profile_writes())

    @faust_app.agent(ctx.topics.device_stream, name="process")
    async def process(stream: Any) -> None:
        """Micro-batches in partition order; see `Batch` for why table writes come last."""
        async for events in acked_batches(stream, BATCH_MAX, BATCH_WITHIN):
            with ctx.activity.working("process"):
                await process_batch(stream, events)
