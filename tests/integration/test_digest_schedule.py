"""The digest schedule on the real broker: a day runs once across two workers, survives restarts,
and a failed day is recorded and retried after its backoff."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime

import pytest
from aiokafka import AIOKafkaProducer

from app.config import Settings
from app.digest.schedule import DayStateStore, DigestScheduler, retry_delay
from app.kafka import producer_config
from app.topics import ensure_topics

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC).timestamp()  # past the 06:00 run hour: 2026-11-30 is due


def settings_for(broker: str, app_id: str, worker: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=broker,
        kseg_embedded_broker=True,
        kseg_app_id=app_id,
        kseg_topic_partitions=4,
        kseg_worker_id=worker,
        kochava_time_zone="UTC",
        kochava_digest_hour=6,
    )


@pytest.fixture
async def workers(broker: str) -> AsyncIterator[Callable[..., Awaitable[DigestScheduler]]]:
    """Factory of schedulers, each with its own producer, like one per worker process."""
    app_id = f"t{uuid.uuid4().hex[:10]}"
    await ensure_topics(settings_for(broker, app_id, "setup"))
    producers: list[AIOKafkaProducer] = []
    runs: list[tuple[str, date]] = []

    async def make(
        worker: str, fail: bool = False, clock: Callable[[], float] = lambda: NOW
    ) -> DigestScheduler:
        settings = settings_for(broker, app_id, worker)
        producer = AIOKafkaProducer(**producer_config(settings))
        producers.append(producer)
        await producer.start()

        async def send(topic: str, key: bytes, value: bytes) -> None:
            await producer.send_and_wait(topic, value=value, key=key)

        async def run_day(day: date) -> str:
            runs.append((worker, day))
            await asyncio.sleep(0.2)  # long enough for the other worker's tick to overlap
            if fail:
                raise RuntimeError("Kochava answered Error: App does not exist.")
            return f"digested {day}"

        scheduler = DigestScheduler(settings, DayStateStore(settings, send), run_day, clock=clock)
        scheduler.runs = runs  # type: ignore[attr-defined]
        return scheduler

    yield make
    for producer in producers:
        await producer.stop()


async def test_two_workers_ticking_together_run_the_day_once(workers) -> None:
    a, b = await workers("worker-1"), await workers("worker-2")
    outcomes = await asyncio.gather(a.tick(), b.tick(), a.tick())
    assert a.runs == [(a.runs[0][0], date(2026, 11, 30))]  # exactly one run of the due day
    assert outcomes.count("ran") == 1
    assert set(outcomes) <= {"ran", "lost_claim", "waiting"}
    # Restarted workers (new schedulers, state only in Kafka) do not run the day again.
    c, d = await workers("worker-1"), await workers("worker-2")
    assert await asyncio.gather(c.tick(), d.tick()) == ["skipped", "skipped"]
    assert len(a.runs) == 1
    history = await c.store.history("2026-11-30")
    assert [s.status for s in history][-1] == "done" and "digested 2026-11-30" in (history[-1].summary or "")


async def test_a_failed_day_is_recorded_and_retried_after_the_backoff(workers) -> None:
    clock = {"now": NOW}
    failing = await workers("worker-1", fail=True, clock=lambda: clock["now"])
    assert await failing.tick() == "failed"
    history = await failing.store.history("2026-11-30")
    assert history[-1].status == "failed" and "App does not exist." in (history[-1].error or "")
    assert history[-1].retry_at == pytest.approx(NOW + retry_delay(1))
    healthy = await workers("worker-2", clock=lambda: clock["now"])
    assert await healthy.tick() == "waiting"  # before the retry time
    clock["now"] = NOW + retry_delay(1) + 1
    assert await healthy.tick() == "ran"
    assert [w for w, _ in healthy.runs] == ["worker-1", "worker-2"]
    assert (await healthy.store.history("2026-11-30"))[-1].attempts == 2
