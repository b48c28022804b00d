"""The Segment sink: outbox → Segment /v1/batch, committing Kafka offsets only after 2xx or dead letter.

A plain consumer group of its own (`app.sinks.consumer`, group `<KSEG_APP_ID>-segment-sink`) reading
the outbox in batches of up to SEGMENT_BATCH_MAX_MESSAGES records, in its own task of the worker or of
`kseg sinks`.

With no SEGMENT_WRITE_KEY it runs dry: the exact batch bodies go to KSEG_DATA_DIR/segment-outbox.jsonl.
A 401/403 (key) or 404 (endpoint) stops delivery (offsets stay uncommitted), marks its process (worker or
`kseg sinks`) not ready and says why; fix the setting and restart it to resume from the last committed
offset.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.dlq.writer import send_dead_letters
from app.metrics import DeadLetterMetrics
from app.records import DeadLetter, outbox_calls, unpack
from app.runtime.context import WorkerContext
from app.runtime.health import Health
from app.sections import SegmentSettings
from app.sinks.consumer import SinkConsumer
from app.sinks.errors import SinkConfigError
from app.sinks.receipts import send_receipts
from app.sinks.segment import Deliverer, DeliveryReport, build_sink
from app.sinks.stats import SinkStats, SinkStatsCollector
from app.topics import DEADLETTER, OUTBOX, RECEIPTS

log = logging.getLogger(__name__)


def decode_messages(records: list[Any]) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
    """The Segment messages in outbox records (each `key`, `value`): `SegmentCalls` (all the calls of one
    event), a bare call (a replayed dead letter) or a `Batched` record of those; and a dead letter for
    each record or item that is none of them."""
    messages: list[dict[str, Any]] = []
    letters: list[DeadLetter] = []
    for record in records:
        for _key, item in unpack(record.key, record.value, stage="segment", reason="undecodable_message"):
            calls = item if isinstance(item, DeadLetter) else outbox_calls(item)
            if isinstance(calls, DeadLetter):
                letters.append(calls)
            else:
                messages.extend(calls.messages)  # validation rejects a non-message
    return messages, letters


async def deliver_or_hold(
    deliverer: Deliverer, messages: list[dict[str, Any]], health: Health
) -> DeliveryReport:
    """Deliver; on a configuration error (401/403/404) hold forever (nothing committed, nothing
    dead-lettered) with the worker unready."""
    try:
        return await deliverer.deliver(messages)
    except SinkConfigError as exc:
        health.block("segment", exc.hint)
        log.error("%s. Delivery is stopped and no offset is committed.", exc.hint)
        await asyncio.Event().wait()
        raise  # unreachable: the wait above never ends (the task is cancelled on stop)


def register(ctx: WorkerContext[SegmentSettings]) -> None:
    """Declare the Segment sink's consumer and expose its counters on its process's registry."""
    settings = ctx.settings

    counted = DeadLetterMetrics.on(ctx.registry).total
    deadletter = settings.topic(DEADLETTER)

    async def dead_letter(letters: list[DeadLetter]) -> None:
        await send_dead_letters(ctx.outputs.send_all, deadletter, letters, counted)

    stats = SinkStats()
    deliverer = build_sink(settings, dead_letter, metrics=stats)
    ctx.closing.add(deliverer.close)
    ctx.registry.register(SinkStatsCollector("segment", "Segment", stats))

    async def handle(records: list[Any]) -> None:
        """One batch of outbox records: dead-letter the undecodable ones, deliver the rest; the consumer
        commits the batch's offsets when this returns."""
        messages, letters = decode_messages(records)
        if letters:
            await dead_letter(letters)
        report = await deliver_or_hold(deliverer, messages, ctx.health)
        await send_receipts(ctx.outputs.send_all, settings.topic(RECEIPTS), report.receipts)

    sink = SinkConsumer(
        settings,
        name="segment-sink",
        topic=settings.topic(OUTBOX),
        group=settings.sink_group("segment"),
        handle=handle,
        batch_max=settings.segment_batch_max_messages,
        linger=settings.segment_batch_linger,
        activity=ctx.activity,
        batch_bytes=4 * settings.segment_batch_max_bytes,  # a few full Segment requests
        adopt_from=settings.kseg_app_id,
    )
    ctx.faust_app.add_dependency(sink)
    ctx.positions.append(sink.offsets)
