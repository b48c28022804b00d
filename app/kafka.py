"""Kafka client settings shared by every kseg producer, so all of them treat the broker the same way."""

from __future__ import annotations

from typing import Any

from app.config import Settings


def producer_config(settings: Settings) -> dict[str, Any]:
    """aiokafka producer kwargs: acks=all always; idempotence and batch size per broker kind."""
    return {
        "bootstrap_servers": settings.bootstrap,
        "acks": "all",
        "enable_idempotence": settings.idempotence,
        "max_batch_size": settings.producer_max_batch_bytes,
        "linger_ms": 0,
        "request_timeout_ms": int(settings.kseg_produce_timeout * 1000),
        "client_id": f"{settings.kseg_app_id}-producer",
    }


async def read_to_end(settings: Settings, topic: str) -> list[Any]:
    """Every record of `topic`, from the beginning to the end offsets at the call (for CLIs: dead letters,
    a table's changelog). aiokafka `ConsumerRecord`s in partition order; [] when the topic is missing."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # refreshes metadata for every topic
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=2000)
            if not batch:
                break
            for tp, records in batch.items():
                for record in records:
                    out.append(record)
                    if record.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        return out
    finally:
        await consumer.stop()
