"""The two link inputs over HTTP, against a real embedded Kafka broker: auth, validation, durability."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer

from app import topics
from app.broker.embedded import EmbeddedBroker
from app.config import Settings
from app.identity.records import LinkRequest
from app.receiver.identity_routes import LINKS_PATH, WEBHOOK_PATH
from app.receiver.server import build_app
from tests.harness import read_topic
from tests.receiver_app import receiver_settings, started_client

SECRET = "s"
AUTH = {"Authorization": "Bearer links-1"}


def make_settings(broker: EmbeddedBroker, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "kseg_postback_tokens": "t1",
        "kseg_link_tokens": "links-1",
        "segment_webhook_secret": SECRET,
        "kseg_topic_partitions": 2,
        **kw,
    }
    return receiver_settings(broker, **values)


@pytest.fixture
async def settings(broker: EmbeddedBroker) -> Settings:
    s = make_settings(broker)
    await topics.ensure_topics(s)
    return s


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    c = await started_client(settings)
    yield c
    await c.close()


async def consume_links(
    settings: Settings, expected: int, timeout: float = 10.0
) -> list[tuple[str, dict[str, Any]]]:
    """Every record on the links topic, waiting until `expected` arrived (and a little longer for extras)."""
    consumer = AIOKafkaConsumer(
        settings.topic(topics.LINKS),
        bootstrap_servers=settings.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[tuple[str, dict[str, Any]]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        settle = None
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for msgs in batch.values():
                records += [(m.key.decode() if m.key else "", orjson.loads(m.value)) for m in msgs]
            if len(records) >= expected:
                settle = settle or asyncio.get_running_loop().time() + 1.0
                if asyncio.get_running_loop().time() > settle:
                    break
    finally:
        await consumer.stop()
    return records


def signed(body: bytes, signature_of: bytes | None = None) -> dict[str, str]:
    sig = hmac.new(SECRET.encode(), signature_of or body, hashlib.sha1).hexdigest()
    return {"X-Signature": sig, "Content-Type": "application/json"}


# --- links API -----------------------------------------------------------------------------------------


async def test_links_api_auth_validation_and_durable_publish(client: TestClient, settings: Settings) -> None:
    good = {"user_id": "u1", "email": "A@B.co", "idfa": "IDFA-1", "gaid": "G-1", "nickname": "x"}

    resp = await client.post(LINKS_PATH, json=good)
    assert resp.status == 401
    resp = await client.post(LINKS_PATH, json=good, headers={"Authorization": "Bearer nope"})
    assert resp.status == 401
    resp = await client.post(LINKS_PATH, json=good, headers={"Authorization": "Bearer t1"})
    assert (resp.status, (await resp.json())["error"]) == (403, "postback_token_refused")
    resp = await client.post(f"{LINKS_PATH}?token=t1", json=good)
    assert (resp.status, (await resp.json())["error"]) == (403, "postback_token_refused")

    resp = await client.post(LINKS_PATH, data=b"{oops", headers=AUTH)
    assert (resp.status, (await resp.json())["error"]) == (400, "invalid_json")
    resp = await client.post(
        LINKS_PATH, json={"user_id": "u1", "idfa": "00000000-0000-0000-0000-000000000000"}, headers=AUTH
    )
    assert (resp.status, (await resp.json())["error"]) == (400, "no_device_id")
    resp = await client.post(LINKS_PATH, json={"user_id": "null", "idfa": "IDFA-1"}, headers=AUTH)
    assert (resp.status, (await resp.json())["error"]) == (400, "no_person_id")
    resp = await client.post(LINKS_PATH, json={"email": "nope", "idfa": "IDFA-1"}, headers=AUTH)
    assert (resp.status, (await resp.json())["error"]) == (400, "invalid_email")
    resp = await client.post(LINKS_PATH, json={"user_id": ["u"], "idfa": "IDFA-1"}, headers=AUTH)
    assert (resp.status, (await resp.json())["error"]) == (400, "invalid_field")

    resp = await client.post(LINKS_PATH, json=good, headers=AUTH)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["devices"] == ["idfa:IDFA-1", "adid:G-1"]
    assert body["ignored_fields"] == ["nickname"]

    records = await consume_links(settings, expected=1)
    assert len(records) == 1  # none of the rejected requests reached Kafka
    key, value = records[0]
    link = LinkRequest.model_validate(value)
    assert key == "idfa:IDFA-1"
    assert (link.link_id, link.user_id, link.source) == (body["link_id"], "u1", "api")
    assert link.email_hash == hashlib.sha256(b"a@b.co").hexdigest()
    assert b"A@B.co" not in orjson.dumps(value)


# --- Segment webhook -----------------------------------------------------------------------------------


IDENTIFY = {
    "type": "identify",
    "messageId": "m-1",
    "userId": "u1",
    "anonymousId": "a-1",
    "traits": {"email": "x@y.co"},
    "context": {"device": {"type": "ios", "advertisingId": "IDFA-1", "id": "IDFV-1"}},
}


async def test_webhook_signature_and_durable_publish(client: TestClient, settings: Settings) -> None:
    body = orjson.dumps(IDENTIFY)
    resp = await client.post(WEBHOOK_PATH, data=body, headers={"Content-Type": "application/json"})
    assert (resp.status, (await resp.json())["error"]) == (401, "missing_signature")
    tampered = body.replace(b"u1", b"u9")
    resp = await client.post(WEBHOOK_PATH, data=tampered, headers=signed(body))
    assert (resp.status, (await resp.json())["error"]) == (401, "invalid_signature")

    resp = await client.post(WEBHOOK_PATH, data=b"{bad json", headers=signed(b"{bad json"))
    assert resp.status == 400
    track = orjson.dumps({"type": "track", "event": "x", "anonymousId": "a"})
    resp = await client.post(WEBHOOK_PATH, data=track, headers=signed(track))
    assert resp.status == 200
    # An anonymousId without any device id adopts nothing.
    assert await resp.json() == {"message": "ignored", "reason": "no_device_id", "calls": 1}

    resp = await client.post(WEBHOOK_PATH, data=body, headers=signed(body))
    result = await resp.json()
    assert resp.status == 200, result
    assert result["accepted"] == 1

    # Actions batch: only element 0's raw text is signed.
    second = {
        **IDENTIFY,
        "messageId": "m-2",
        "userId": "u2",
        "context": {"device": {"type": "android", "id": "AID"}},
    }
    first_raw = orjson.dumps({**IDENTIFY, "messageId": "m-3"})
    batch = b"[" + first_raw + b", " + orjson.dumps(second) + b"]"
    resp = await client.post(WEBHOOK_PATH, data=batch, headers=signed(batch, signature_of=first_raw))
    assert resp.status == 200 and (await resp.json())["accepted"] == 2
    resp = await client.post(WEBHOOK_PATH, data=batch, headers=signed(batch))
    assert resp.status == 401

    records = await consume_links(settings, expected=3)
    got = sorted(
        (key, LinkRequest.model_validate(v).message_id, LinkRequest.model_validate(v).user_id)
        for key, v in records
    )
    assert got == [
        ("android_id:AID", "m-2", "u2"),
        ("idfa:IDFA-1", "m-1", "u1"),
        ("idfa:IDFA-1", "m-3", "u1"),
    ]


async def test_webhook_without_secret_answers_503(broker: EmbeddedBroker) -> None:
    s = make_settings(broker, segment_webhook_secret=None)
    app = build_app(s)
    async with TestClient(TestServer(app)) as c:
        body = orjson.dumps(IDENTIFY)
        resp = await c.post(WEBHOOK_PATH, data=body, headers=signed(body))
        assert resp.status == 503
        assert resp.headers["Retry-After"]
        assert "SEGMENT_WEBHOOK_SECRET" in (await resp.json())["message"]


async def test_links_api_answers_503_when_kafka_is_not_connected(broker: EmbeddedBroker) -> None:
    s = make_settings(broker)
    app = build_app(s)
    app.on_startup.clear()  # the producer never connects
    async with TestClient(TestServer(app)) as c:
        resp = await c.post(LINKS_PATH, json={"user_id": "u1", "idfv": "V"}, headers=AUTH)
        assert resp.status == 503
        assert resp.headers["Retry-After"]


async def test_identity_counters_are_on_the_receiver_metrics(client: TestClient) -> None:
    resp = await client.post(LINKS_PATH, json={"user_id": "u1"}, headers=AUTH)
    assert resp.status == 400
    text = await (await client.get("/metrics")).text()
    assert 'kseg_identity_links_rejected_total{reason="no_device_id"}' in text


_LINK_OUTCOME = """
import json, sys
from app.receiver.errors import ClientError
from app.receiver.identity_routes import parse_link_body
body = json.loads(sys.argv[1])
try:
    link, _ = parse_link_body(body, "2026-01-01T00:00:00.000Z")
    print(json.dumps([link.link_id, link.typed_devices()]))
