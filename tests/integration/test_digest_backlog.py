"""Live traffic first: the digest's fan-out measures the Segment outbox backlog on the real broker and
waits (bounded) while it is above the limit."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app.config import Settings
from app.digest.job import wait_for_room
from app.kafka import group_lag, producer_config
from app.topics import OUTBOX, ensure_topics

pytestmark = pytest.mark.integration


async def test_outbox_backlog_is_measured_and_waited_for(broker: str) -> None:
    settings = Settings(
        kafka_bootstrap_servers=broker, kseg_embedded_broker=True, kseg_app_id=f"t{uuid.uuid4().hex[:10]}",
        kseg_topic_partitions=2,
    )  # fmt: skip
    await ensure_topics(settings)
    topic = settings.topic(OUTBOX)
    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, key=f"k{i}".encode(), value=b"{}")
    finally:
        await producer.stop()

    def backlog() -> Awaitable[int]:
        return group_lag(settings, settings.kseg_app_id, topic)

    assert await group_lag(settings, settings.kseg_app_id, topic) == 5  # nothing delivered yet
    started = time.monotonic()
    assert await wait_for_room(backlog, limit=2, poll=0.2, max_pause=1.5) == 1  # paused, then gave up
    assert time.monotonic() - started >= 1.5
    assert await wait_for_room(backlog, limit=10, poll=0.2) == 0
    assert await wait_for_room(backlog, limit=0, poll=0.2) == 0  # 0: never wait

    # The sink's group consumes and commits: the backlog is gone.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker, group_id=settings.kseg_app_id, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )  # fmt: skip
    await consumer.start()
    try:
        seen = 0
        deadline = time.monotonic() + 60
        while seen < 5 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            seen += sum(len(records) for records in batch.values())
        await consumer.commit()
    finally:
        await consumer.stop()
    assert await group_lag(settings, settings.kseg_app_id, topic) == 0
