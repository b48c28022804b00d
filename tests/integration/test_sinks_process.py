"""`kseg sinks`: the Segment and Kochava sinks in a process of their own, next to a worker started with
KSEG_WORKER_SINKS=false. Real processes, the real broker, the Segment emulator; nothing lost, the same
messages as one worker delivers, a held delivery on the sinks' /readyz."""

from __future__ import annotations

import asyncio
import random
import signal
from functools import partial
from typing import Any

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from app.topics import KOCHAVA_OUTBOX, OUTBOX, RAW
from tests.emulators.segment_api import SegmentEmulator
from tests.harness import Pipeline, metric, read_topic, wait_for
from tests.integration.test_delivery import event, level_of, send_many

#: A worker that only writes the outboxes: `kseg sinks` delivers them.
NO_SINKS = {"KSEG_WORKER_SINKS": "false"}


async def start_split(p: Pipeline) -> None:
    await p.start_receiver()
    await p.start_worker(**NO_SINKS)
    await p.start_sinks()


async def page(p: Pipeline, name: str, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{p.worker_ports[name]}{path}") as r,
    ):
        return r.status, await r.json() if path != "/metrics" else await r.text()


async def partitions(p: Pipeline, name: str) -> dict[str, set[int]]:
    """Topic -> partitions on `name`'s /debug/partitions."""
    _, body = await page(p, name, "/debug/partitions")
    found: dict[str, set[int]] = {}
    for row in body["partitions"]:
        found.setdefault(row["topic"], set()).add(row["partition"])
    return found


def content(segment: SegmentEmulator) -> dict[str, tuple[Any, ...]]:
    """messageId -> what the message says (not when it was sent); a repeat must say the same."""
    seen: dict[str, tuple[Any, ...]] = {}
    for m in segment.messages:
        said = tuple(
            m.get(k) for k in ("type", "event", "userId", "anonymousId", "previousId", "properties", "traits")
        )
        assert seen.setdefault(m["messageId"], said) == said, m
    return seen


