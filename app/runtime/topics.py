"""faust topic handles for the topics kseg's agents consume (bytes in, bytes out: kseg decodes with orjson),
and the sender of one awaited record through the output producer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import faust

from app import topics
from app.runtime.outputs import SendAll
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


def topic_sender(send_all: SendAll, topic: str) -> Send:
    """One record at a time to the full `topic` name through the output producer's `send_all`
    (`ctx.outputs.send_all`), returning once Kafka acked it (the agents that are not micro-batched:
    their next step relies on the record being durable)."""

    async def send(key: bytes | None, value: bytes) -> None:
        await send_all([(topic, key, value)])

    return send


@dataclass(frozen=True)
class WorkerTopics:
    """One handle per topic the worker's agents consume (they produce through `app.runtime.outputs`)."""

    #: The device-keyed input of the processing agent: postbacks and user-link notices, co-partitioned.
    device_stream: faust.TopicT
    links: faust.TopicT
    device_index: faust.TopicT
    outbox: faust.TopicT
    audience_changes: faust.TopicT
    kochava_outbox: faust.TopicT

    @classmethod
    def declare(cls, faust_app: faust.App, settings: SharedSettings) -> WorkerTopics:
        def topic(*names: str) -> faust.TopicT:
            full = (settings.topic(name) for name in names)
            return raw_topic(faust_app, *full, partitions=settings.kseg_topic_partitions)

        return cls(
            device_stream=topic(topics.RAW, topics.DEVICE_EVENTS, topics.PRIVACY_ERASE_DEVICES),
            links=topic(topics.LINKS),
            device_index=topic(topics.DEVICE_INDEX, topics.PRIVACY_ERASE_INDEX),
            outbox=topic(topics.OUTBOX),
            audience_changes=topic(topics.AUDIENCE_CHANGES, topics.PRIVACY_ERASE_MEMBERS),
            kochava_outbox=topic(topics.KOCHAVA_OUTBOX),
        )