except ClientError as err:
    print(json.dumps([err.status, err.code]))
"""


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "u-1", "adid": "gaid-one-aaaa", "gaid": "gaid-two-bbbb"},
        {"user_id": "u-1", "adid": "gaid-one-aaaa", "gaid": "gaid-one-aaaa", "idfv": "idfv-x-1234"},
    ],
)
def test_link_with_adid_and_gaid_is_the_same_in_every_process(body: dict[str, str]) -> None:
    """The outcome must not depend on PYTHONHASHSEED (set iteration order differs per process)."""
    outcomes = set()
    for seed in range(8):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        done = subprocess.run(
            [sys.executable, "-c", _LINK_OUTCOME, orjson.dumps(body).decode()],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        outcomes.add(done.stdout.strip())
    assert len(outcomes) == 1, outcomes
    if body["adid"] != body["gaid"]:
        assert outcomes == {'[400, "conflicting_fields"]'}


def batch_body(calls: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    """An Actions batch and its headers: X-Signature over element 0's raw text, as Segment signs it."""
    parts = [orjson.dumps(call) for call in calls]
    return b"[" + b",".join(parts) + b"]", signed(b"", signature_of=parts[0])


def link_call(i: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": f"user-{i}",
        "messageId": f"msg-{i}",
        "context": {"device": {"type": "android", "advertisingId": f"gaid-{i:06d}-big"}},
    }


