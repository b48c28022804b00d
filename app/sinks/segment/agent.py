"""The Segment sink agent: outbox → Segment /v1/batch, acking Kafka offsets only after 2xx or dead letter.

With no SEGMENT_WRITE_KEY it runs dry: the exact batch bodies go to KSEG_DATA_DIR/segment-outbox.jsonl.
A 401/403 stops delivery (offsets stay uncommitted), marks the worker not ready and says why; fix the
key and restart the worker to resume from the last committed offset.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.dlq.writer import send_dead_letters
from app.records import DeadLetter, loads
from app.sinks.segment import build_sink
from app.sinks.segment.policy import SegmentAuthError
from app.sinks.segment.sender import SinkStats
from app.worker import channels
from app.worker import metrics as m
from app.worker.faust_app import app, settings
from app.worker.health import health
from app.worker.watchdog import activity

log = logging.getLogger(__name__)


async def _dead_letter(letters: list[DeadLetter]) -> None:
    await send_dead_letters(channels.deadletter, letters, m.dead_letters)


sink_stats = SinkStats()
deliverer = build_sink(settings, _dead_letter, metrics=sink_stats)
m.expose_sink_stats(sink_stats)


@app.agent(channels.outbox, name="segment-sink")
async def segment_sink(stream: Any) -> None:
    s = stream.noack()
    async for events in s.noack_take(
        settings.segment_batch_max_messages, within=settings.segment_batch_linger
    ):
        with activity.working("segment-sink"):
            await deliver_batch(s, events)


async def deliver_batch(s: Any, events: list[Any]) -> None:
    """Deliver one batch of outbox events; ack them only after 2xx or their dead letters."""
    messages: list[dict[str, Any]] = []
    for event in events:
        try:
            messages.append(loads(event.value))
        except Exception as exc:
            raw = bytes(event.value or b"").decode("utf-8", "replace")
            letter = DeadLetter(
                stage="segment", reason="undecodable_message", error=repr(exc), payload={"raw": raw}
            )
            await _dead_letter([letter])
    try:
        await deliverer.deliver(messages)
    except SegmentAuthError as exc:
        health.block("segment", f"Segment answered {exc.status}: check SEGMENT_WRITE_KEY, then restart")
        log.error(
            "Segment rejected the write key (HTTP %s). Delivery is stopped and no offset is committed; "
            "fix SEGMENT_WRITE_KEY (and SEGMENT_ENDPOINT's region) and restart the worker.",
            exc.status,
        )
        await asyncio.Event().wait()  # hold the batch: nothing acked, nothing dead-lettered
    for event in events:
        await s.ack(event)
