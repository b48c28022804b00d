"""The receiver's edge defences over real HTTP and a real embedded broker: compressed bodies, rate
limits, the webhook header secret, slow and oversized requests."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from app.broker.embedded import EmbeddedBroker
from app.config import Settings
from app.identity.webhook import sign
from app.metrics import sample as registry_sample
from app.receiver.bodies import decode
from app.receiver.errors import ClientError
from app.receiver.identity_routes import WEBHOOK_PATH
from app.receiver.metrics import RECEIVER_METRICS
from app.receiver.ratelimit import CredentialLimiter, TokenBucket, credential_id
from app.receiver.server import POSTBACK_PATH
from tests.harness import ROOT
from tests.receiver_app import receiver_settings, started_client

POSTBACK = {"kochava_device_id": "KD-1", "event_name": "_install", "network_name": "Net"}
HEADER = "X-Kseg-Webhook-Secret"


def make_settings(broker: EmbeddedBroker, **kw: Any) -> Settings:
    return receiver_settings(broker, kseg_postback_tokens="pb-1,pb-2", kseg_link_tokens="ln-1", **kw)


@pytest.fixture
async def client(broker: EmbeddedBroker) -> AsyncIterator[TestClient]:
    c = await started_client(make_settings(broker, kseg_http_body_timeout=0.5, kseg_http_header_timeout=1.0))
    yield c
    await c.close()


def sample(client: TestClient, name: str, **labels: str) -> float:
    """A counter's value now on this receiver's own registry (the one its /metrics serves)."""
    return registry_sample(name, client.app[RECEIVER_METRICS].registry, **labels)


def postback(body: bytes, encoding: str, token: str = "pb-1") -> dict[str, Any]:
    return {
        "data": body,
        "headers": {
            "Content-Type": "application/json",
            "Content-Encoding": encoding,
            "Authorization": f"Bearer {token}",
        },
    }


# --- Content-Encoding ----------------------------------------------------------------------------


def test_decode_layers_and_refusals() -> None:
    raw = orjson.dumps(POSTBACK)
    assert decode(gzip.compress(raw), "gzip", 1000) == raw
    assert decode(zlib.compress(raw), "deflate", 1000) == raw
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode(raw_deflate.compress(raw) + raw_deflate.flush(), "deflate", 1000) == raw
    assert decode(gzip.compress(zlib.compress(raw)), "deflate, gzip", 1000) == raw
    assert decode(raw, "identity", 1000) == raw
    with pytest.raises(ClientError) as bad:
        decode(b"not gzip at all", "gzip", 1000)
    assert (bad.value.status, bad.value.code) == (400, "invalid_content_encoding")
    with pytest.raises(ClientError) as truncated:
        decode(gzip.compress(raw)[:-6], "gzip", 1000)
    assert truncated.value.code == "invalid_content_encoding"
    with pytest.raises(ClientError) as unknown:
        decode(raw, "br", 1000)
    assert (unknown.value.status, unknown.value.code) == (400, "unsupported_content_encoding")
    with pytest.raises(ClientError) as bomb:
        decode(gzip.compress(b"0" * 10_000_000), "gzip", 64 * 1024)
    assert (bomb.value.status, bomb.value.code) == (413, "body_too_large")


async def test_compressed_bodies_over_http(client: TestClient, broker: EmbeddedBroker) -> None:
    raw = orjson.dumps(POSTBACK)
    ok = await client.post(POSTBACK_PATH, **postback(gzip.compress(raw), "gzip"))
    assert ok.status == 200, await ok.text()
    for body, encoding, code in [
        (raw, "gzip", "invalid_content_encoding"),
        (b"\x1f\x8b\x08garbage", "gzip", "invalid_content_encoding"),
        (raw, "deflate", "invalid_content_encoding"),
        (raw, "zstd", "unsupported_content_encoding"),
    ]:
        resp = await client.post(POSTBACK_PATH, **postback(body, encoding))
        assert resp.status == 400, (encoding, await resp.text())
        assert (await resp.json())["error"] == code
    # The webhook decodes its body the same way; it needs a configured secret to get that far.
    hooked = await started_client(make_settings(broker, segment_webhook_header_secret="hdr"))
    try:
        gzipped = {"Content-Encoding": "gzip", HEADER: "hdr"}
        webhook = await hooked.post(WEBHOOK_PATH, data=raw, headers=gzipped)
        assert (webhook.status, (await webhook.json())["error"]) == (400, "invalid_content_encoding")
        webhook = await hooked.post(WEBHOOK_PATH, data=gzip.compress(orjson.dumps(IDENTIFY)), headers=gzipped)
        assert (webhook.status, (await webhook.json())["accepted"]) == (200, 1)
    finally:
        await hooked.close()
    bomb = await client.post(POSTBACK_PATH, **postback(gzip.compress(b"{" + b" " * 5_000_000 + b"}"), "gzip"))
    assert (bomb.status, (await bomb.json())["error"]) == (413, "body_too_large")


# --- rate limits ---------------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take() == 0.0
    assert bucket.take() > 0


def test_limiter_is_per_credential_and_off_at_zero() -> None:
    now = [0.0]
    limiter = CredentialLimiter(rate=1.0, burst=1, clock=lambda: now[0])
    limiter.check("postback", "tok-A")
    limiter.check("postback", "tok-B")
    limiter.check("identity_links", "tok-A")
    with pytest.raises(ClientError) as refused:
        limiter.check("postback", "tok-A")
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "1"
    assert "tok-A" not in refused.value.message
    now[0] = 1.0
    limiter.check("postback", "tok-A")
    off = CredentialLimiter(rate=0.0, burst=1)
    for _ in range(1000):
        off.check("postback", "a")
    assert len(credential_id("secret")) == 12 and "secret" not in credential_id("secret")


async def test_rate_limit_answers_429_with_retry_after(broker: EmbeddedBroker) -> None:
    c = await started_client(make_settings(broker, kseg_rate_limit_per_token=0.5, kseg_rate_limit_burst=2))
    refused_before = sample(c, "kseg_receiver_rejected_total", reason="rate_limited")
    try:
        statuses = []
        for _ in range(3):
            resp = await c.get(POSTBACK_PATH, params={**POSTBACK, "token": "pb-1"})
            statuses.append(resp.status)
        assert statuses == [200, 200, 429]
        assert int(resp.headers["Retry-After"]) >= 1
        body = await resp.json()
        assert body["error"] == "rate_limited" and "pb-1" not in orjson.dumps(body).decode()
        other = await c.get(POSTBACK_PATH, params={**POSTBACK, "token": "pb-2"})
        assert other.status == 200
        assert sample(c, "kseg_receiver_rejected_total", reason="rate_limited") == refused_before + 1
    finally:
        await c.close()


# --- Segment webhook header secret ---------------------------------------------------------------

IDENTIFY = {
    "type": "identify",
    "userId": "u-1",
    "messageId": "m-1",
    "context": {"device": {"type": "ios", "id": "IDFV-1", "advertisingId": "IDFA-1"}},
}


async def test_webhook_header_secret_authenticates_whole_batches(broker: EmbeddedBroker) -> None:
    c = await started_client(
        make_settings(broker, segment_webhook_secret="sig", segment_webhook_header_secret="hdr")
    )
    unauthenticated_before = sample(c, "kseg_receiver_unauthenticated_calls_total", route="segment_webhook")
    try:
        batch = orjson.dumps([IDENTIFY, {**IDENTIFY, "messageId": "m-2", "userId": "u-2"}])
        signature = sign(orjson.dumps(IDENTIFY), "sig")  # element 0 only, as Segment signs a batch
        missing = await c.post(WEBHOOK_PATH, data=batch, headers={"X-Signature": signature})
        assert (missing.status, (await missing.json())["error"]) == (401, "missing_webhook_header")
        wrong = await c.post(WEBHOOK_PATH, data=batch, headers={"X-Signature": signature, HEADER: "nope"})
        body = await wrong.json()
        assert (wrong.status, body["error"]) == (401, "invalid_webhook_header")
        assert "hdr" not in orjson.dumps(body).decode().replace(HEADER, "")
        unsigned = await c.post(WEBHOOK_PATH, data=batch, headers={HEADER: "hdr"})
        assert (unsigned.status, (await unsigned.json())["error"]) == (401, "missing_signature")
        ok = await c.post(WEBHOOK_PATH, data=batch, headers={"X-Signature": signature, HEADER: "hdr"})
        assert ok.status == 200, await ok.text()
        assert (await ok.json())["accepted"] == 2
        unauthenticated = sample(c, "kseg_receiver_unauthenticated_calls_total", route="segment_webhook")
        assert unauthenticated == unauthenticated_before
    finally:
        await c.close()


async def test_header_secret_alone_is_enough_and_signature_only_batches_are_counted(
    broker: EmbeddedBroker,
) -> None:
    batch = orjson.dumps([IDENTIFY, {**IDENTIFY, "messageId": "m-2", "userId": "u-2"}])
    header_only = await started_client(make_settings(broker, segment_webhook_header_secret="hdr"))
    try:
        ok = await header_only.post(WEBHOOK_PATH, data=batch, headers={HEADER: "hdr"})
        assert ok.status == 200, await ok.text()
    finally:
        await header_only.close()
    signature_only = await started_client(make_settings(broker, segment_webhook_secret="sig"))
    before = sample(signature_only, "kseg_receiver_unauthenticated_calls_total", route="segment_webhook")
    try:
        signature = sign(orjson.dumps(IDENTIFY), "sig")
        ok = await signature_only.post(WEBHOOK_PATH, data=batch, headers={"X-Signature": signature})
        assert ok.status == 200, await ok.text()
        metrics = await (await signature_only.get("/metrics")).text()
        assert "kseg_receiver_unauthenticated_calls_total" in metrics
        assert (
            sample(signature_only, "kseg_receiver_unauthenticated_calls_total", route="segment_webhook")
            == before + 1
        )
    finally:
        await signature_only.close()


# --- slow and oversized requests -----------------------------------------------------------------


async def raw_exchange(client: TestClient, chunks: list[tuple[bytes, float]], read_for: float) -> bytes:
    """Send `chunks` (bytes, pause after) on a raw connection and return what the server answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        for data, pause in chunks:
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(pause)
        return await asyncio.wait_for(reader.read(65536), read_for)
    finally:
        writer.close()


