"""`kseg topics migrate`: a new generation of kseg's topics with another partition count, state included.

Adding partitions to a keyed topic re-maps keys (murmur2(key) % partitions), so each device's table state
would stay behind in its old partition. Instead, every catalogued topic is copied into a new generation
(app id `kseg-g2`, then `kseg-g3`, ...) whose topics have N partitions:
- records of `partitioned_by: key` topics (postbacks, identity topics, the profiles and identity-devices
  changelogs) go to murmur2(key) % N, the partition the receiver's and faust's producers will use;
- records of `partitioned_by: source` changelogs (a table keyed by other than its source topic, placed
  by the device key of its event) go to every new partition that old partition's keys can map to;
- the worker group's input topics are copied from its committed offsets (what it had not processed), the
  sinks' outboxes from their own groups' (falling back to the worker group's), the changelogs and the
  other topics from their beginning;
- a `Batched` record of a packed internal topic (docs/topics.md) is split into its items, each placed by
  its own key and written on its own (the readers take both shapes).
Workers then start with KSEG_APP_ID=<new generation> and KSEG_TOPIC_PARTITIONS=N and recover their tables
from the copied changelogs (docs/operations.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from app.admin.cluster import describe
from app.kafka import consumer_config, producer_config
from app.records import unpack
from app.sections import KafkaSettings
from app.topics import KOCHAVA_OUTBOX, OUTBOX, PACKED, TopicSpec, catalogue, connect_admin, new_topic

_partitioner = DefaultPartitioner()

#: Topics read by a consumer group of their own (the sinks'), not the worker group.
SINK_OF = {OUTBOX: "segment", KOCHAVA_OUTBOX: "kochava"}


class MigrationRefused(RuntimeError):
    """The migration cannot run safely as asked; the message says why and what to do."""


def next_generation(app_id: str) -> str:
    """`kseg` → `kseg-g2`, `kseg-g2` → `kseg-g3`."""
    match = re.fullmatch(r"(.+)-g(\d+)", app_id)
    if match:
        return f"{match.group(1)}-g{int(match.group(2)) + 1}"
    return f"{app_id}-g2"


def partition_key(spec: TopicSpec, key: bytes) -> bytes:
    """The bytes the producers hashed: the key itself, or the string inside a JSON-encoded key."""
    if spec.key_format == "json":
        decoded = orjson.loads(key)
        return decoded.encode() if isinstance(decoded, str) else key
    return key


def key_partition(key: bytes, partitions: int) -> int:
    """The partition aiokafka's (and Java's) default partitioner picks for a key."""
    all_partitions = list(range(partitions))
    return int(_partitioner(key, all_partitions, all_partitions))


def target_partitions(
    spec: TopicSpec, key: bytes | None, old_partition: int, old_count: int, new_count: int
) -> list[int]:
    """Where one record of `spec` goes in the new generation."""
    if spec.partitioned_by == "source":
        if new_count % old_count == 0:
            # A key in old partition p has murmur2 % old == p, so murmur2 % new is one of p, p+old, ...
            return list(range(old_partition, new_count, old_count))
        return list(range(new_count))
    if key is None:
        return [old_partition % new_count]
    return [key_partition(partition_key(spec, key), new_count)]


@dataclass
class TopicCopy:
    source: str
    target: str
    read: int = 0
    written: int = 0
    from_committed: bool = False


async def _committed(
    settings: KafkaSettings, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The worker group's committed offsets (no entry: nothing committed)."""
    consumer = AIOKafkaConsumer(**consumer_config(settings, group_id=group))
    await consumer.start()
    try:
        offsets = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            if committed is not None and committed >= 0:
                offsets[tp] = committed
        return offsets
    finally:
        await consumer.stop()


async def _refuse_written_changelogs(
    settings: KafkaSettings, specs: list[TopicSpec], targets: dict[str, Any], target_app: str
) -> None:
    """A target changelog with records means workers of the new generation already ran: copying the old
    state over theirs would mix two histories."""
    tps = [
        TopicPartition(name, p)
        for spec in specs
        if spec.kind == "changelog" and (name := spec.full_name(settings, target_app)) in targets
        for p in range(targets[name].partitions)
    ]
    if not tps:
        return
    consumer = AIOKafkaConsumer(**consumer_config(settings))
    await consumer.start()
    try:
        written = sorted({tp.topic for tp, end in (await consumer.end_offsets(tps)).items() if end > 0})
    finally:
        await consumer.stop()
    if written:
        raise MigrationRefused(
            f"{', '.join(written)} already hold table state: workers of {target_app} have run. Migrate "
            "before starting them (docs/operations.md, step 4), or pick another --to-app-id"
        )


