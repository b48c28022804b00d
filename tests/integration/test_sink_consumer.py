"""The sinks' outbox consumer (`app.sinks.consumer.SinkConsumer`) on the real broker: offsets committed in
the sink's own group only after a batch was handled, a failing or held batch never committed, partition
order kept, and a group with no offsets starting where the worker group stopped (an upgrade from the
faust agents); and the output producer packing one partition's share of a send into one record."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from app.config import Settings
from app.kafka import read_records
from app.records import unpack
from app.runtime.outputs import OutputProducer
from app.runtime.watchdog import AgentActivity
from app.sinks.consumer import SinkConsumer
from tests.harness import wait_for


def _settings(broker: str, app_id: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap_servers=broker,
        kseg_embedded_broker=True,
        kseg_app_id=app_id,
        kseg_session_timeout=10.0,
    )


async def _outbox(broker: str, settings: Settings, partitions: int) -> str:
    name = settings.topic("segment.outbox")
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def _produce(broker: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker, max_batch_size=1)
    await producer.start()
    try:
        for partition, value in values:
            await producer.send_and_wait(topic, value, key=b"d", partition=partition)
    finally:
        await producer.stop()


async def _committed(broker: str, group: str, tps: list[TopicPartition]) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp.partition: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


def _sink(settings: Settings, topic: str, handle: Any) -> SinkConsumer:
    return SinkConsumer(
        settings,
        name="segment-sink",
        topic=topic,
        group=settings.sink_group("segment"),
        handle=handle,
        batch_max=50,
        linger=0.05,
        activity=AgentActivity(),
        adopt_from=settings.kseg_app_id,
    )


async def test_offsets_are_committed_only_after_a_batch_is_handled_from_the_worker_groups_place(
    broker: str,
) -> None:
    settings = _settings(broker, f"t{uuid.uuid4().hex[:8]}")
    topic = await _outbox(broker, settings, partitions=2)
    tps = [TopicPartition(topic, p) for p in range(2)]
    await _produce(broker, topic, [(p, f"{p}-{i}".encode()) for i in range(10) for p in range(2)])
    # The faust agents (a member of the worker group) had delivered partition 0 up to offset 4.
    worker = AIOKafkaConsumer(
        topic, bootstrap_servers=broker, group_id=settings.kseg_app_id, enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=10_000,
    )  # fmt: skip
    await worker.start()
    try:
        await wait_for(lambda: worker.assignment() == set(tps), 60, "the worker group's assignment")
        await worker.commit({tps[0]: OffsetAndMetadata(4, "")})
    finally:
        await worker.stop()

    seen: list[bytes] = []
    failures: list[int] = []
    failing = True

    async def handle(records: list[Any]) -> None:
        if failing:  # delivery keeps failing: nothing may be committed, the batch is read again
            failures.append(len(records))
            raise RuntimeError("delivery failed")
        seen.extend(r.value for r in records)

    sink = _sink(settings, topic, handle)
    await sink.start()
    try:
        await wait_for(lambda: len(failures) >= 2, 60, "the failing batch to be tried twice")
        assert seen == [] and await _committed(broker, settings.sink_group("segment"), tps) == {
            0: None,
            1: None,
        }
        failing = False
        expected = [f"0-{i}".encode() for i in range(4, 10)] + [f"1-{i}".encode() for i in range(10)]
        await wait_for(lambda: sorted(seen) == sorted(expected), 60, "every record from the worker's place")
        for p in range(2):  # partition order kept
            ours = [v for v in seen if v.startswith(f"{p}-".encode())]
            assert ours == [v for v in expected if v.startswith(f"{p}-".encode())]

        async def committed() -> bool:
            return await _committed(broker, settings.sink_group("segment"), tps) == {0: 10, 1: 10}

        await wait_for(committed, 30, "the sink group's commits after delivery")
        offsets = sink.offsets()
        assert {tp.partition: (o.committed, o.highwater) for tp, o in offsets.items()} == {
            0: (10, 10),
            1: (10, 10),
        }
    finally:
        await sink.stop()


async def test_a_held_batch_is_never_committed_and_the_consumer_keeps_its_group(broker: str) -> None:
    settings = _settings(broker, f"t{uuid.uuid4().hex[:8]}")
    topic = await _outbox(broker, settings, partitions=1)
    tps = [TopicPartition(topic, 0)]
    await _produce(broker, topic, [(0, f"v{i}".encode()) for i in range(3)])
    started = asyncio.Event()

    async def hold(records: list[Any]) -> None:  # a Segment 401: the sink waits for a restart
        started.set()
        await asyncio.Event().wait()

    sink = _sink(settings, topic, hold)
    await sink.start()
    try:
        await asyncio.wait_for(started.wait(), 60)
        await asyncio.sleep(settings.kseg_session_timeout * 1.5)  # longer than a session: still a member
        assert sink.consumer is not None and sink.consumer.assignment() == set(tps)
        assert await _committed(broker, settings.sink_group("segment"), tps) == {0: None}
    finally:
        await sink.stop()


async def test_the_output_producer_packs_one_partitions_share_of_a_send_into_one_record(broker: str) -> None:
    settings = _settings(broker, f"t{uuid.uuid4().hex[:8]}")
    topic = await _outbox(broker, settings, partitions=2)
    outputs = OutputProducer(settings)
    await outputs.start()
    try:
        sends = [(topic, f"dev-{i % 5}".encode(), b'{"n":%d}' % i) for i in range(40)]
        await outputs.send_all(sends)
    finally:
        await outputs.stop()
    records = await read_records({"bootstrap_servers": broker}, topic)
    assert 1 <= len(records) <= 2  # one per partition the five devices fall in
    got = {
        r.partition: [(k, v["n"]) for k, v in unpack(r.key, r.value, stage="segment", reason="r")]
        for r in records
    }
    for items in got.values():  # each device's records in send order, each under its own key
        keys = {k for k, _ in items}
        assert items == [(k, int(v[5:-1])) for _, k, v in sends if k in keys]
    assert sorted(n for items in got.values() for _, n in items) == list(range(40))
