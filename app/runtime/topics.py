"""faust topic handles for kseg's catalogued topics (bytes in, bytes out: kseg decodes with orjson)."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from app import topics
from app.config import Settings


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
    audience_changes: faust.TopicT
    kochava_outbox: faust.TopicT

    @classmethod
    def declare(cls, faust_app: faust.App, settings: Settings) -> WorkerTopics:
        def topic(*names: str) -> faust.TopicT:
            return faust_app.topic(
                *(settings.topic(name) for name in names),
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=settings.kseg_topic_partitions,
                internal=False,
            )

        return cls(
            device_stream=topic(topics.RAW, topics.DEVICE_EVENTS),
            device_events=topic(topics.DEVICE_EVENTS),
            links=topic(topics.LINKS),
            device_index=topic(topics.DEVICE_INDEX),
            outbox=topic(topics.OUTBOX),
            warehouse=topic(topics.WAREHOUSE),
            deadletter=topic(topics.DEADLETTER),
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
            topics.AUDIENCE_CHANGES: self.audience_changes,
            topics.KOCHAVA_OUTBOX: self.kochava_outbox,
        }
        return handles[name]
