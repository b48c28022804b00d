"""The Segment emulator is the oracle of the sink tests, so it gets its own tests: if it accepted
what Segment drops, or never injected the fault asked for, the sink tests would prove nothing.

Talks to the emulator with plain aiohttp, never with kseg's client, to keep the two independent.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.emulators.segment_api import MAX_BATCH_ITEMS, SegmentEmulator

KEY = "emu-key"
ROOT = Path(__file__).resolve().parents[2]


def basic(key: str = KEY, password: str = "") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{password}".encode()).decode()}


def msg(i: int = 0, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "track",
        "event": "Install Attributed",
        "userId": f"user-{i}",
        "messageId": f"mid-{i}",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {"provider": "Kochava"},
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


@pytest.fixture
async def emu() -> AsyncIterator[SegmentEmulator]:
    async with SegmentEmulator(KEY) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    emu: SegmentEmulator,
    body: Any,
    *,
    path: str = "/v1/batch",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    data = raw if raw is not None else orjson.dumps(body)
    hdrs = basic() if headers is None else headers
    async with http.post(emu.url + path, data=data, headers=hdrs) as resp:
        text = await resp.read()
        return resp.status, dict(resp.headers), orjson.loads(text) if text else None


# ---- acceptance and recording ----------------------------------------------------------------


async def test_accepts_valid_batch_and_records_it(emu: SegmentEmulator, http: aiohttp.ClientSession) -> None:
    status, _, _ = await post(http, emu, {"batch": [msg(1), msg(2)], "sentAt": "2024-05-01T12:00:01Z"})
    assert status == 200
    assert [m["messageId"] for m in emu.messages] == ["mid-1", "mid-2"]
    assert emu.requests[0].sent_at == "2024-05-01T12:00:01Z"
    async with http.get(emu.url + "/_emulator/stats") as resp:
        stats = await resp.json()
    assert stats["messages"] == 2 and stats["requests_by_status"] == {"200": 1}
    async with http.get(emu.url + "/_emulator/messages") as resp:
        assert [m["messageId"] for m in await resp.json()] == ["mid-1", "mid-2"]


async def test_counts_duplicate_message_ids(emu: SegmentEmulator, http: aiohttp.ClientSession) -> None:
    await post(http, emu, {"batch": [msg(1)]})
    await post(http, emu, {"batch": [msg(1)]})
    assert emu.by_message_id["mid-1"] == 2
    assert emu.stats()["duplicate_messages"] == 1


async def test_gzip_body_accepted(emu: SegmentEmulator, http: aiohttp.ClientSession) -> None:
    raw = gzip.compress(orjson.dumps({"batch": [msg(1)]}))
    status, _, _ = await post(http, emu, None, raw=raw, headers={**basic(), "Content-Encoding": "gzip"})
    assert status == 200
    assert emu.requests[0].gzip is True and emu.stats()["messages"] == 1


@pytest.mark.parametrize("kind", ["track", "identify", "alias"])
async def test_single_message_endpoints(emu: SegmentEmulator, http: aiohttp.ClientSession, kind: str) -> None:
    body = msg(3, type=None)
    if kind == "alias":
        body["previousId"] = "anon-3"
    status, _, _ = await post(http, emu, body, path=f"/v1/{kind}")
    assert status == 200
    assert emu.messages[0]["type"] == kind


# ---- auth --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, basic("wrong-key"), basic(KEY, "not-empty"), {"Authorization": "Bearer " + KEY}],
    ids=["none", "wrong-key", "password", "bearer"],
)
async def test_auth_refused(
    emu: SegmentEmulator, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    status, _, body = await post(http, emu, {"batch": [msg()]}, headers=headers)
    assert status == 401
    assert set(body) == {"code", "message"}
    assert emu.stats()["messages"] == 0


async def test_write_key_in_body_accepted(emu: SegmentEmulator, http: aiohttp.ClientSession) -> None:
    status, _, _ = await post(http, emu, {"batch": [msg()], "writeKey": KEY}, headers={})
    assert status == 200


# ---- request-level limits ----------------------------------------------------------------------


async def test_invalid_json_is_400(emu: SegmentEmulator, http: aiohttp.ClientSession) -> None:
    status, _, body = await post(http, emu, None, raw=b'{"batch": [')
    assert status == 400 and body["code"] == "invalid_json"


async def test_request_over_500kb_after_decompression_is_400(
    emu: SegmentEmulator, http: aiohttp.ClientSession
) -> None:
    big = [msg(i, properties={"pad": "x" * 20_000}) for i in range(30)]  # ~600 KB, compresses to little
    raw = gzip.compress(orjson.dumps({"batch": big}))
    assert len(raw) < 100_000
    status, _, body = await post(http, emu, None, raw=raw, headers={**basic(), "Content-Encoding": "gzip"})
    assert status == 400 and body["code"] == "request_too_large"
    assert emu.stats()["messages"] == 0


async def test_batch_over_2500_items_is_400_in_strict_mode(
    emu: SegmentEmulator, http: aiohttp.ClientSession
) -> None:
    items = [
        {
            "type": "track",
            "event": "e",
            "userId": "u",
            "messageId": str(i),
            "timestamp": "2024-05-01T00:00:00Z",
        }
        for i in range(MAX_BATCH_ITEMS + 1)
    ]
    status, _, body = await post(http, emu, {"batch": items})
    assert status == 400 and body["code"] == "batch_too_large"
    status, _, _ = await post(http, emu, {"batch": items[:MAX_BATCH_ITEMS]})
    assert status == 200


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"type": "purchase"}, "type"),
        ({"messageId": "m" * 100}, "messageId"),
        ({"messageId": 42}, "messageId"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": _DROP}, "timestamp"),
        ({"userId": _DROP}, "no_user_anon_id"),
        ({"userId": ""}, "no_user_anon_id"),
        ({"userId": 12345}, "id_not_string"),
        ({"event": _DROP}, "event_not_defined"),
        ({"event": ""}, "event_not_string"),
        ({"properties": ["a"]}, "properties_not_object"),
        ({"type": "identify", "traits": "x"}, "traits_not_object"),
        ({"context": {"device": {"advertisingId": 123}}}, "advertisingid"),
        ({"type": "alias", "previousId": _DROP}, "previousId"),
        ({"properties": {"pad": "x" * 33_000}}, "limit"),
    ],
)
async def test_invalid_message_is_400_with_reason(
    emu: SegmentEmulator, http: aiohttp.ClientSession, override: dict[str, Any], needle: str
) -> None:
    status, _, body = await post(http, emu, {"batch": [msg(1), msg(2, **override)]})
    assert status == 400
    assert body["code"] == "invalid_message"
    assert "batch[1]" in body["message"] and needle in body["message"]
    assert emu.stats()["messages"] == 0  # the whole batch is refused, not just the bad item


async def test_anonymous_id_alone_is_enough(emu: SegmentEmulator, http: aiohttp.ClientSession) -> None:
    status, _, _ = await post(http, emu, {"batch": [msg(1, userId=_DROP, anonymousId="anon")]})
    assert status == 200


async def test_lenient_mode_answers_200_and_drops_silently(http: aiohttp.ClientSession) -> None:
    async with SegmentEmulator(KEY, strict=False) as emu:
        status, _, _ = await post(http, emu, {"batch": [msg(1), msg(2, event="")]})
        assert status == 200
        assert [m["messageId"] for m in emu.messages] == ["mid-1"]
        assert emu.stats()["silently_dropped"] == 1


# ---- fault injection ---------------------------------------------------------------------------


async def test_429_fault_carries_retry_after_and_reset(
    emu: SegmentEmulator, http: aiohttp.ClientSession
) -> None:
    emu.fail_next(2, status=429, retry_after=3)
    for _ in range(2):
        status, headers, body = await post(http, emu, {"batch": [msg()]})
        assert status == 429
        assert headers["Retry-After"] == "3" and headers["X-RateLimit-Reset"] == "3"
        assert set(body) == {"code", "message"}
    assert emu.stats()["messages"] == 0
    status, _, _ = await post(http, emu, {"batch": [msg()]})
    assert status == 200


@pytest.mark.parametrize("code", [500, 503, 400, 401, 403])
async def test_status_fault_for_next_request_only(
    emu: SegmentEmulator, http: aiohttp.ClientSession, code: int
) -> None:
    emu.fail_next(1, status=code)
    assert (await post(http, emu, {"batch": [msg()]}))[0] == code
    assert (await post(http, emu, {"batch": [msg()]}))[0] == 200
    assert emu.requests_by_status == {code: 1, 200: 1}


async def test_time_window_fault(emu: SegmentEmulator, http: aiohttp.ClientSession) -> None:
    emu.fail_for(0.3, status=503)
    assert [(await post(http, emu, {"batch": [msg()]}))[0] for _ in range(3)] == [503, 503, 503]
    await asyncio.sleep(0.35)
    assert (await post(http, emu, {"batch": [msg()]}))[0] == 200


async def test_slow_fault_delays_then_answers(emu: SegmentEmulator, http: aiohttp.ClientSession) -> None:
    emu.slow_next(1, delay=0.3)
    start = time.monotonic()
    status, _, _ = await post(http, emu, {"batch": [msg()]})
    assert status == 200 and time.monotonic() - start >= 0.3
    assert emu.stats()["messages"] == 1


async def test_slow_fault_abandoned_by_client_is_not_recorded(
    emu: SegmentEmulator, http: aiohttp.ClientSession
) -> None:
    emu.slow_next(1, delay=0.5)
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            emu.url + "/v1/batch",
            data=orjson.dumps({"batch": [msg()]}),
            headers=basic(),
            timeout=aiohttp.ClientTimeout(total=0.1),
        ):
            pass
    await asyncio.sleep(0.6)
    assert emu.stats()["abandoned"] == 1 and emu.stats()["messages"] == 0


async def test_drop_fault_closes_connection_without_response(
    emu: SegmentEmulator, http: aiohttp.ClientSession
) -> None:
    emu.drop_next(1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, emu, {"batch": [msg()]})
    assert emu.stats()["dropped_connections"] == 1 and emu.stats()["messages"] == 0
    assert (await post(http, emu, {"batch": [msg()]}))[0] == 200


async def test_drop_after_accept_records_then_disconnects(
    emu: SegmentEmulator, http: aiohttp.ClientSession
) -> None:
    emu.drop_next(1, after_accept=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, emu, {"batch": [msg(7)]})
    assert emu.by_message_id["mid-7"] == 1


async def test_poison_rejects_only_batches_containing_it(http: aiohttp.ClientSession) -> None:
    async with SegmentEmulator(KEY, poison=True) as emu:
        bad = msg(9, properties={"poison": True})
        status, _, body = await post(http, emu, {"batch": [msg(1), bad]})
        assert status == 400 and body["code"] == "poison" and "mid-9" in body["message"]
        assert (await post(http, emu, {"batch": [msg(1), msg(2, properties={"poison": False})]}))[0] == 200


async def test_rate_limit_answers_429_with_retry_after(http: aiohttp.ClientSession) -> None:
    async with SegmentEmulator(KEY, rate_limit=3) as emu:
        statuses = []
        for _ in range(5):
            status, headers, _ = await post(http, emu, {"batch": [msg()]})
            statuses.append(status)
        assert statuses == [200, 200, 200, 429, 429]
        assert int(headers["Retry-After"]) >= 1


async def test_faults_via_control_endpoint(emu: SegmentEmulator, http: aiohttp.ClientSession) -> None:
    control = {
        "faults": [{"kind": "status", "status": 429, "retry_after": 0.5, "count": 1}, {"kind": "drop"}],
        "poison": True,
    }
    async with http.post(emu.url + "/_emulator/faults", json=control) as resp:
        assert resp.status == 200 and (await resp.json())["pending_faults"] == 2
    status, headers, _ = await post(http, emu, {"batch": [msg()]})
    assert status == 429 and headers["Retry-After"] == "0.5"
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, emu, {"batch": [msg()]})
    assert (await post(http, emu, {"batch": [msg(5, properties={"poison": True})]}))[0] == 400
    async with http.post(emu.url + "/_emulator/faults", json={"faults": [{"kind": "explode"}]}) as resp:
        assert resp.status == 400
    async with http.post(emu.url + "/_emulator/reset") as resp:
        assert resp.status == 200
    assert emu.stats()["requests"] == 0


# ---- as a subprocess ---------------------------------------------------------------------------


async def test_runs_as_subprocess_and_records_to_file(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    record = tmp_path / "accepted.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.emulators.segment_api",
            "--port",
            "0",
            "--write-key",
            KEY,
            "--record",
            str(record),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=15)
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        body = orjson.dumps({"batch": [msg(1), msg(2)]})
        async with http.post(url + "/v1/batch", data=body, headers=basic()) as resp:
            assert resp.status == 200
        async with http.get(url + "/_emulator/stats") as resp:
            assert (await resp.json())["messages"] == 2
        lines = record.read_bytes().splitlines()
        assert [orjson.loads(x)["messageId"] for x in lines] == ["mid-1", "mid-2"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
