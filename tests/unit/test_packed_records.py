"""Internal topics carry one partition's share of a micro-batch in one `Batched` record: packing keeps
every partition's order and each item's key, readers take both the old single shape and the new one,
and the published schemas describe both."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from app import topics
from app.records import (
    PACK_MAX_BYTES,
    Batched,
    DeadLetter,
    DeviceLinked,
    SegmentCalls,
    pack_records,
    pack_values,
    unpack,
)
from app.sinks.kochava.agents import decode as decode_kochava
from app.sinks.kochava.requests import KochavaRequest
from app.sinks.segment.agents import decode_messages
from app.topics import PACKED
from app.warehouse.schemas import SCHEMA_DIR

TRACK = {"type": "track", "event": "Install Attributed", "anonymousId": "a1", "messageId": "m1"}


def calls(n: int) -> bytes:
    return SegmentCalls(messages=[{**TRACK, "messageId": f"m{n}"}]).encode()


def by_key_parity(topic: str, key: bytes) -> int | None:
    """A stand-in partitioner: topic `t` packed over two partitions by the key's last digit."""
    return int(key[-1:]) % 2 if topic == "t" else None


def test_packing_keeps_each_partitions_order_and_every_items_key() -> None:
    records = [("t", f"d{i}".encode(), calls(i)) for i in range(6)] + [("other", b"d1", b'{"o":1}')]
    packed = pack_records(records, by_key_parity)
    assert [(topic, key) for topic, key, _ in packed] == [("t", b"d0"), ("t", b"d1"), ("other", b"d1")]
    for partition, (_topic, key, value) in enumerate(packed[:2]):
        items = unpack(key, value, stage="segment", reason="r")
        assert [k for k, _ in items] == [f"d{i}".encode() for i in range(partition, 6, 2)]
        assert [orjson.dumps(v) for _, v in items] == [calls(i) for i in range(partition, 6, 2)]
    assert packed[2] == ("other", b"d1", b'{"o":1}')  # a topic others read: untouched


def test_a_lone_record_and_a_keyless_one_keep_the_old_shape() -> None:
    assert pack_records([("t", b"d1", calls(1))], by_key_parity) == [("t", b"d1", calls(1))]
    assert pack_records([("t", None, calls(1)), ("t", None, calls(2))], by_key_parity) == [
        ("t", None, calls(1)),
        ("t", None, calls(2)),
    ]


