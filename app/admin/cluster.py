"""Reading kseg's topics from a cluster and applying the safe part of a plan (the Kafka side of app/admin)."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import IncompatibleBrokerVersion, KafkaError, TopicAlreadyExistsError

from app.admin.plan import ActualTopic, Change, co_partition_problems, diff
from app.sections import KafkaSettings
from app.topics import TopicSpec, catalogue, connect_admin, new_topic

log = logging.getLogger(__name__)


class CoPartitionError(RuntimeError):
    """Co-partitioned topics disagree on their partition count: starting would split device state."""


async def describe(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, ActualTopic]:
    """Partitions, replication and configs of those of `names` that exist."""
    existing = set(await admin.list_topics())
    present = [n for n in names if n in existing]
    if not present:
        return {}
    topics = await admin.describe_topics(present)
    configs: dict[str, dict[str, str]] = {n: {} for n in present}
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in present])
    for response in responses:
        for resource in response.resources:
            _code, _message, _type, name, entries = resource[:5]
            configs[name] = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
    actual = {}
    for topic in topics:
        partitions = topic["partitions"]
        replication = max((len(p["replicas"]) for p in partitions), default=0)
        actual[topic["topic"]] = ActualTopic(
            topic["topic"], len(partitions), replication, configs[topic["topic"]]
        )
    return actual


async def plan(settings: KafkaSettings, specs: list[TopicSpec] | None = None) -> list[Change]:
    specs = specs if specs is not None else catalogue()
    admin = await connect_admin(settings)
    try:
        actual = await describe(admin, [s.full_name(settings) for s in specs])
    finally:
        await admin.close()
    return diff(specs, actual, settings)


async def apply(settings: KafkaSettings, changes: list[Change]) -> list[str]:
    """Carry out creations, config changes and partition additions of unkeyed topics (refused changes
    are skipped). Returns what failed (e.g. an operation the broker does not support), with reasons."""
    specs = {s.full_name(settings): s for s in catalogue()}
    problems: list[str] = []
    admin = await connect_admin(settings)
    try:
        for change in changes:
            spec = specs[change.topic]
            try:
                if change.action == "create":
                    await admin.create_topics([new_topic(spec, settings)])
                elif change.action == "alter_configs":
                    # AlterConfigs (not incremental) sets exactly the declared configs: topics as code.
                    resource = ConfigResource(
                        ConfigResourceType.TOPIC, change.topic, configs=spec.topic_configs(settings)
                    )
                    await admin.alter_configs([resource])
                elif change.action == "add_partitions":
                    await admin.create_partitions(
                        {change.topic: NewPartitions(spec.partition_count(settings))}
                    )
                else:
                    continue
                log.info("applied %s %s", change.action, change.topic)
            except TopicAlreadyExistsError:
                pass
            except IncompatibleBrokerVersion as exc:
                problems.append(
                    f"{change.topic}: the broker does not support {change.action} ({exc}); change it with "
                    "your provider's tools: " + change.detail
                )
            except KafkaError as exc:
                problems.append(f"{change.topic}: {change.action} failed: {exc!r}")
    finally:
        await admin.close()
    return problems


async def check_co_partitioning(settings: KafkaSettings) -> None:
    """Raise `CoPartitionError` when co-partitioned topics (or this process's configured count) disagree.

    The worker calls this before faust starts: faust would otherwise join tables to streams with a
    different partitioning and silently split each device's state."""
    specs = catalogue()
    admin = await connect_admin(settings)
    try:
        actual = await describe(admin, [s.full_name(settings) for s in specs if s.co_partitioned])
    finally:
        await admin.close()
    problems = co_partition_problems(specs, actual, settings)
    if problems:
        raise CoPartitionError("; ".join(problems))
