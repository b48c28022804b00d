"""Table state written in multi-record changelog batches is recovered exactly on the embedded broker:
by the same worker after a SIGKILL (its RocksDB holds offsets past the broker's reported end) and by
a second worker that takes partitions over with only their changelogs (the last batch's records lie
past that end)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.kafka import read_records
from tests.emulators.segment_api import SegmentEmulator
from tests.harness import Pipeline, wait_for
from tests.integration.test_identity import install, of_type, purchase

#: Devices installed before the worker starts: one micro-batch then writes many changelog records per
#: partition.
DEVICES = [f"KIBATCH{i:03d}" for i in range(120)]


async def gather_ok(p: Pipeline, queries: list[dict[str, str]]) -> None:
    """Send postbacks concurrently (so the worker's micro-batches fill); every one must be accepted."""
    for start in range(0, len(queries), 40):
        answers = await asyncio.gather(*(p.get(q) for q in queries[start : start + 40]))
        assert [a[0] for a in answers] == [200] * len(answers)


async def reported_and_read(bootstrap: str, topic: str) -> tuple[int, int]:
    """(sum of the end offsets the broker reports, records actually in the topic)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        parts = [TopicPartition(topic, n) for n in sorted(consumer.partitions_for_topic(topic) or ())]
        reported = sum((await consumer.end_offsets(parts)).values())
    finally:
        await consumer.stop()
    return reported, len(await read_records({"bootstrap_servers": bootstrap}, topic))


async def both_assigned(p: Pipeline) -> bool:
    counts = []
    async with aiohttp.ClientSession() as session:
        for name in ("worker-1", "worker-2"):
            async with session.get(f"http://127.0.0.1:{p.worker_ports[name]}/readyz") as r:
                counts.append((await r.json()).get("partitions", 0))
    return all(counts)


async def campaigns_of_orders(segment: SegmentEmulator, order_base: int, what: str) -> dict[str, str]:
    """Wait for the `Order Completed` of every device's purchase numbered `order_base + i`; return each
    device's `install_campaign` (read from its profile, the table under test)."""
    wanted = {f"o-{order_base + i}": device for i, device in enumerate(DEVICES)}
    found: dict[str, str] = {}

    def complete() -> bool:
        for m in of_type(segment, "track", "Order Completed"):
            device = wanted.get(m["properties"].get("order_id", ""))
            if device is not None:
                found[device] = m["properties"].get("install_campaign")
        return len(found) == len(DEVICES)

    try:
        await wait_for(complete, 120, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; missing {sorted(set(DEVICES) - set(found))[:10]}") from None
    return found


async def test_batched_changelogs_recover_exactly_after_a_kill_and_on_another_worker(
    make_isolated_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p = make_isolated_pipeline(segment.url)
    dump_logs.append(p)
    expected = {device: f"camp-{i % 7}" for i, device in enumerate(DEVICES)}
    # Queued before the worker starts, so its first micro-batches (and faust's changelog batches) are full.
    await p.start_receiver()
    await gather_ok(
        p,
        [
            install(device, campaign=expected[device], idfv=f"00000000-0000-0000-0000-00000000{i:04d}")
            for i, device in enumerate(DEVICES)
        ],
    )
    await p.start_worker()
    await wait_for(
        lambda: len(of_type(segment, "track", "Install Attributed")) >= len(DEVICES), 90, "installs"
    )
    # The premise: the profiles went to their changelog in real batches, so the broker's end offsets
    # fall short of what the changelog holds (with one-record batches they are equal).
    reported, held = await reported_and_read(p.bootstrap, f"{p.app_id}-profiles-changelog")
    assert held >= len(DEVICES) and reported < held, (reported, held)

    # The same worker, killed, restarts on its own RocksDB: persisted offsets past the reported ends.
    p.kill("worker-1", signal.SIGKILL)
    await p.start_worker("worker-1")
    await gather_ok(p, [purchase(device, i) for i, device in enumerate(DEVICES)])
    assert await campaigns_of_orders(segment, 0, "purchases after the restart") == expected

    # A second worker with no state of its own takes half the partitions: only the changelogs tell it.
    await p.start_worker("worker-2")
    await wait_for(lambda: both_assigned(p), 120, "both workers to own partitions")
    await gather_ok(p, [purchase(device, 1000 + i) for i, device in enumerate(DEVICES)])
    assert await campaigns_of_orders(segment, 1000, "purchases after the takeover") == expected
