"""Client-input failures at the receiver's edge, over raw sockets to a real receiver on a real broker:
each is a 4xx with a JSON reason, counted in `kseg_receiver_rejected_total`, never a 500 or a traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestClient

from app.broker.embedded import EmbeddedBroker
from app.metrics import sample
from app.receiver.identity_routes import WEBHOOK_PATH
from app.receiver.metrics import RECEIVER_METRICS
from app.receiver.server import POSTBACK_PATH
from tests.receiver_app import receiver_settings, started_client


@pytest.fixture
async def client(broker: EmbeddedBroker) -> AsyncIterator[TestClient]:
    settings = receiver_settings(
        broker, kseg_postback_tokens="pb-1", segment_webhook_secret="whsec", kseg_http_body_timeout=5.0
    )
    c = await started_client(settings)
    yield c
    await c.close()


def rejected(client: TestClient, reason: str) -> float:
    """The count on this receiver's own registry (the one its /metrics serves)."""
    return sample("kseg_receiver_rejected_total", client.app[RECEIVER_METRICS].registry, reason=reason)


async def exchange(client: TestClient, data: bytes, close_early: bool = False) -> bytes:
    """Send raw bytes; the answer (or b"" when we hang up before it)."""
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(data)
        await writer.drain()
        if close_early:
            return b""
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


def split(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body)


async def test_non_utf8_signature_is_a_counted_401(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"type":"identify","userId":"u1"}'
    before = rejected(client, "invalid_signature")
    with caplog.at_level(logging.INFO):
        answer = await exchange(
            client,
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nX-Signature: ".encode()
            + b"\xff\xfe\xc3"
            + b"\r\n\r\n"
            + body,
        )
    status, reason = split(answer)
    assert (status, reason["error"]) == (401, "invalid_signature"), answer
    assert rejected(client, "invalid_signature") == before + 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_client_that_hangs_up_mid_body_is_a_counted_4xx(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    before = rejected(client, "body_incomplete")
    head = (
        f"POST {POSTBACK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer pb-1\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with caplog.at_level(logging.INFO):
        await exchange(client, head + b'{"kochava_device_id": "KD', close_early=True)
        for _ in range(100):
            if rejected(client, "body_incomplete") > before:
                break
            await asyncio.sleep(0.05)
    assert rejected(client, "body_incomplete") == before + 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_expect_and_parser_refusals_are_counted(client: TestClient) -> None:
    before = rejected(client, "unsupported_expect")
    answer = await exchange(
        client,
        f"POST {POSTBACK_PATH} HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n"
        "Connection: close\r\n\r\n{}".encode(),
    )
    assert split(answer)[0] == 417, answer
    assert rejected(client, "unsupported_expect") == before + 1

    before = rejected(client, "bad_http_request")
    answer = await exchange(client, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\n\r\n")
    status, reason = split(answer)
    assert (status, reason["error"]) == (400, "bad_http_request"), answer
    assert rejected(client, "bad_http_request") == before + 1


async def test_user_agent_that_is_not_utf8_is_a_400_naming_the_header(client: TestClient) -> None:
    before = rejected(client, "invalid_encoding")
    answer = await exchange(
        client,
        f"GET {POSTBACK_PATH}?kochava_device_id=KD-ua&event_name=_install HTTP/1.1\r\nHost: x\r\n"
        "Authorization: Bearer pb-1\r\nConnection: close\r\nUser-Agent: ".encode()
        + b"Kochava \xff\xfe"
        + b"\r\n\r\n",
    )
    status, reason = split(answer)
    assert (status, reason["error"], reason["header"]) == (400, "invalid_encoding", "User-Agent"), answer
    assert rejected(client, "invalid_encoding") == before + 1


async def test_each_receiver_counts_on_the_registry_its_metrics_page_serves(
    client: TestClient, broker: EmbeddedBroker
) -> None:
    """The protocol's refusals (wire.py) and the handlers' count into the app's own `ReceiverMetrics`:
    a second receiver in the same Python sees none of them, and /metrics serves that registry together
    with the default registry's families (identity's counters, the process collectors)."""
    other = await started_client(receiver_settings(broker, kseg_postback_tokens="pb-2"))
    try:
        assert client.app[RECEIVER_METRICS] is not other.app[RECEIVER_METRICS]
        answer = await exchange(client, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\n\r\n")
        assert split(answer)[0] == 400, answer
        answer = await exchange(
            client,
            f"POST {POSTBACK_PATH} HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n"
            "Connection: close\r\n\r\n{}".encode(),
        )
        assert split(answer)[0] == 417, answer
        assert (await client.get("/no-such-path")).status == 404
        for reason in ("bad_http_request", "unsupported_expect", "not_found"):
            assert rejected(client, reason) == 1, reason
            assert rejected(other, reason) == 0, reason

        page = await (await client.get("/metrics")).text()
        for line in (
            'kseg_receiver_rejected_total{reason="bad_http_request"} 1.0',
            'kseg_receiver_rejected_total{reason="unsupported_expect"} 1.0',
            "kseg_receiver_ready 1.0",
            "# TYPE kseg_receiver_requests_total counter",
            "# TYPE kseg_receiver_accepted_total counter",
            "# TYPE kseg_receiver_produce_seconds histogram",
            "# TYPE kseg_receiver_pending_produces gauge",
            "# TYPE kseg_receiver_unauthenticated_calls_total counter",
            "# TYPE kseg_identity_links_rejected_total counter",
            "# TYPE python_gc_objects_collected_total counter",
        ):
            assert line in page.splitlines(), line
        assert 'reason="bad_http_request"' not in await (await other.get("/metrics")).text()
    finally:
        await other.close()
