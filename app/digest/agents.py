"""The digest inside the worker: a leader-only timer that runs the due day once (see `schedule`).

Why a timer (every KOCHAVA_DIGEST_CHECK_SECONDS) and not a crontab: a crontab that fires while no
worker is leader (a deploy, a rebalance) skips the day; the timer asks "is a day due and not done?"
at every check, so a late worker still runs it, and the day's state in Kafka keeps it from running twice.
"""

from __future__ import annotations

import logging
from datetime import date

from app import topics
from app.digest.client import ReportingClient
from app.digest.cohort import warehouse_connection
from app.digest.job import DigestResult, run_digest
from app.digest.metrics import DigestMetrics
from app.digest.schedule import DayStateStore, DigestScheduler
from app.kafka import group_lag
from app.runtime.context import WorkerContext
from app.sections import DigestSettings
from app.sinks.ratelimit import AdaptiveRateLimiter

log = logging.getLogger(__name__)


def register(ctx: WorkerContext[DigestSettings]) -> None:
    """Declare the `digest-schedule` timer (leader only) and the digest's counters."""
    settings = ctx.settings
    metrics = DigestMetrics.on(ctx.registry)
    if not (settings.kochava_api_key and settings.kochava_app_guid):
        log.info("digest: KOCHAVA_API_KEY / KOCHAVA_APP_GUID unset, so no daily digest is scheduled")
        return

    async def send(topic: str, key: bytes, value: bytes) -> None:
        # acked before the next record: the run's counts are what Kafka holds
        await ctx.outputs.send_all([(topic, key, value)])

    pacer = AdaptiveRateLimiter(settings.kochava_digest_rate)
    outbox = settings.topic(topics.OUTBOX)

    async def run_day(day: date) -> DigestResult:
        async with ReportingClient.from_settings(settings) as client:
            result = await run_digest(
                settings,
                day=day,
                days=settings.kochava_digest_days,
                client=client,
                send=send,
                connect_warehouse=lambda: warehouse_connection(settings),
                pacer=pacer,
                backlog=lambda: group_lag(settings, settings.sink_group("segment"), outbox),
            )
        metrics.identifies.inc(sum(result.identifies.values()))
        metrics.spend_rows.inc(result.spend_rows)
        for reason, count in result.dead_letters.items():
            metrics.dead_letters.labels(stage="digest", reason=reason).inc(count)
        return result

    scheduler = DigestScheduler(settings, DayStateStore(settings, send), run_day)

    @ctx.faust_app.timer(settings.kochava_digest_check_seconds, on_leader=True, name="digest-schedule")
    async def digest_schedule() -> None:
        try:
            outcome = await scheduler.tick()
        except Exception as exc:  # Kafka unreachable while reading the state: try again next tick
            log.warning("digest schedule check failed: %s", exc)
            outcome = "check_failed"
        metrics.ticks.labels(outcome=outcome).inc()
