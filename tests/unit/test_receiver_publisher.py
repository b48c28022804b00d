"""The receiver's publisher on a real embedded broker: records written together as one batch per
partition still land where aiokafka's own `send` would put them, each once, in the order published."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import defaultdict

from aiokafka.partitioner import DefaultPartitioner

from app import topics
from app.broker.embedded import EmbeddedBroker
from app.config import Settings
from app.kafka import read_records
from app.receiver.publisher import Publisher, PublishUnavailable
from app.topics import RAW
from tests.receiver_app import receiver_settings


async def ready_publisher(settings: Settings) -> Publisher:
    """A started publisher on `settings`' topics, once it is connected (the caller stops it)."""
    await topics.ensure_topics(settings)
    publisher = Publisher(settings)
    await publisher.start()
    for _ in range(200):
        if publisher.ready:
            return publisher
        await asyncio.sleep(0.05)
    await publisher.stop()
    raise AssertionError("the publisher did not connect to the embedded broker within 10 s")


async def test_concurrent_publishes_land_once_in_order_on_the_default_partitioners_partition(
    broker: EmbeddedBroker,
) -> None:
    settings = receiver_settings(broker, kseg_topic_partitions=8, kseg_data_batch_bytes=2048)
    publisher = await ready_publisher(settings)
    try:
        topic = settings.topic(RAW)
        keys = [f"device-{n}" for n in range(40)]

        async def sender(lane: int) -> None:
            # Each lane publishes its keys' records one after another (one request at a time per
            # device, as a device's postbacks arrive), so per-key order is defined; lanes run at once.
            for seq in range(10):
                for key in keys[lane::4]:
                    # ~300 bytes: a 2 KB batch fills, so one round spans several batches per partition.
                    await publisher.publish(topic, key, f"{key}|{seq}|".encode() + b"x" * 280)

        await asyncio.gather(*(sender(lane) for lane in range(4)))
        # A record without a key keeps aiokafka's send (a random partition); it is acked too.
        await publisher.publish(topic, None, b"keyless")
        # One over the batch size keeps aiokafka's send as well.
        await publisher.publish(topic, "big", b"b" * 4096)
    finally:
        await publisher.stop()

    records = await read_records({"bootstrap_servers": broker.bootstrap_servers}, topic)
    partitioner = DefaultPartitioner()
    seen: dict[str, list[int]] = defaultdict(list)
    for record in records:
        if record.key is None:
            assert record.value == b"keyless"
            continue
        key = record.key.decode()
        assert record.partition == partitioner(record.key, list(range(8)), list(range(8))), key
        if key != "big":
            seen[key].append(int(record.value.split(b"|")[1]))
    assert len(records) == 40 * 10 + 2
    assert dict(seen) == {key: list(range(10)) for key in keys}


async def test_a_broker_that_stops_answering_fails_each_waiting_publish_at_its_deadline() -> None:
    """A stalled broker (SIGSTOP): every waiting publish ends as `PublishUnavailable` after the produce
    timeout, not later and not never; once it answers again, publishing works."""
    with EmbeddedBroker() as stalled:
        assert stalled.process is not None
        settings = receiver_settings(stalled, kseg_topic_partitions=4, kseg_produce_timeout=1.0)
        publisher = await ready_publisher(settings)
        try:
            topic = settings.topic(RAW)
            await publisher.publish(topic, "warm", b"up")  # metadata known, connection open
            os.kill(stalled.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                results = await asyncio.gather(
                    *(publisher.publish(topic, f"device-{n}", b"v") for n in range(20)),
                    return_exceptions=True,
                )
                waited = time.monotonic() - started
            finally:
                os.kill(stalled.process.pid, signal.SIGCONT)
            assert all(isinstance(r, PublishUnavailable) for r in results), results
            assert {r.reason for r in results if isinstance(r, PublishUnavailable)} == {"kafka_unavailable"}
            assert 0.9 <= waited < 3.0, waited
            for _ in range(100):  # the producer reconnects or retries on its own
                try:
                    await publisher.publish(topic, "after", b"again")
                    break
                except PublishUnavailable:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("publishing did not recover after the broker resumed")
        finally:
            await publisher.stop()
