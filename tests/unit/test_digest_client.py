"""The Reporting API client against the strict emulator: token flow, errors that stop, faults that retry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import aiohttp
import orjson
import pytest

from app.digest.client import (
    AppNotFound,
    PollPolicy,
    ReportingClient,
    ReportingError,
    ReportingUnavailable,
    ReportTimeout,
)
from app.digest.report import summary_body, window
from app.sinks.policy import Backoff
from tests.emulators.kochava_reporting import KochavaReportingEmulator

KEY, GUID = "client-key", "koclient-guid"
ROW = {
    "date": "2026-11-30",
    "network": "Meta",
    "campaign": "spring",
    "installs": "10",
    "install_spend": "12.5",
}
FAST = PollPolicy(first_wait=0.05, max_wait=0.05, timeout=5.0)


@pytest.fixture
async def emu() -> AsyncIterator[KochavaReportingEmulator]:
    async with KochavaReportingEmulator(KEY, GUID, queue_seconds=0.05, run_seconds=0.1) as e:
        e.set_rows([ROW])
        yield e


def client(emu: KochavaReportingEmulator, key: str = KEY, **over: Any) -> ReportingClient:
    options: dict[str, Any] = {
        "request_timeout": 2.0,
        "retries": 3,
        "poll": FAST,
        "backoff": Backoff(base=0.01, cap=0.05),
    }
    options.update(over)
    return ReportingClient(emu.url, key, GUID, **options)


def body() -> dict[str, Any]:
    return summary_body(window(date(2026, 11, 30), 1, "UTC"), "UTC")


async def test_report_flow_returns_the_rows(emu) -> None:
    async with client(emu) as c:
        rows = await c.run_report("summary", body())
    assert [(r["campaign"], r["installs"], r["install_spend"]) for r in rows] == [("spring", "10", "12.5")]
    assert emu.calls["summary"] == 1 and emu.calls["progress"] >= 2 and emu.downloads == 1


async def test_wrong_key_says_so_and_is_not_retried(emu) -> None:
    async with client(emu, key="wrong") as c:
        with pytest.raises(AppNotFound, match=r"App does not exist\..*KOCHAVA_API_KEY"):
            await c.run_report("summary", body())
    assert emu.calls["summary"] == 1 and emu.reports == {}


async def test_5xx_is_retried_then_succeeds(emu) -> None:
    emu.fail_next(2, status=503)
    async with client(emu) as c:
        rows = await c.run_report("summary", body())
        assert c.stats.retries == {"http_503": 2}
    assert len(rows) == 1


async def test_429_waits_for_retry_after(emu) -> None:
    emu.fail_next(1, status=429, retry_after=0.5)
    started = time.monotonic()
    async with client(emu) as c:
        await c.run_report("summary", body())
        assert c.stats.retries == {"http_429": 1}
    assert time.monotonic() - started >= 0.5


async def test_5xx_on_every_attempt_gives_up_with_a_clear_error(emu) -> None:
    emu.fail_next(10, status=500)
    async with client(emu, retries=2) as c:
        with pytest.raises(ReportingUnavailable, match="3 attempts"):
            await c.run_report("summary", body())
    assert emu.calls["summary"] == 3


async def test_a_timeout_is_retried(emu) -> None:
    emu.slow_next(1, delay=1.5)
    async with client(emu, request_timeout=0.3) as c:
        rows = await c.run_report("summary", body())
        assert c.stats.retries == {"timeout": 1}
    assert len(rows) == 1


async def test_a_report_stuck_in_running_ends_in_a_bounded_wait(emu) -> None:
    emu.stick_next()
    started = time.monotonic()
    async with client(emu, poll=PollPolicy(first_wait=0.05, max_wait=0.1, timeout=0.8)) as c:
        with pytest.raises(ReportTimeout, match=r"still running after 0\.8 s"):
            await c.run_report("summary", body())
    assert time.monotonic() - started < 10  # bounded: it gave up instead of polling forever
    assert emu.calls["progress"] >= 3


async def test_a_failed_report_is_an_error_with_kochavas_message(emu) -> None:
    emu.error_next(message="Report generation failed.")
    async with client(emu) as c:
        with pytest.raises(ReportingError, match=r"Report generation failed\."):
            await c.run_report("summary", body())


async def test_a_duplicate_of_a_running_request_waits_for_it_then_gets_a_token(emu) -> None:
    async with aiohttp.ClientSession() as http:  # someone else's identical request, still queued
        payload = {"api_key": KEY, "app_guid": GUID, **body()}
        async with http.post(f"{emu.url}/summary", data=orjson.dumps(payload)) as resp:
            assert "report_token" in await resp.json()
    async with client(emu) as c:
        rows = await c.run_report("summary", body())
    assert len(rows) == 1 and emu.calls["summary"] >= 2 and len(emu.reports) == 2


async def test_report_columns(emu) -> None:
    async with client(emu) as c:
        columns = await c.report_columns()
    assert {"date", "network", "campaign", "installs", "install_spend"} <= set(columns)


async def test_missing_credentials_are_refused_before_any_call() -> None:
    with pytest.raises(ReportingError, match="KOCHAVA_API_KEY and KOCHAVA_APP_GUID"):
        ReportingClient("http://127.0.0.1:9", "", "guid")


def test_poll_delays_wait_first_then_back_off_within_the_bound() -> None:
    delays = PollPolicy(first_wait=15, max_wait=10, timeout=60).delays()
    assert delays[:6] == [15, 1, 2, 4, 8, 10]
    assert sum(delays) == pytest.approx(60)
    assert max(delays[1:]) <= 10


async def test_every_call_is_a_post_with_auth_in_the_body(emu) -> None:
    # The emulator refuses anything else, so a completed report proves it; and a GET is refused.
    async with aiohttp.ClientSession() as http, http.get(f"{emu.url}/progress") as resp:
        assert resp.status == 405
    async with client(emu) as c:
        await asyncio.wait_for(c.run_report("summary", body()), timeout=30)