async def migrate(
    settings: KafkaSettings,
    partitions: int,
    target_app_id: str | None = None,
    say: Callable[[str], None] = print,
) -> tuple[str, list[TopicCopy]]:
    """Create the next generation with `partitions` partitions and copy every catalogued topic into it."""
    source_app = settings.kseg_app_id
    target_app = target_app_id or next_generation(source_app)
    specs = catalogue()
    admin = await connect_admin(settings)
    try:
        sources = await describe(admin, [s.full_name(settings) for s in specs])
        targets = await describe(admin, [s.full_name(settings, target_app) for s in specs])
        missing = [
            s.full_name(settings) for s in specs if s.kind == "topic" and s.full_name(settings) not in sources
        ]
        if missing:
            raise MigrationRefused(
                f"source topics missing under KSEG_APP_ID={source_app}: {', '.join(missing)}"
            )
        for spec in specs:
            name = spec.full_name(settings, target_app)
            want = spec.partitions or partitions
            if name in targets and targets[name].partitions != want:
                raise MigrationRefused(
                    f"{name} exists with {targets[name].partitions} partitions, not {want}: pick another "
                    "target with --to-app-id, or delete that topic"
                )
        for spec in specs:
            if spec.full_name(settings, target_app) not in targets:
                await admin.create_topics(
                    [new_topic(spec, settings, target_app, spec.partitions or partitions)]
                )
    finally:
        await admin.close()

    await _refuse_written_changelogs(settings, specs, targets, target_app)

    group_tps = [
        TopicPartition(s.full_name(settings), p)
        for s in specs
        if s.kind == "topic" and s.full_name(settings) in sources
        for p in range(sources[s.full_name(settings)].partitions)
    ]
    committed = await _committed(settings, source_app, group_tps)
    for spec in specs:
        if spec.name in SINK_OF and spec.full_name(settings) in sources:
            tps = [tp for tp in group_tps if tp.topic == spec.full_name(settings)]
            committed |= await _committed(settings, settings.sink_group(SINK_OF[spec.name]), tps)

    producer = AIOKafkaProducer(**producer_config(settings))
    await producer.start()
    copies: list[TopicCopy] = []
    try:
        for spec in specs:
            source = spec.full_name(settings)
            if source not in sources:
                continue  # a changelog faust never created (its table was never written)
            copy = TopicCopy(source, spec.full_name(settings, target_app))
            old_count = sources[source].partitions
            starts = {
                p: committed.get(TopicPartition(source, p)) if spec.kind == "topic" else None
                for p in range(old_count)
            }
            copy.from_committed = any(v is not None for v in starts.values())
            await _copy_topic(settings, producer, spec, copy, starts, spec.partitions or partitions)
            await producer.flush()
            say(
                f"  {copy.source} -> {copy.target}: {copy.read} read, {copy.written} written"
                + (" (from the worker group's committed offsets)" if copy.from_committed else "")
            )
            copies.append(copy)
    finally:
        await producer.stop()
    return target_app, copies


async def _copy_topic(
    settings: KafkaSettings,
    producer: AIOKafkaProducer,
    spec: TopicSpec,
    copy: TopicCopy,
    starts: dict[int, int | None],
    new_count: int,
) -> None:
    """Copy every partition of one topic from its start offset to its end (the workers are stopped)."""
    old_count = len(starts)
    tps = [TopicPartition(copy.source, p) for p in range(old_count)]
    consumer = AIOKafkaConsumer(**consumer_config(settings))
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            start = starts[tp.partition]
            if start is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)
        # To the end offsets at the start, then on until the topic is quiet: the embedded broker's end
        # offset stops at the first record of a partition's last batch (app.kafka.read_records).
        behind = {tp for tp in tps if ends[tp] > (starts[tp.partition] or 0)}
        while True:
            batch = await consumer.getmany(*tps, timeout_ms=5000 if behind else 300)
            if not batch:
                if behind:
                    stuck = ", ".join(f"[{tp.partition}] before {ends[tp]}" for tp in sorted(behind))
                    raise MigrationRefused(f"{copy.source} stopped before its end offsets: {stuck}")
                return
            for tp, records in batch.items():
                for record in records:
                    await _copy_record(producer, spec, copy, record, tp.partition, old_count, new_count)
                if records and records[-1].offset + 1 >= ends[tp]:
                    behind.discard(tp)
    finally:
        await consumer.stop()


async def _copy_record(
    producer: AIOKafkaProducer,
    spec: TopicSpec,
    copy: TopicCopy,
    record: Any,
    old_partition: int,
    old_count: int,
    new_count: int,
) -> None:
    copy.read += 1
    if spec.partitioned_by == "key" and record.key is not None and spec.keyed:
        placed = key_partition(partition_key(spec, record.key), old_count)
        if placed != old_partition:
            raise MigrationRefused(
                f"{copy.source}[{old_partition}] offset {record.offset}: key {record.key!r} belongs to "
                f"partition {placed} under murmur2, so this topic is not placed by its key; declare "
                "its `key_format`, or `partitioned_by: source`, in topics.yaml"
            )
    items: list[tuple[bytes | None, bytes]] = [(record.key, record.value)]
    if spec.kind == "topic" and spec.name in PACKED:
        unpacked = unpack(record.key, record.value, stage="segment", reason="migrate")
        if len(unpacked) > 1:  # a Batched record: its items go where their own keys place them
            items = [(key, orjson.dumps(item)) for key, item in unpacked if isinstance(item, dict)]
    for key, value in items:
        for target in target_partitions(spec, key, old_partition, old_count, new_count):
            await producer.send(
                copy.target,
                value=value,
                key=key,
                partition=target,
                timestamp_ms=record.timestamp if record.timestamp and record.timestamp > 0 else None,
                headers=list(record.headers) or None,
            )
            copy.written += 1
