"""A downstream consumer's view: every record kseg publishes validates against its published JSON Schema.

Postbacks of every kind (the golden inputs, plus a bad one) go through the real receiver and worker;
a plain Kafka consumer then reads the warehouse, outbox and dead-letter topics and validates each
record with the strict schema from topics/schemas/ (the warehouse row forbids unlisted columns).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
import pytest
from jsonschema import Draft202012Validator

from app.warehouse.schemas import SCHEMA_DIR
from tests.harness import ROOT, Pipeline, read_topic, segment_calls, wait_for
from tests.integration.test_dead_letters import _at_least

pytestmark = pytest.mark.integration


def validator(name: str) -> Draft202012Validator:
    schema = orjson.loads((SCHEMA_DIR / name).read_bytes())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def problems(name: str, records: list[Any]) -> list[str]:
    check = validator(name)
    return [f"{r}: {e.message}" for r in records for e in check.iter_errors(r)][:5]


async def test_published_records_validate(make_pipeline: Any, dump_logs: list[Pipeline]) -> None:
    p = make_pipeline(None)
    dump_logs.append(p)
    await p.start()
    sent = 0
    for path in sorted((ROOT / "tests" / "golden").glob("*.json")):
        golden = orjson.loads(path.read_bytes())
        if "query" in golden["input"]:
            params = [(k, v) for k, v in parse_qsl(golden["input"]["query"]) if k != "token"]
            status, body, _ = await p.get(urlencode(params))
        else:
            fields = {k: v for k, v in golden["input"]["json"].items() if k != "token"}
            status, body, _ = await p.post("/v1/kochava/postbacks", fields)
        assert status == 200, (path.name, body)
        sent += 1
    # A postback the mapping refuses: its dead letter is a published record too.
    status, _, _ = await p.get({"event_name": "Purchase", "kochava_device_id": "KIBAD", "event_value": "abc"})
    assert status == 200

    async def rows() -> list[Any]:
        return [v for _, v in await read_topic(p.bootstrap, p.topic("warehouse.events"))]

    warehouse = await wait_for(lambda: _at_least(rows(), sent), 90, "a warehouse row per golden postback")
    outbox = [v for _, v in await read_topic(p.bootstrap, p.topic("segment.outbox"))]
    letters = await wait_for(
        lambda: _at_least(_values(p, "deadletter"), 1), 60, "the bad postback's dead letter"
    )
    raw = [v for _, v in await read_topic(p.bootstrap, p.topic("postbacks.raw"))]

    assert {r["event_type"] for r in warehouse} >= {"install", "reinstall", "event", "purchase", "conversion"}
    assert problems("warehouse-row.schema.json", warehouse) == []
    assert problems("segment-message.schema.json", outbox) == []
    calls = segment_calls(outbox)  # one partition's share of a micro-batch per record (docs/topics.md)
    assert len(calls) >= sent and {c["type"] for c in calls} >= {"identify", "track"}
    assert problems("dead-letter.schema.json", letters) == []
    assert len(raw) == sent + 1 and problems("postback-raw.schema.json", raw) == []
    # The check is strict: a row with a column the schema does not list is refused.
    assert problems("warehouse-row.schema.json", [{**warehouse[0], "surprise": 1}]) != []
    broken_call = {k: v for k, v in calls[0].items() if k != "messageId"}
    assert (
        problems("segment-message.schema.json", [{"kind": "segment_calls", "messages": [broken_call]}]) != []
    )


async def _values(p: Pipeline, topic: str) -> list[Any]:
    return [v for _, v in await read_topic(p.bootstrap, p.topic(topic))]