def test_a_partition_share_over_the_size_cap_starts_another_record() -> None:
    big = orjson.dumps({"kind": "segment_calls", "messages": [{**TRACK, "pad": "x" * (PACK_MAX_BYTES // 3)}]})
    packed = pack_values([(f"d{i}".encode(), big) for i in range(7)])
    assert 2 < len(packed) < 7 and all(len(value) <= PACK_MAX_BYTES + 1024 for _, value in packed)
    keys = [k for key, value in packed for k, _ in unpack(key, value, stage="segment", reason="r")]
    assert keys == [f"d{i}".encode() for i in range(7)]


def test_packed_bytes_are_the_documented_batched_record() -> None:
    notice = DeviceLinked(device_key="KI1", via="idfa:A", user_id="u1", linked_at="2025-01-01T00:00:00.000Z")
    [(key, value)] = pack_values([(b"KI1", notice.encode()), (b"KI1", notice.encode())])
    assert key == b"KI1"
    assert Batched[DeviceLinked].decode(value).records[1].value == notice


@pytest.mark.parametrize(
    "value",
    [
        b'{"kind": "batch"}',
        b'{"kind": "batch", "records": []}',
        b'{"kind": "batch", "records": [{"key": "k"}]}',
        b'{"kind": "batch", "records": [{"key": 1, "value": {}}]}',
        b'{"kind": "batch", "records": [{"key": "k", "value": []}]}',
        b'{"kind": "batch", "records": [{"key": "k", "value": {}}], "extra": 1}',
    ],
)
def test_a_malformed_batch_is_one_typed_dead_letter_keeping_it_whole(value: bytes) -> None:
    [(key, letter)] = unpack(b"k", value, stage="identity", reason="invalid_index_update")
    assert key == b"k" and isinstance(letter, DeadLetter)
    assert (letter.stage, letter.reason, letter.payload) == (
        "identity",
        "invalid_index_update",
        orjson.loads(value),
    )


def record(key: bytes | None, value: bytes) -> Any:
    return SimpleNamespace(key=key, value=value)


def test_the_segment_sink_reads_old_and_new_shapes_alike_and_letters_only_the_bad_item() -> None:
    bare = {**TRACK, "messageId": "bare"}  # a replayed Segment dead letter
    [(key, packed)] = pack_values([(b"d1", calls(1)), (b"d1", b'{"kind": "segment_calls", "messages": []}')])
    [(key2, packed2)] = pack_values([(b"d2", calls(2)), (b"d2", orjson.dumps(bare))])
    messages, letters = decode_messages(
        [record(b"d0", calls(0)), record(key, packed), record(key2, packed2), record(b"d3", b"{nope")]
    )
    assert [m["messageId"] for m in messages] == ["m0", "m1", "m2", "bare"]
    assert [(letter.reason, letter.payload) for letter in letters] == [
        ("undecodable_message", {"kind": "segment_calls", "messages": []}),  # just the bad item: replayable
        ("undecodable_message", {"raw": "{nope"}),
    ]


def test_the_kochava_sink_reads_old_and_new_shapes_alike() -> None:
    def request(n: int) -> bytes:
        value = KochavaRequest(
            endpoint="track", request_id=f"r{n}", device_key="KI1", body={"action": "event"}
        )
        return orjson.dumps(value.model_dump(mode="json"))

    [(key, packed)] = pack_values([(b"KI1", request(1)), (b"KI1", b'{"request_id": 3}')])
    requests, letters = decode_kochava([record(b"KI1", request(0)), record(key, packed)])
    assert [r.request_id for r in requests] == ["r0", "r1"]
    assert [(letter.stage, letter.payload) for letter in letters] == [("kochava", {"request_id": 3})]


SCHEMAS = {
    "segment.outbox": "segment-message.schema.json",
    "kochava.outbox": "kochava-request.schema.json",
    "identity.device-events": "identity-device-linked.schema.json",
    "identity.device-index": "identity-device-index.schema.json",
    "audiences.changes": "audience-change.schema.json",
}


def test_every_packed_topic_and_only_those_publish_the_batched_shape() -> None:
    assert set(PACKED) == set(SCHEMAS)
    notice = DeviceLinked(device_key="KI1", via="idfa:A", user_id="u1")
    [(_, packed)] = pack_values([(b"KI1", notice.encode()), (b"KI1", notice.encode())])
    schema = orjson.loads((SCHEMA_DIR / SCHEMAS["identity.device-events"]).read_bytes())
    Draft202012Validator(schema).validate(orjson.loads(packed))
    Draft202012Validator(schema).validate(orjson.loads(notice.encode()))
    call = orjson.loads((Path(__file__).parents[1] / "golden" / "install_get.json").read_bytes())["expected"][
        "segment"
    ][0]
    one = SegmentCalls(messages=[call]).encode()
    [(_, outbox)] = pack_values([(b"d1", one), (b"d1", orjson.dumps(call))])
    schema = orjson.loads((SCHEMA_DIR / SCHEMAS["segment.outbox"]).read_bytes())
    Draft202012Validator(schema).validate(orjson.loads(outbox))
    assert not Draft202012Validator(schema).is_valid(
        {"kind": "batch", "records": [{"key": "d", "value": {}}]}
    )
    for name in SCHEMAS.values():
        assert "batch" in (SCHEMA_DIR / name).read_text(), name
    for name in ("warehouse-row.schema.json", "dead-letter.schema.json"):  # other teams read these
        assert '"batch"' not in (SCHEMA_DIR / name).read_text(), name


def test_the_processing_step_handles_a_batched_notice_record_like_its_items_one_by_one() -> None:
    from app.mapping import ProfileRegistry
    from app.pipeline.steps import Batch, StepConfig, handle_record
    from tests.pipeline_tables import Tables, raw, settings

    def install(key: str) -> dict[str, Any]:
        return raw({"event_name": "_install", "kochava_device_id": key, "timestamp": "1714557601"})

    notices = [
        (
            key.encode(),
            DeviceLinked(device_key=key, via=f"idfv:{key}", user_id=f"u-{key}", link_ref=key).encode(),
        )
        for key in ("KA", "KB")
    ]

    def fixed_clock() -> Tables:  # both runs mark their dedupe ids at the same time
        return Tables(config=StepConfig(settings(), ProfileRegistry.load(None), lambda: 1_800_000_000.0))

    singles, packed = fixed_clock(), fixed_clock()
    for t in (singles, packed):
        t.run([("KA", install("KA")), ("KB", install("KB"))])
        t.take(topics.OUTBOX)
    for key, value in notices:
        singles.run([(key.decode(), orjson.loads(value))])
    [(key, value)] = pack_values(notices)
    batch = Batch(stored_profile=packed.profiles.get, config=packed.config)
    handle_record(batch, 0, key, value, packed.config)  # one record, two devices' notices
    for _event, device_key, state in batch.profile_writes():
        packed.profiles[device_key] = state
    assert packed.profiles == singles.profiles
    assert packed.profile("KB").user_id == "u-KB"
    sent = [orjson.loads(v) for name, _, v in batch.sends if name == topics.OUTBOX]
    assert [m["userId"] for r in sent for m in r["messages"] if m["type"] == "identify"] == ["u-KA", "u-KB"]


def test_outbox_record_bytes_are_what_segment_calls_encodes_for_the_load_mix() -> None:
    """`segment_calls_record` skips pydantic; its bytes must stay those of `SegmentCalls.encode()`."""
    from urllib.parse import parse_qsl

    from app.loadgen.postbacks import PostbackGenerator
    from app.records import RawPostback, device_key_of, postback_event_id
    from tests.pipeline_tables import Tables

    t, generator = Tables(), PostbackGenerator(seed=3, devices=50)
    batch = []
    for _ in range(300):
        params = dict(parse_qsl(next(generator).query))
        raw = RawPostback(
            event_id=postback_event_id(params), received_at="2026-01-01T00:00:00.000Z", params=params
        )
        batch.append((device_key_of(params) or "x", raw.model_dump(mode="json")))
    outbox = [value for name, _, value in t.run(batch).sends if name == topics.OUTBOX]
    assert len(outbox) > 100
    assert all(value == SegmentCalls.model_validate(orjson.loads(value)).encode() for value in outbox)


@pytest.mark.parametrize(
    "item",
    [
        {"kind": "segment_calls", "messages": [TRACK]},
        {"kind": "segment_calls", "messages": [TRACK, TRACK]},
        {"kind": "segment_calls", "messages": []},
        {"kind": "segment_calls", "messages": [1]},
        {"kind": "segment_calls", "messages": TRACK},
        {"kind": "segment_calls"},
        {"kind": "segment_calls", "messages": [TRACK], "extra": 1},
    ],
)
def test_the_outbox_items_checked_without_pydantic_are_exactly_those_the_model_accepts(item: Any) -> None:
    from pydantic import ValidationError

    from app.records import outbox_calls

    try:
        expected: Any = SegmentCalls.model_validate(item).messages
    except ValidationError:
        expected = None
    got = outbox_calls(item)
    assert (None if isinstance(got, DeadLetter) else got.messages) == expected
