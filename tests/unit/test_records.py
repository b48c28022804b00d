"""The record contracts of app/records.py: their bytes on the wire and the one decode-or-dead-letter path."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import pytest
from jsonschema import Draft202012Validator
from pydantic import Field, TypeAdapter

from app.records import (
    DeadLetter,
    DeviceLinked,
    RawPostback,
    SegmentCalls,
    decode_object,
    decode_or_dead_letter,
    decode_outbox_record,
    validate_or_dead_letter,
)
from app.warehouse.schemas import SCHEMA_DIR

TRACK = {"type": "track", "event": "Install Attributed", "anonymousId": "a1", "messageId": "m1"}
#: The calls the golden install postback maps to (tests/golden/install_get.json).
CALLS = orjson.loads((Path(__file__).parents[1] / "golden" / "install_get.json").read_bytes())["expected"][
    "segment"
]


def test_raw_postback_bytes_are_the_receivers_plain_dict() -> None:
    """What the receiver wrote before it built a RawPostback, key for key and byte for byte."""
    params = {"event_name": "_install", "kochava_device_id": "KI1", "nested": {"n": 1.5, "l": [1, "é"]}}
    as_dict = {
        "kind": "postback",
        "event_id": "e1",
        "received_at": "2025-01-01T00:00:00.000Z",
        "source": "post_json",
        "profile": None,
        "params": params,
        "ip": "127.0.0.1",
        "user_agent": "Kochava",
        "token_name": None,  # which postback token let it in, by name (the trace tables show it)
    }
    record = RawPostback(
        event_id="e1",
        received_at="2025-01-01T00:00:00.000Z",
        source="post_json",
        params=params,
        ip="127.0.0.1",
        user_agent="Kochava",
    )
    assert record.encode() == orjson.dumps(as_dict)
    assert RawPostback.decode(record.encode()) == record


def test_segment_calls_bytes_are_the_documented_outbox_record() -> None:
    record = SegmentCalls(messages=[TRACK, {**TRACK, "messageId": "m2"}])
    expected = {"kind": "segment_calls", "messages": [TRACK, {**TRACK, "messageId": "m2"}]}
    assert record.encode() == orjson.dumps(expected)
    with pytest.raises(ValueError):
        SegmentCalls(messages=[])  # the published schema wants at least one call


def test_segment_calls_validate_against_the_published_outbox_schema() -> None:
    """A full call from the real mapping, as one SegmentCalls record, is what the schema describes."""
    schema = orjson.loads((SCHEMA_DIR / "segment-message.schema.json").read_bytes())
    record = orjson.loads(SegmentCalls(messages=CALLS).encode())
    Draft202012Validator(schema).validate(record)
    assert not Draft202012Validator(schema).is_valid({**record, "extra": 1})


def test_outbox_records_of_both_shapes_and_bad_ones() -> None:
    calls = decode_outbox_record(SegmentCalls(messages=[TRACK]).encode())
    assert isinstance(calls, SegmentCalls) and calls.messages == [TRACK]
    single = decode_outbox_record(orjson.dumps(TRACK))  # a replayed Segment dead letter: one bare call
    assert isinstance(single, SegmentCalls) and single.messages == [TRACK]
    for value, error in (
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"kind": "segment_calls", "messages": "x"}', "messages"),
        (None, "not JSON"),
    ):
        letter = decode_outbox_record(value)
        assert isinstance(letter, DeadLetter), value
        assert (letter.stage, letter.reason) == ("segment", "undecodable_message") and error in letter.error


def test_decode_or_dead_letter_keeps_what_it_could_not_decode() -> None:
    notice = DeviceLinked(device_key="KI1", via="idfa:A", user_id="u1")
    assert decode_or_dead_letter(notice.encode(), DeviceLinked, stage="identity", reason="r") == notice

    def letter(value: bytes | None) -> DeadLetter:
        out = decode_or_dead_letter(value, DeviceLinked, stage="identity", reason="bad_notice", event_id="e9")
        assert isinstance(out, DeadLetter) and (out.stage, out.reason, out.event_id) == (
            "identity",
            "bad_notice",
            "e9",
        )
        return out

    assert letter(b"\xff{not json").payload == {"raw": "\ufffd{not json"}
    assert letter(b'"text"').payload == {"raw": "text"}
    invalid = letter(b'{"kind": "device_linked", "device_key": "KI1"}')
    assert invalid.payload == {"kind": "device_linked", "device_key": "KI1"} and "via" in invalid.error
    # Every letter is itself a valid dead-letter record.
    assert DeadLetter.decode(invalid.encode()) == invalid


def test_a_union_decodes_by_kind() -> None:
    adapter: TypeAdapter[RawPostback | DeviceLinked] = TypeAdapter(
        Annotated[RawPostback | DeviceLinked, Field(discriminator="kind")]
    )
    notice = DeviceLinked(device_key="KI1", via="link")
    assert validate_or_dead_letter(notice.model_dump(), adapter, stage="mapping", reason="r") == notice
    unknown = validate_or_dead_letter({"kind": "x"}, adapter, stage="mapping", reason="r")
    assert isinstance(unknown, DeadLetter) and unknown.payload == {"kind": "x"}
    assert decode_object(b'{"a": 1}', stage="mapping", reason="r") == {"a": 1}