async def test_slow_body_is_cut_off_with_408(client: TestClient) -> None:
    head = (
        f"POST {POSTBACK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer pb-1\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    answer = await raw_exchange(client, [(head + b'{"kochava_device_id"', 0.0)], read_for=10)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"body_timeout"' in answer


async def test_slow_headers_are_cut_off(client: TestClient) -> None:
    answer = await raw_exchange(client, [(b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 0.0)], read_for=10)
    assert answer == b""  # connection closed by the header timeout, no request handled


async def test_oversized_header_and_token_are_4xx(client: TestClient) -> None:
    resp = await client.get("/healthz", headers={"X-Big": "a" * 20_000})
    assert 400 <= resp.status < 500
    resp = await client.get(POSTBACK_PATH, params={**POSTBACK, "token": "t" * 7000})
    assert (resp.status, (await resp.json())["error"]) == (401, "invalid_token")
    many = {f"X-H{i}": "v" for i in range(100)}
    resp = await client.get("/healthz", headers=many)
    assert 400 <= resp.status < 500


# --- credentials ---------------------------------------------------------------------------------


async def test_links_api_is_off_without_link_tokens(broker: EmbeddedBroker) -> None:
    c = await started_client(receiver_settings(broker, kseg_postback_tokens="pb-1"))
    try:
        resp = await c.post(
            "/v1/identity/links", json={"user_id": "u"}, headers={"Authorization": "Bearer pb-1"}
        )
        body = await resp.json()
        assert (resp.status, body["error"]) == (403, "links_api_disabled")
        assert "KSEG_LINK_TOKENS" in body["message"]
    finally:
        await c.close()


def test_receiver_refuses_to_start_when_a_token_is_both_kinds() -> None:
    env = {
        **os.environ,
        "KSEG_POSTBACK_TOKENS": "shared,pb",
        "KSEG_LINK_TOKENS": "shared",
        "KSEG_HTTP_PORT": "9",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "receiver"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "both KSEG_POSTBACK_TOKENS and KSEG_LINK_TOKENS" in proc.stderr + proc.stdout
    assert "shared" not in (proc.stderr + proc.stdout).replace("shared with", "")
