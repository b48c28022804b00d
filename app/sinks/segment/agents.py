"""The Segment sink agent: outbox → Segment /v1/batch, acking Kafka offsets only after 2xx or dead letter.

With no SEGMENT_WRITE_KEY it runs dry: the exact batch bodies go to KSEG_DATA_DIR/segment-outbox.jsonl.
A 401/403 (key) or 404 (endpoint) stops delivery (offsets stay uncommitted), marks the worker not ready
and says why; fix the setting and restart the worker to resume from the last committed offset.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.dlq.writer import send_dead_letters
from app.metrics import DeadLetterMetrics
from app.records import DeadLetter, decode_outbox_record
from app.runtime.batching import acked_batches
from app.runtime.context import WorkerContext
from app.runtime.health import Health
from app.sections import SegmentSettings
from app.sinks.errors import SinkConfigError
from app.sinks.receipts import send_receipts
from app.sinks.segment import Deliverer, DeliveryReport, build_sink
from app.sinks.stats import SinkStats, SinkStatsCollector
from app.topics import DEADLETTER, RECEIPTS

log = logging.getLogger(__name__)


def decode_messages(values: list[bytes | None]) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
    """The Segment messages in outbox records (`SegmentCalls`: all the calls of one event; a replayed
    dead letter is one message) and a dead letter for each record that is neither."""
    messages: list[dict[str, Any]] = []
    letters: list[DeadLetter] = []
    for value in values:
        record = decode_outbox_record(value)
        if isinstance(record, DeadLetter):
            letters.append(record)
        else:
            messages.extend(record.messages)  # validation rejects a non-message
    return messages, letters


async def deliver_or_hold(
    deliverer: Deliverer, messages: list[dict[str, Any]], health: Health
) -> DeliveryReport:
    """Deliver; on a configuration error (401/403/404) hold forever (nothing acked, nothing dead-lettered)
    with the worker unready."""
    try:
        return await deliverer.deliver(messages)
    except SinkConfigError as exc:
        health.block("segment", exc.hint)
        log.error("%s. Delivery is stopped and no offset is committed.", exc.hint)
        await asyncio.Event().wait()
        raise  # never reached: the wait above never ends


def register(ctx: WorkerContext[SegmentSettings]) -> None:
    """Declare the `segment-sink` agent and expose its counters on the worker's registry."""
    settings, topics = ctx.settings, ctx.topics

    counted = DeadLetterMetrics.on(ctx.registry).total
    deadletter = settings.topic(DEADLETTER)

    async def dead_letter(letters: list[DeadLetter]) -> None:
        await send_dead_letters(ctx.outputs.send_all, deadletter, letters, counted)

    stats = SinkStats()
    deliverer = build_sink(settings, dead_letter, metrics=stats)
    ctx.closing.add(deliverer.close)
    ctx.registry.register(SinkStatsCollector("segment", "Segment", stats))

    @ctx.faust_app.agent(topics.outbox, name="segment-sink")
    async def segment_sink(stream: Any) -> None:
        async for events in acked_batches(
            stream, settings.segment_batch_max_messages, settings.segment_batch_linger
        ):
            with ctx.activity.working("segment-sink"):
                messages, letters = decode_messages([event.value for event in events])
                if letters:
                    await dead_letter(letters)
                report = await deliver_or_hold(deliverer, messages, ctx.health)
                await send_receipts(ctx.outputs.send_all, settings.topic(RECEIPTS), report.receipts)
