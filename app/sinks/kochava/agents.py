"""The Kochava sink agent: `kochava.outbox` → Kochava S2S / IdentityLink, acked after 2xx or dead letter.

Its own topic and agent: a Kochava outage holds only this agent's offsets (lag on `kochava.outbox`),
never Segment delivery or ingest. Without KOCHAVA_APP_GUID it runs dry (KSEG_DATA_DIR/kochava-outbox.jsonl).
A 401/403/404 stops it (offsets stay uncommitted) and makes /readyz say why.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.dlq.writer import send_dead_letters
from app.metrics import DeadLetterMetrics
from app.records import DeadLetter, decode_or_dead_letter
from app.runtime.batching import acked_batches
from app.runtime.context import WorkerContext
from app.sections import KochavaSettings
from app.sinks.errors import SinkConfigError
from app.sinks.kochava.client import KochavaHttpClient
from app.sinks.kochava.dryrun import KochavaDryRun
from app.sinks.kochava.metrics import KochavaSinkMetrics
from app.sinks.kochava.requests import KochavaRequest
from app.sinks.kochava.sender import DeadLetterFn, KochavaSender
from app.sinks.ratelimit import AdaptiveRateLimiter
from app.sinks.receipts import send_receipts
from app.sinks.stats import SinkStats, SinkStatsCollector
from app.topics import DEADLETTER, RECEIPTS

log = logging.getLogger(__name__)

BATCH_MAX = 200
BATCH_WITHIN = 0.2


def decode(events: list[Any]) -> tuple[list[KochavaRequest], list[DeadLetter]]:
    requests: list[KochavaRequest] = []
    letters: list[DeadLetter] = []
    for event in events:
        request = decode_or_dead_letter(
            event.value, KochavaRequest, stage="kochava", reason="invalid_outbox_record"
        )
        if isinstance(request, DeadLetter):
            letters.append(request)
        else:
            requests.append(request)
    return requests, letters


def build_deliverer(
    settings: KochavaSettings, dead_letter: DeadLetterFn, metrics: KochavaSinkMetrics, stats: SinkStats
) -> KochavaSender | KochavaDryRun:
    """The real sender, or the dry run when KOCHAVA_APP_GUID is unset."""
    if settings.kochava_dry_run:
        return KochavaDryRun(
            settings.kseg_data_dir, settings.kochava_tracking_url, on_result=metrics.on_result
        )
    return KochavaSender(
        KochavaHttpClient(settings.kochava_tracking_url, settings.kochava_request_timeout),
        AdaptiveRateLimiter(settings.kochava_max_requests_per_second),
        app_guid=settings.kochava_app_guid or "",
        dead_letter=dead_letter,
        on_result=metrics.on_result,
        stats=stats,
        concurrency=settings.kochava_concurrency,
    )


def register(ctx: WorkerContext[KochavaSettings]) -> None:
    """Declare the `kochava-sink` agent and expose its metrics on the worker's registry."""
    settings = ctx.settings
    metrics = KochavaSinkMetrics.on(ctx.registry)
    stats = SinkStats()
    ctx.registry.register(SinkStatsCollector("kochava", "Kochava", stats))

    counted = DeadLetterMetrics.on(ctx.registry).total
    deadletter = settings.topic(DEADLETTER)

    async def dead_letter(letters: list[DeadLetter]) -> None:
        await send_dead_letters(ctx.outputs.send_all, deadletter, letters, counted)

    deliverer = build_deliverer(settings, dead_letter, metrics, stats)
    ctx.closing.add(deliverer.close)

    @ctx.faust_app.agent(ctx.topics.kochava_outbox, name="kochava-sink")
    async def kochava_sink(stream: Any) -> None:
        async for events in acked_batches(stream, BATCH_MAX, BATCH_WITHIN):
            with ctx.activity.working("kochava-sink"):
                requests, letters = decode(events)
                if letters:
                    await dead_letter(letters)
                try:
                    await deliverer.deliver(requests)
                except SinkConfigError as exc:
                    ctx.health.block("kochava", exc.hint)
                    log.error("%s", exc)
                    await asyncio.Event().wait()  # hold the batch: nothing acked, nothing dead-lettered
                await send_receipts(ctx.outputs.send_all, settings.topic(RECEIPTS), deliverer.take_receipts())
