"""Client-input failures at the receiver's edge, over raw sockets to a real receiver on a real broker:
each is a 4xx with a JSON reason, counted in `kseg_receiver_rejected_total`, never a 500 or a traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from app.broker.embedded import EmbeddedBroker
from app.receiver.identity_routes import WEBHOOK_PATH
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


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("kseg_receiver_rejected_total", {"reason": reason}) or 0.0


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
    before = rejected("invalid_signature")
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
    assert rejected("invalid_signature") == before + 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_client_that_hangs_up_mid_body_is_a_counted_4xx(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    before = rejected("body_incomplete")
    head = (
        f"POST {POSTBACK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer pb-1\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with caplog.at_level(logging.INFO):
        await exchange(client, head + b'{"kochava_device_id": "KD', close_early=True)
        for _ in range(100):
            if rejected("body_incomplete") > before:
                break
            await asyncio.sleep(0.05)
    assert rejected("body_incomplete") == before + 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_expect_and_parser_refusals_are_counted(client: TestClient) -> None:
    before = rejected("unsupported_expect")
    answer = await exchange(
        client,
        f"POST {POSTBACK_PATH} HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n"
        "Connection: close\r\n\r\n{}".encode(),
    )
    assert split(answer)[0] == 417, answer
    assert rejected("unsupported_expect") == before + 1

    before = rejected("bad_http_request")
    answer = await exchange(client, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\n\r\n")
    status, reason = split(answer)
    assert (status, reason["error"]) == (400, "bad_http_request"), answer
    assert rejected("bad_http_request") == before + 1


async def test_user_agent_that_is_not_utf8_is_a_400_naming_the_header(client: TestClient) -> None:
    before = rejected("invalid_encoding")
    answer = await exchange(
        client,
        f"GET {POSTBACK_PATH}?kochava_device_id=KD-ua&event_name=_install HTTP/1.1\r\nHost: x\r\n"
        "Authorization: Bearer pb-1\r\nConnection: close\r\nUser-Agent: ".encode()
        + b"Kochava \xff\xfe"
        + b"\r\n\r\n",
    )
    status, reason = split(answer)
    assert (status, reason["error"], reason["header"]) == (400, "invalid_encoding", "User-Agent"), answer
    assert rejected("invalid_encoding") == before + 1
