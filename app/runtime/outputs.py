"""The worker's output producer: the one path every agent and timer produces its records through (a
micro-batch's outbox, warehouse and identity-index records in a few produce requests instead of one
each; a single record awaited alone via `app.runtime.topics.topic_sender`; dead letters via
`app.dlq.writer.send_dead_letters`). faust's own producer writes only the tables' changelogs.

Why a second producer next to faust's own: on the embedded broker faust's producer must write one
record per batch, because Tansu reports a partition's end offset as its last batch's base offset + 1
and faust's table recovery reads changelogs up to that end. Nothing needs exact end offsets of the
output topics (their consumers resume from committed offsets, which Tansu serves past its reported end;
kseg's readers of whole topics read on past it, `app.kafka.read_records`; lag gauges may under-count
by at most one batch per partition there), so this producer packs records into real batches on every
broker. One producer for every agent keeps each partition's records in send order, whichever agent
sent them.

On the internal topics only kseg reads (`app.topics.PACKED`) it also packs what one `send_all` sends to
one partition into one `app.records.Batched` record: fewer records for the broker to write and for the
readers to go through, one per partition per micro-batch (docs/topics.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from mode import Service

from app import topics
from app.kafka import data_producer_config
from app.records import pack_records
from app.sections import KafkaSettings

#: (full topic name, key, value)
Record = tuple[str, bytes | None, bytes]

#: `OutputProducer.send_all` as a plain callable (what senders take, so unit tests can pass a list's).
SendAll = Callable[[Iterable[Record]], Awaitable[None]]


class OutputProducer(Service):
    """Started and stopped with the faust app (`faust_app.add_dependency`), before its agents."""

    def __init__(self, settings: KafkaSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self._producer: Any = None
        #: Full names of the topics whose records are packed, and their partition counts once looked up.
        self.packed = {settings.topic(name) for name in topics.PACKED}
        self._partitions: dict[str, int] = {}

    def config(self) -> dict[str, Any]:
        client_id = f"{self.settings.kseg_app_id}-{self.settings.kseg_worker_id}-outputs"
        return data_producer_config(self.settings, client_id)

    async def on_start(self) -> None:
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(**self.config())
        await self._producer.start()

    async def on_stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send_all(self, records: Iterable[Record]) -> None:
        """Queue every record, then wait until Kafka acked all of them (raises if any failed)."""
        if self._producer is None:
            raise RuntimeError("the output producer is not started (the worker is stopping?)")
        send = self._producer.send
        futures = [await send(topic, value, key) for topic, key, value in await self.pack(records)]
        await asyncio.gather(*futures)

    async def pack(self, records: Iterable[Record]) -> list[Record]:
        """`records` with each packed topic partition's share in one record (`app.records.pack_records`),
        placed by the producer's own partitioner on the topic's current partition count."""
        from aiokafka.partitioner import DefaultPartitioner

        records = list(records)
        for topic in {topic for topic, _, _ in records if topic in self.packed} - self._partitions.keys():
            self._partitions[topic] = len(await self._producer.partitions_for(topic))
        counts, partitioner = self._partitions, DefaultPartitioner()

        def partition(topic: str, key: bytes) -> int | None:
            count = counts.get(topic) if topic in self.packed else None
            if count is None:
                return None
            every = list(range(count))
            return int(partitioner(key, every, every))

        return pack_records(records, partition)