async def group_members(bootstrap: str, group: str) -> list[list[str]]:
    """The text fields (member, instance and client ids, host) of each member of `group`, as the broker
    describes it (the fields' order depends on the DescribeGroups version)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    return [
        [str(value) for value in member if isinstance(value, str)]
        for response in described
        for row in response.groups
        for field in row
        if isinstance(field, list)
        for member in field
    ]


async def outbox_lag(p: Pipeline) -> bool:
    """True when the console's consumer lag shows the outboxes read to their end by the sinks' groups."""
    from app.config import Settings
    from app.console.cli import build

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        kafka_bootstrap_servers=p.bootstrap,
        kseg_embedded_broker=True,
        kseg_app_id=p.app_id,
        kseg_data_dir=p.data_dir,
    )
    rows = {row["topic"]: row for row in await build(settings).lag()}
    segment, kochava = rows[p.topic(OUTBOX)], rows[p.topic(KOCHAVA_OUTBOX)]
    assert (segment["group"], kochava["group"]) == (f"{p.app_id}-segment-sink", f"{p.app_id}-kochava-sink")
    return bool(segment["lag"] == 0 and kochava["lag"] == 0)


@pytest.mark.long
async def test_a_worker_without_sinks_and_kseg_sinks_deliver_what_one_worker_delivers(
    make_pipeline: Any, dump_logs: list[Pipeline]
) -> None:
    events = [event(i) for i in range(300)]
    want = {str(i) for i in range(300)}
    delivered: dict[str, dict[str, tuple[Any, ...]]] = {}
    for shape in ("one worker", "split"):
        async with SegmentEmulator(write_key="test-write-key") as segment:
            p: Pipeline = make_pipeline(segment.url)
            dump_logs.append(p)
            await (p.start() if shape == "one worker" else start_split(p))
            statuses = await send_many(p, events)
            assert set(statuses.values()) == {200}
            await wait_for(lambda: want <= {level_of(m) for m in segment.messages}, 90, f"{shape}: all")
            await asyncio.sleep(2)  # the identify calls of the last batch, if any came after
            delivered[shape] = content(segment)
            if shape == "split":
                # The worker delivered nothing itself; the sinks process did, and holds every outbox
                # partition, while the worker holds every input partition: no group is shared.
                _, worker_metrics = await page(p, "worker-1", "/metrics")
                _, sinks_metrics = await page(p, "sinks", "/metrics")
                assert metric(worker_metrics, "kseg_segment_requests_total", status="200") == 0
                assert metric(sinks_metrics, "kseg_segment_requests_total", status="200") >= 1
                on_worker, on_sinks = await partitions(p, "worker-1"), await partitions(p, "sinks")
                assert on_worker[p.topic(RAW)] == {0, 1, 2, 3}, on_worker
                assert p.topic(OUTBOX) not in on_worker and p.topic(KOCHAVA_OUTBOX) not in on_worker
                assert on_sinks == {p.topic(OUTBOX): {0, 1, 2, 3}, p.topic(KOCHAVA_OUTBOX): {0, 1, 2, 3}}
                status, ready = await page(p, "sinks", "/readyz")
                assert status == 200 and ready["partitions"] == 8, ready
                members = await group_members(p.bootstrap, p.app_id)
                assert len(members) == 1 and not any("sinks" in f for f in members[0]), members
                # The console's lag follows the sinks' groups, so it sees what the sinks process delivered.
                await wait_for(partial(outbox_lag, p), 30, "the console's outbox lag at 0")
            await p.stop()
            for name in p.procs:
                assert p.procs[name].returncode == 0, p.tail(name)
            assert (
                "Unclosed client session"
                not in p.logs["sinks" if shape == "split" else "worker-1"].read_text()
            )
    assert delivered["split"] == delivered["one worker"]


@pytest.mark.long
async def test_segment_401_shows_on_the_sinks_readyz_and_nothing_is_lost_once_fixed(
    make_pipeline: Any, dump_logs: list[Pipeline]
) -> None:
    async with SegmentEmulator(write_key="the-right-key") as segment:
        p: Pipeline = make_pipeline(segment.url)  # the harness sets a different (wrong) key
        dump_logs.append(p)
        await start_split(p)
        statuses = await send_many(p, [event(i) for i in range(20)])
        assert set(statuses.values()) == {200}

        async def held() -> bool:
            status, body = await page(p, "sinks", "/readyz")
            return status == 503 and "segment" in body["blocked"]

        await wait_for(held, 30, "the sinks process to report Segment's 401")
        status, body = await page(p, "worker-1", "/readyz")
        assert status == 200, body  # ingest and processing go on: the hold is the sinks'
        assert segment.stats()["requests_by_status"].get("401", 0) >= 1
        assert segment.messages == []
        assert await read_topic(p.bootstrap, p.topic("deadletter")) == []

        p.kill("sinks", signal.SIGTERM)
        assert p.procs["sinks"].returncode == 0, p.tail("sinks")  # a held sink does not block shutdown
        await p.start_sinks(SEGMENT_WRITE_KEY="the-right-key")
        want = {str(i) for i in range(20)}
        await wait_for(
            lambda: want <= {level_of(m) for m in segment.messages}, 60, "delivery after the key fix"
        )


@pytest.mark.long
async def test_sinks_process_sigkilled_mid_delivery_loses_nothing(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p: Pipeline = make_pipeline(segment.url)
    dump_logs.append(p)
    await start_split(p)
    total = 1200
    events = [event(i) for i in range(total)]
    statuses: dict[str, int] = {}
    outstanding = []
    for n, chunk in enumerate(events[i::3] for i in range(3)):
        segment.slow_next(2, delay=1.0)  # deliveries in flight when the kill comes
        statuses.update(await send_many(p, chunk, concurrency=32))
        await asyncio.sleep(random.uniform(0.2, 1.0))
        p.kill("sinks", signal.SIGKILL)
        assert p.procs["sinks"].returncode == -signal.SIGKILL
        accepted_yet = {level for level, status in statuses.items() if status == 200}
        outstanding.append(len(accepted_yet - {level_of(m) for m in segment.messages}))
        await p.start_sinks(wait_ready=n == 2)
    assert max(outstanding) > 0, outstanding  # at least one kill came with deliveries left to do
    accepted = {level for level, status in statuses.items() if status == 200}
    assert len(accepted) == total

    def missing() -> set[str]:
        return accepted - {level_of(m) for m in segment.messages}

    await wait_for(lambda: not missing(), 120, "every accepted postback at the emulator after 3 SIGKILLs")
    content(segment)  # repeats (after a kill) are the same messages


async def test_a_worker_with_sinks_and_kseg_sinks_share_the_outbox_partitions(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p: Pipeline = make_pipeline(segment.url)
    dump_logs.append(p)
    await p.start()  # a worker with its sinks (the default)
    await p.start_sinks()

    async def shared() -> tuple[set[int], set[int]] | None:
        on_worker = (await partitions(p, "worker-1")).get(p.topic(OUTBOX), set())
        on_sinks = (await partitions(p, "sinks")).get(p.topic(OUTBOX), set())
        return (on_worker, on_sinks) if on_worker and on_sinks else None

    on_worker, on_sinks = await wait_for(shared, 60, "the Segment sink's partitions split between both")
    assert on_worker | on_sinks == {0, 1, 2, 3} and not on_worker & on_sinks, (on_worker, on_sinks)
    statuses = await send_many(p, [event(i) for i in range(200)])
    assert set(statuses.values()) == {200}
    want = {str(i) for i in range(200)}
    await wait_for(lambda: want <= {level_of(m) for m in segment.messages}, 90, "every postback delivered")
    _, worker_metrics = await page(p, "worker-1", "/metrics")
    _, sinks_metrics = await page(p, "sinks", "/metrics")
    for text in (worker_metrics, sinks_metrics):  # both delivered their partitions' share
        assert metric(text, "kseg_segment_requests_total", status="200") >= 1
    content(segment)
