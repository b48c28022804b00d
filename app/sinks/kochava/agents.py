"""The Kochava sink: `kochava.outbox` → Kochava S2S / IdentityLink, committed after 2xx or dead letter.

Its own topic and consumer group (`<KSEG_APP_ID>-kochava-sink`, `app.sinks.consumer`): a Kochava outage
holds only this sink's offsets (lag on `kochava.outbox`),
never Segment delivery or ingest. Without KOCHAVA_APP_GUID it runs dry (KSEG_DATA_DIR/kochava-outbox.jsonl).
A 401/403/404 stops it (offsets stay uncommitted) and makes /readyz say why.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.dlq.writer import send_dead_letters
from app.metrics import DeadLetterMetrics
from app.records import DeadLetter, unpack, validate_or_dead_letter
from app.runtime.context import WorkerContext
from app.runtime.health import Health
from app.sections import KochavaSettings
from app.sinks.consumer import SinkConsumer
from app.sinks.errors import SinkConfigError
from app.sinks.kochava.client import KochavaHttpClient
from app.sinks.kochava.dryrun import KochavaDryRun
from app.sinks.kochava.metrics import KochavaSinkMetrics
from app.sinks.kochava.requests import KochavaRequest
from app.sinks.kochava.sender import DeadLetterFn, KochavaSender
from app.sinks.ratelimit import AdaptiveRateLimiter
from app.sinks.receipts import send_receipts
from app.sinks.stats import SinkStats, SinkStatsCollector
from app.topics import DEADLETTER, KOCHAVA_OUTBOX, RECEIPTS

log = logging.getLogger(__name__)

BATCH_MAX = 200
BATCH_WITHIN = 0.2
#: Longest fetch wait of the Kochava sink, ms: its outbox is quiet most of the time, and on the embedded
#: broker every idle fetch costs broker CPU (one per wait); Kochava requests wait a batch linger anyway.
FETCH_WAIT_MS = 250


def decode(records: list[Any]) -> tuple[list[KochavaRequest], list[DeadLetter]]:
    """The requests in outbox records (each `key`, `value`): one request, or a `Batched` record of them;
    a dead letter for each record or item that is not one."""
    requests: list[KochavaRequest] = []
    letters: list[DeadLetter] = []
    for record in records:
        for _key, item in unpack(record.key, record.value, stage="kochava", reason="invalid_outbox_record"):
            request = (
                item
                if isinstance(item, DeadLetter)
                else validate_or_dead_letter(
                    item, KochavaRequest, stage="kochava", reason="invalid_outbox_record"
                )
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


async def deliver_or_hold(
    deliverer: KochavaSender | KochavaDryRun, requests: list[KochavaRequest], health: Health
) -> int:
    """Deliver; on a 401/403/404 hold the batch forever (nothing committed, nothing dead-lettered) with
    the worker unready."""
    try:
        return await deliverer.deliver(requests)
    except SinkConfigError as exc:
        health.block("kochava", exc.hint)
        log.error("%s", exc)
        await asyncio.Event().wait()
        raise  # unreachable: the wait above never ends (the task is cancelled on stop)


def register(ctx: WorkerContext[KochavaSettings]) -> None:
    """Declare the Kochava sink's consumer and expose its metrics on its process's registry."""
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

    async def handle(records: list[Any]) -> None:
        """One batch of outbox records: dead-letter the invalid ones, deliver the rest; the consumer
        commits the batch's offsets when this returns."""
        requests, letters = decode(records)
        if letters:
            await dead_letter(letters)
        await deliver_or_hold(deliverer, requests, ctx.health)
        await send_receipts(ctx.outputs.send_all, settings.topic(RECEIPTS), deliverer.take_receipts())

    sink = SinkConsumer(
        settings,
        name="kochava-sink",
        topic=settings.topic(KOCHAVA_OUTBOX),
        group=settings.sink_group("kochava"),
        handle=handle,
        batch_max=BATCH_MAX,
        linger=BATCH_WITHIN,
        activity=ctx.activity,
        fetch_wait_ms=max(FETCH_WAIT_MS, settings.fetch_max_wait_ms),
        adopt_from=settings.kseg_app_id,
    )
    ctx.faust_app.add_dependency(sink)
    ctx.positions.append(sink.offsets)
