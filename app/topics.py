"""kseg's topic catalogue (`topics/topics.yaml`) and idempotent topic creation.

Topics are created up front, by whichever process starts first, with the configured partition count,
so that the receiver never relies on broker auto-creation and co-partitioning holds from day one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from app.config import Settings

log = logging.getLogger(__name__)

CATALOGUE = Path(__file__).resolve().parent.parent / "topics" / "topics.yaml"

RAW = "postbacks.raw"
LINKS = "identity.links"
DEVICE_INDEX = "identity.device-index"
DEVICE_EVENTS = "identity.device-events"
OUTBOX = "segment.outbox"
WAREHOUSE = "warehouse.events"
DEADLETTER = "deadletter"
SPEND = "campaign.spend"
AUDIENCE_CHANGES = "audiences.changes"
KOCHAVA_OUTBOX = "kochava.outbox"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    description: str
    retention_hours: float


def catalogue(path: Path = CATALOGUE) -> list[TopicSpec]:
    data = yaml.safe_load(path.read_text())
    return [
        TopicSpec(name=name, description=spec["description"], retention_hours=float(spec["retention_hours"]))
        for name, spec in data["topics"].items()
    ]


async def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create every catalogued topic that does not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=int(timeout * 1000))
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await admin.start()
            break
        except KafkaError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"cannot reach Kafka at {settings.bootstrap}: {exc}") from exc
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=settings.topic(spec.name),
                num_partitions=settings.kseg_topic_partitions,
                replication_factor=settings.kseg_topic_replication,
                topic_configs={"retention.ms": str(int(spec.retention_hours * 3600 * 1000))},
            )
            for spec in catalogue()
            if settings.topic(spec.name) not in existing
        ]
        created: list[str] = []
        for topic in wanted:
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        await admin.close()
