"""Every agent produces through the one output producer's `send_all`: a single record awaited alone
(`topic_sender`) and dead letters (`send_dead_letters`) reach it as (full topic, key, value) records."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import orjson
from prometheus_client import CollectorRegistry, Counter

from app.dlq.writer import send_dead_letters
from app.records import DeadLetter
from app.runtime.outputs import Record
from app.runtime.topics import topic_sender


class Outputs:
    """Stands in for `OutputProducer.send_all`: keeps each call's records; acks when `acked` is set."""

    def __init__(self) -> None:
        self.calls: list[list[Record]] = []
        self.acked = asyncio.Event()

    async def send_all(self, records: Iterable[Record]) -> None:
        self.calls.append(list(records))
        await self.acked.wait()


async def test_topic_sender_sends_one_record_to_its_topic_and_returns_only_once_acked() -> None:
    outputs = Outputs()
    send = topic_sender(outputs.send_all, "kseg.identity.device-index")
    pending = asyncio.create_task(send(b"k", b"v"))
    await asyncio.sleep(0.01)
    assert outputs.calls == [[("kseg.identity.device-index", b"k", b"v")]]
    assert not pending.done()  # the caller waits for the ack
    outputs.acked.set()
    await asyncio.wait_for(pending, 1)


async def test_dead_letters_go_out_together_redacted_counted_and_awaited() -> None:
    outputs = Outputs()
    registry = CollectorRegistry()
    counter = Counter("letters", "test", ["stage", "reason"], registry=registry)
    letters = [
        DeadLetter(
            stage="kochava", reason="http_400", error="bad", event_id="e1", payload={"email": "a@b.io"}
        ),
        DeadLetter(stage="kochava", reason="http_400", error="bad", payload={}),
    ]
    pending = asyncio.create_task(send_dead_letters(outputs.send_all, "kseg.deadletter", letters, counter))
    await asyncio.sleep(0.01)
    assert not pending.done()
    outputs.acked.set()
    await asyncio.wait_for(pending, 1)
    [records] = outputs.calls
    assert [(topic, key) for topic, key, _ in records] == [
        ("kseg.deadletter", b"e1"),
        ("kseg.deadletter", b"http_400"),
    ]
    assert b"a@b.io" not in records[0][2]
    assert orjson.loads(records[1][2])["reason"] == "http_400"
    assert registry.get_sample_value("letters_total", {"stage": "kochava", "reason": "http_400"}) == 2
