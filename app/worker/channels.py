"""faust topic handles for kseg's catalogued topics (bytes in, bytes out: kseg decodes with orjson)."""

from __future__ import annotations

import faust

from app import topics
from app.worker.faust_app import app, settings


def _topic(*names: str) -> faust.TopicT:
    return app.topic(
        *(settings.topic(name) for name in names),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.kseg_topic_partitions,
        internal=False,
    )


#: The device-keyed input of the processing agent: postbacks and user-link notices, co-partitioned.
device_stream = _topic(topics.RAW, topics.DEVICE_EVENTS)
device_events = _topic(topics.DEVICE_EVENTS)
links = _topic(topics.LINKS)
device_index = _topic(topics.DEVICE_INDEX)
outbox = _topic(topics.OUTBOX)
warehouse = _topic(topics.WAREHOUSE)
deadletter = _topic(topics.DEADLETTER)
audience_changes = _topic(topics.AUDIENCE_CHANGES)
kochava_outbox = _topic(topics.KOCHAVA_OUTBOX)
