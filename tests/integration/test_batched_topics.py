"""Data topics in multi-record batches (README, "The embedded broker"): what kseg's readers and the
worker's output producer promise on the real broker of the test run."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.config import Settings
from app.kafka import data_producer_config, read_records
from app.runtime.outputs import OutputProducer


async def _topic(broker: str, partitions: int = 2) -> str:
    name = f"batched-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


def _settings(broker: str) -> Settings:
    return Settings(kafka_bootstrap_servers=broker, kseg_embedded_broker=True)


async def test_a_whole_topic_read_finds_every_record_of_multi_record_batches(broker: str) -> None:
    topic = await _topic(broker)
    producer = AIOKafkaProducer(**data_producer_config(_settings(broker), "test"))
    await producer.start()
    try:  # three waves, each queued before any is sent: several multi-record batches per partition
        for wave in range(3):
            values = [f"v{wave}-{i}".encode() for i in range(40)]
            futures = [await producer.send(topic, v, key=f"k{i % 5}".encode()) for i, v in enumerate(values)]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    records = await read_records({"bootstrap_servers": broker}, topic)
    expected = sorted(f"v{w}-{i}".encode() for w in range(3) for i in range(40))
    assert sorted(r.value for r in records) == expected
    for partition in {r.partition for r in records}:  # partition order kept
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == sorted(offsets)


async def test_output_producer_sends_a_batch_in_order_and_refuses_when_stopped(broker: str) -> None:
    topic = await _topic(broker, partitions=1)
    outputs = OutputProducer(_settings(broker))
    await outputs.start()
    try:
        await outputs.send_all((topic, b"device-1", f"{i}".encode()) for i in range(25))
    finally:
        await outputs.stop()
    records = await read_records({"bootstrap_servers": broker}, topic)
    assert [r.value for r in records] == [f"{i}".encode() for i in range(25)]
    with pytest.raises(RuntimeError, match="not started"):
        await outputs.send_all([(topic, None, b"late")])
