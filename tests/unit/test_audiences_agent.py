"""The audiences agent's record handler with a dict as its table: requests are produced before the state is
written, invalid records become typed dead letters, a repeat writes nothing new."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry

from app.audiences.agents import handle_record
from app.audiences.engage import changes_from_payload
from app.audiences.metrics import AudienceMetrics
from app.audiences.records import DeviceFacts
from app.audiences.rules import EventNames
from app.records import dumps
from tests.unit.test_audiences_rules import identify


async def run(
    table: dict[bytes, bytes], value: bytes, sent: list[tuple[str, bytes, bytes]], metrics: AudienceMetrics
) -> int:
    async def outbox(key: bytes, val: bytes) -> None:
        sent.append(("outbox", key, val))

    async def dlq(key: bytes, val: bytes) -> None:
        sent.append(("deadletter", key, val))

    return await handle_record(
        b"k",
        value,
        table,
        own=[],
        names=EventNames(),
        send_outbox=outbox,
        send_deadletter=dlq,
        metrics=metrics,
    )


async def test_membership_change_then_repeat() -> None:
    registry = CollectorRegistry()
    metrics = AudienceMetrics(registry)
    table: dict[bytes, bytes] = {}
    sent: list[tuple[str, bytes, bytes]] = []
    facts = DeviceFacts(
        member="user:u1", device_key="KI1", device_ids={"idfv": "6D92078A-8246-4BA4-AE5B-76104861E7DC"}
    )
    assert await run(table, dumps(facts), sent, metrics) == 1  # its IdentityLink
    change = changes_from_payload(identify(True), "t")[0][0]
    assert await run(table, dumps(change), sent, metrics) == 1
    assert [(topic, key) for topic, key, _ in sent] == [("outbox", b"KI1"), ("outbox", b"KI1")]
    state = orjson.loads(table[b"user:u1"])
    assert state["audiences"]["segment:aud_123"]["entered"] is True
    assert await run(table, dumps(change), sent, metrics) == 0
    assert registry.get_sample_value("kseg_audience_changes_ignored_total", {"reason": "duplicate"}) == 1
    labels = {"audience": "high_ltv_paid_social", "source": "segment", "change": "entered"}
    assert registry.get_sample_value("kseg_audience_changes_total", labels) == 1


async def test_invalid_record_is_a_typed_dead_letter() -> None:
    metrics = AudienceMetrics(CollectorRegistry())
    sent: list[tuple[str, bytes, bytes]] = []
    table: dict[bytes, bytes] = {}
    assert await run(table, b'{"kind": "membership_change", "member": "user:x"}', sent, metrics) == 0
    [(topic, _, value)] = sent
    letter = orjson.loads(value)
    assert topic == "deadletter" and (letter["stage"], letter["reason"]) == (
        "audiences",
        "invalid_audience_record",
    )
    assert table == {}
