"""The Kochava emulator is the oracle of the Kochava sink tests: it must refuse what Kochava would drop
and inject the faults asked for. Talks to it with plain aiohttp, never with kseg's client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.emulators.kochava_api import IDENTITY_LINK_PATH, TRACK_PATH, KochavaEmulator

GUID = "koapp-test"


def event(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kochava_app_id": GUID,
        "action": "event",
        "kochava_device_id": "KI1234",
        "device_ids": {"idfv": "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
        "usertime": 1735689600,
        "data": {"event_name": "Audience Entered", "event_data": {"audience_key": "high_ltv"}},
    }
    body.update(over)
    return body


def link(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kochava_app_id": GUID,
        "device_id": {"kochava_device_id": "KI1234"},
        "data": {"app_userid": "user-1"},
    }
    body.update(over)
    return body


@pytest.fixture
async def emu() -> AsyncIterator[KochavaEmulator]:
    async with KochavaEmulator(GUID) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def post(http: aiohttp.ClientSession, emu: KochavaEmulator, path: str, body: Any) -> tuple[int, Any]:
    async with http.post(emu.url + path, json=body) as resp:
        return resp.status, await resp.json()


async def test_valid_event_is_accepted_with_success_1(
    emu: KochavaEmulator, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, emu, TRACK_PATH, event())
    assert (status, body) == (200, {"success": "1"})
    assert emu.events == [event()]


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"kochava_app_id": "other"}, "unknown_app"),
        ({"action": "click"}, "invalid_action"),
        ({"kochava_device_id": ""}, "missing_kochava_device_id"),
        ({"device_ids": {"idfa": "00000000-0000-0000-0000-000000000000"}}, "junk_device_id"),
        ({"device_ids": {"adid": ""}}, "invalid_device_ids"),
        ({"usertime": 1735689600000}, "invalid_usertime"),
        ({"usertime": "2025-01-01T00:00:00Z"}, "invalid_usertime"),
        ({"usertime": None}, "invalid_usertime"),
        ({"data": {"event_data": {}}}, "missing_event_name"),
        ({"data": {"event_name": "X", "event_data": []}}, "invalid_event_data"),
        ({"app_tracking_transparency": {"att": "yes"}}, "invalid_att"),
    ],
)
async def test_invalid_event_is_400_with_reason(
    emu: KochavaEmulator, http: aiohttp.ClientSession, over: dict[str, Any], code: str
) -> None:
    status, body = await post(http, emu, TRACK_PATH, event(**over))
    assert status == 400
    assert body["error"] == code and body["success"] == "0"
    assert emu.events == []


async def test_usertime_as_digit_string_is_epoch_seconds(
    emu: KochavaEmulator, http: aiohttp.ClientSession
) -> None:
    status, _ = await post(http, emu, TRACK_PATH, event(usertime="1735689600"))
    assert status == 200


async def test_idfa_without_att_block_is_counted_as_dropped(
    emu: KochavaEmulator, http: aiohttp.ClientSession
) -> None:
    ids = {"idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC"}
    await post(http, emu, TRACK_PATH, event(device_ids=ids))
    await post(http, emu, TRACK_PATH, event(device_ids=ids, app_tracking_transparency={"att": True}))
    assert emu.idfa_dropped == 1 and len(emu.events) == 2


async def test_identity_link_rules(emu: KochavaEmulator, http: aiohttp.ClientSession) -> None:
    assert (await post(http, emu, IDENTITY_LINK_PATH, link()))[0] == 200
    assert (await post(http, emu, IDENTITY_LINK_PATH, link(device_id={})))[1]["error"] == "missing_device_id"
    assert (await post(http, emu, IDENTITY_LINK_PATH, link(data={"app_userid": ""})))[1][
        "error"
    ] == "invalid_data"
    assert (await post(http, emu, IDENTITY_LINK_PATH, link(kochava_app_id="x")))[1]["error"] == "unknown_app"
    assert len(emu.identity_links) == 1


async def test_fail_next_answers_status_then_recovers(
    emu: KochavaEmulator, http: aiohttp.ClientSession
) -> None:
    emu.fail_next(2, status=503, retry_after=0.5)
    async with http.post(emu.url + TRACK_PATH, json=event()) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "0.5"
    assert (await post(http, emu, TRACK_PATH, event()))[0] == 503
    assert (await post(http, emu, TRACK_PATH, event()))[0] == 200
    assert len(emu.events) == 1
    assert emu.stats()["status_counts"] == {"503": 2, "200": 1}


async def test_fail_for_a_duration(emu: KochavaEmulator, http: aiohttp.ClientSession) -> None:
    emu.fail_for(0.3, status=500)
    assert (await post(http, emu, TRACK_PATH, event()))[0] == 500
    await asyncio.sleep(0.35)
    assert (await post(http, emu, TRACK_PATH, event()))[0] == 200


async def test_slow_fault_times_a_client_out_though_kochava_kept_the_event(emu: KochavaEmulator) -> None:
    """A timeout is not "not received": the answer is lost, the event kept (a retry duplicates)."""
    emu.slow_next(1, delay=1.0)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as short:
        with pytest.raises(asyncio.TimeoutError):
            async with short.post(emu.url + TRACK_PATH, json=event()) as resp:
                await resp.read()
    await asyncio.sleep(1.1)
    assert len(emu.events) == 1


async def test_faults_over_the_control_api(emu: KochavaEmulator, http: aiohttp.ClientSession) -> None:
    async with http.post(emu.url + "/_emulator/faults", json={"status": 502, "count": 1}) as resp:
        assert resp.status == 200
    async with http.post(emu.url + "/_emulator/faults", json={"bogus": 1}) as resp:
        assert resp.status == 400
    assert (await post(http, emu, TRACK_PATH, event()))[0] == 502
    assert (await post(http, emu, TRACK_PATH, event()))[0] == 200
    async with http.get(emu.url + "/_emulator/requests") as resp:
        assert len((await resp.json())["events"]) == 1
