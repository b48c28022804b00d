"""faust topic handles for kseg's catalogued topics (bytes in, bytes out: kseg decodes with orjson)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust

from app import topics
from app.sections import SharedSettings


def raw_topic(faust_app: faust.App, *names: str, partitions: int) -> faust.TopicT:
    """A faust handle on full topic names with raw bytes keys and values (kseg decodes with orjson)."""
    return faust_app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=False,
    )


Send = Callable[[bytes | None, bytes], Awaitable[None]]


def topic_sender(topic: Any) -> Send:
    """One record at a time through faust's `Topic.send`, returning once Kafka acked it (the agents
    that are not micro-batched: their next step relies on the record being durable)."""

    async def send(key: bytes | None, value: bytes) -> None:
        fut = await topic.send(key=key, value=value)
        await fut

    return send


@dataclass(frozen=True)
class WorkerTopics:
    """One handle per topic the worker reads or writes."""

    #: The device-keyed input of the processing agent: postbacks and user-link notices, co-partitioned.
    device_stream: faust.TopicT
    device_events: faust.TopicT
    links: faust.TopicT
    device_index: faust.TopicT
    outbox: faust.TopicT
    warehouse: faust.TopicT
    deadletter: faust.TopicT
    spend: faust.TopicT
    digest_days: faust.TopicT
    audience_changes: faust.TopicT
    kochava_outbox: faust.TopicT

    @classmethod
    def declare(cls, faust_app: faust.App, settings: SharedSettings) -> WorkerTopics:
        def topic(*names: str) -> faust.TopicT:
            full = (settings.topic(name) for name in names)
            return raw_topic(faust_app, *full, partitions=settings.kseg_topic_partitions)

        return cls(
            device_stream=topic(topics.RAW, topics.DEVICE_EVENTS),
            device_events=topic(topics.DEVICE_EVENTS),
            links=topic(topics.LINKS),
            device_index=topic(topics.DEVICE_INDEX),
            outbox=topic(topics.OUTBOX),
            warehouse=topic(topics.WAREHOUSE),
            deadletter=topic(topics.DEADLETTER),
            spend=topic(topics.SPEND),
            digest_days=topic(topics.DIGEST_DAYS),
            audience_changes=topic(topics.AUDIENCE_CHANGES),
            kochava_outbox=topic(topics.KOCHAVA_OUTBOX),
        )

    def by_name(self, name: str) -> faust.TopicT:
        """The handle of one logical topic name from `app.topics` (what pure steps produce to)."""
        handles = {
            topics.DEVICE_EVENTS: self.device_events,
            topics.LINKS: self.links,
            topics.DEVICE_INDEX: self.device_index,
            topics.OUTBOX: self.outbox,
            topics.WAREHOUSE: self.warehouse,
            topics.DEADLETTER: self.deadletter,
            topics.SPEND: self.spend,
            topics.DIGEST_DAYS: self.digest_days,
            topics.AUDIENCE_CHANGES: self.audience_changes,
            topics.KOCHAVA_OUTBOX: self.kochava_outbox,
        }
        return handles[name]