def audience_call(i: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": f"member-{i}",
        "messageId": f"aud-{i}",
        "timestamp": "2026-01-01T10:00:00Z",
        "traits": {"big_batch": True},
        "context": {
            "personas": {
                "computation_class": "audience",
                "computation_id": "aud_big",
                "computation_key": "big_batch",
            }
        },
    }


@pytest.mark.parametrize("size", [2500, 4000])
async def test_batch_larger_than_the_produce_bound_is_durable_and_retry_safe(
    client: TestClient, settings: Settings, size: int
) -> None:
    """More calls than KSEG_MAX_PENDING_PRODUCES (2,000): 200 once all are in Kafka, and a retried
    delivery writes exactly the same keys and link ids again."""
    assert size > settings.kseg_max_pending_produces
    body, headers = batch_body([link_call(i) for i in range(size)])
    answers = []
    for _ in range(2):  # Segment retries a delivery it did not see acknowledged
        resp = await client.post(WEBHOOK_PATH, data=body, headers=headers)
        answers.append(await resp.json())
        assert resp.status == 200, answers[-1]
        assert answers[-1]["accepted"] == size
    assert answers[0]["link_ids"] == answers[1]["link_ids"]
    records = await consume_links(settings, expected=2 * size, timeout=60)
    assert len(records) == 2 * size
    written = Counter((key, value["link_id"]) for key, value in records)
    assert set(written.values()) == {2}  # each record twice, none different the second time
    assert {key for key, _ in written} == {f"adid:gaid-{i:06d}-big" for i in range(size)}


async def test_audience_batch_larger_than_the_produce_bound_is_durable(
    client: TestClient, settings: Settings
) -> None:
    size = 2500
    body, headers = batch_body([audience_call(i) for i in range(size)])
    resp = await client.post(WEBHOOK_PATH, data=body, headers=headers)
    answer = await resp.json()
    assert (resp.status, answer["audience_changes"]) == (200, size), answer
    records = await read_topic(settings.bootstrap, settings.topic(topics.AUDIENCE_CHANGES), timeout=60)
    assert len(records) == size
    assert len({value["change_key"] for _, value in records}) == size
