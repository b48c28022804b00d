"""The Reporting API emulator is the oracle of the digest tests, so it gets its own tests: if it accepted
what Kochava refuses (auth outside the body, bounds off the hour) the client tests would prove nothing.

Talks to the emulator with plain aiohttp, never with kseg's client, to keep the two independent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.emulators.kochava_reporting import APP_DOES_NOT_EXIST, KochavaReportingEmulator

KEY, GUID = "emu-key", "koemu-guid"
ROOT = Path(__file__).resolve().parents[2]
DAY0 = 1_764_460_800  # 2025-11-30T00:00:00Z
ROWS = [
    {"date": "2025-11-30", "network": "Meta", "network_id": "7", "campaign": "spring", "campaign_id": "71",
     "clicks": "100", "impressions": "1000", "installs": "10", "click_spend": "5", "impression_spend": "2.5",
     "install_spend": "12.5"},
    {"date": "2025-11-30", "network": "Meta", "network_id": "7", "campaign": "summer", "campaign_id": "72",
     "clicks": "50", "impressions": "500", "installs": "4", "click_spend": "1", "impression_spend": "0",
     "install_spend": "3"},
    {"date": "2025-12-01", "network": "Meta", "network_id": "7", "campaign": "spring", "campaign_id": "71",
     "clicks": "1", "impressions": "1", "installs": "1", "click_spend": "1", "impression_spend": "0",
     "install_spend": "0"},
]  # fmt: skip


def body(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "api_key": KEY,
        "app_guid": GUID,
        "time_start": str(DAY0),
        "time_end": str(DAY0 + 86400),
        "traffic": ["click", "impression", "install"],
        "traffic_grouping": ["network", "campaign"],
        "time_series": "24",
        "time_zone": "UTC",
        "delivery_method": ["S3link"],
        "delivery_format": "json",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


class ManualClock:
    """The emulator's clock, moved only by the test: a slow machine can neither skip a state nor finish a
    report between two requests that must see it queued."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def emu(clock: ManualClock) -> AsyncIterator[KochavaReportingEmulator]:
    async with KochavaReportingEmulator(KEY, GUID, queue_seconds=1, run_seconds=1, clock=clock) as e:
        e.set_rows(ROWS)
        yield e


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, payload: Any) -> tuple[int, Any]:
    async with http.post(url, data=orjson.dumps(payload)) as resp:
        return resp.status, orjson.loads(await resp.read())


async def until_status(
    http: aiohttp.ClientSession, emu: KochavaReportingEmulator, token: str
) -> dict[str, Any]:
    """Polls progress, moving the emulator's clock half a second after each answer."""
    assert isinstance(emu.clock, ManualClock)
    seen = []
    for _ in range(20):
        _, answer = await post(
            http, f"{emu.url}/progress", {"api_key": KEY, "app_guid": GUID, "token": token}
        )
        seen.append(answer["status"])
        if answer["status"] not in ("queued", "running"):
            answer["seen"] = seen
            return dict(answer)
        emu.clock.now += 0.5
    raise AssertionError(f"report never finished: {seen[-5:]}")


async def test_full_flow_queued_running_completed_then_download(emu, http) -> None:
    status, answer = await post(http, f"{emu.url}/summary", body())
    assert status == 200 and answer["status"] == "queued" and answer["report_token"]
    done = await until_status(http, emu, answer["report_token"])
    assert done["seen"] == ["queued", "queued", "running", "running", "completed"]
    async with http.get(done["report"]) as resp:
        rows = orjson.loads(await resp.read())
    by_campaign = {r["campaign"]: r for r in rows}
    assert set(by_campaign) == {"spring", "summer"}  # 2025-12-01 is outside the window
    assert by_campaign["spring"]["installs"] == "10" and by_campaign["spring"]["install_spend"] == "12.5"
    assert "events" not in by_campaign["spring"]  # `event` traffic not asked for
    assert emu.downloads == 1


async def test_wrong_key_or_guid_answers_app_does_not_exist(emu, http) -> None:
    for payload in (body(api_key="nope"), body(app_guid="other"), body(api_key=None)):
        status, answer = await post(http, f"{emu.url}/summary", payload)
        assert (status, answer) == (200, {"status": "Error", "error": APP_DOES_NOT_EXIST})
    assert emu.reports == {}


async def test_auth_in_a_header_is_not_auth(emu, http) -> None:
    payload = body()
    del payload["api_key"]
    async with http.post(f"{emu.url}/summary", data=orjson.dumps(payload), headers={"api_key": KEY}) as resp:
        assert orjson.loads(await resp.read())["error"] == APP_DOES_NOT_EXIST


@pytest.mark.parametrize(
    ("over", "fragment"),
    [
        ({"time_start": str(DAY0 + 1800)}, "full hour"),
        ({"time_end": DAY0 + 86400}, "as a string"),
        ({"time_end": str(DAY0)}, "after time_start"),
        ({"time_end": str(DAY0 + 101 * 86400)}, "100 days"),
        ({"traffic": ["install", "bogus"]}, "traffic"),
        ({"traffic": ["cost_restated"]}, "traffic"),  # a detail-only value
        ({"time_series": 24}, "time_series"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"delivery_format": "xml"}, "delivery_format"),
        ({"traffic_grouping": "network"}, "traffic_grouping"),
    ],
)
async def test_invalid_parameters_answer_an_error_status(emu, http, over, fragment) -> None:
    _, answer = await post(http, f"{emu.url}/summary", body(**over))
    assert answer["status"] == "Error" and fragment in answer["error"]


async def test_get_is_refused_and_a_non_json_body_is_an_error(emu, http) -> None:
    async with http.get(f"{emu.url}/summary") as resp:
        assert resp.status == 405
    async with http.post(f"{emu.url}/summary", data=b"api_key=x") as resp:
        assert (await resp.json())["status"] == "Error"


async def test_duplicate_of_a_running_request_returns_no_token(emu, http) -> None:
    _, first = await post(http, f"{emu.url}/summary", body())
    _, dup = await post(http, f"{emu.url}/summary", body())
    assert "report_token" not in dup and dup["status"] in ("queued", "running")
    _, other = await post(http, f"{emu.url}/summary", body(traffic=["install"]))
    assert other["report_token"]  # a different request is not a duplicate
    await until_status(http, emu, first["report_token"])
    _, again = await post(http, f"{emu.url}/summary", body())
    assert again["report_token"] not in (None, first["report_token"])  # the first one is done


async def test_grouping_by_network_only_sums_campaigns(emu, http) -> None:
    _, answer = await post(http, f"{emu.url}/summary", body(traffic_grouping=["network"]))
    done = await until_status(http, emu, answer["report_token"])
    async with http.get(done["report"]) as resp:
        rows = orjson.loads(await resp.read())
    assert len(rows) == 1 and rows[0]["installs"] == "14" and "campaign" not in rows[0]
    assert rows[0]["impression_spend"] == "2.5" and rows[0]["click_spend"] == "6"


async def test_time_zone_moves_the_day_boundary(emu, http) -> None:
    # 2025-11-30 in Toronto (UTC-5) runs from 05:00Z to 05:00Z next day.
    _, answer = await post(
        http,
        f"{emu.url}/summary",
        body(time_zone="America/Toronto", time_start=str(DAY0 + 5 * 3600), time_end=str(DAY0 + 29 * 3600)),
    )
    done = await until_status(http, emu, answer["report_token"])
    async with http.get(done["report"]) as resp:
        rows = orjson.loads(await resp.read())
    assert {r["date"] for r in rows} == {"2025-11-30"}


async def test_restated_rows_replace_the_old_figures(emu, http) -> None:
    emu.set_rows([{**ROWS[0], "install_spend": "20"}])
    _, answer = await post(http, f"{emu.url}/summary", body())
    done = await until_status(http, emu, answer["report_token"])
    async with http.get(done["report"]) as resp:
        rows = {r["campaign"]: r for r in orjson.loads(await resp.read())}
    assert rows["spring"]["install_spend"] == "20"


async def test_download_before_completion_is_404(emu, http) -> None:
    _, answer = await post(http, f"{emu.url}/summary", body())
    async with http.get(f"http://{emu.host}:{emu.port}/_reports/{answer['report_token']}") as resp:
        assert resp.status == 404


async def test_faults_5xx_stuck_error_and_slow(emu, http, clock) -> None:
    emu.fail_next(2, status=502)
    assert (await post(http, f"{emu.url}/summary", body()))[0] == 502
    assert (await post(http, f"{emu.url}/summary", body()))[0] == 502
    emu.stick_next()
    _, stuck = await post(http, f"{emu.url}/summary", body())
    clock.now += 60
    _, progress = await post(
        http, f"{emu.url}/progress", {"api_key": KEY, "app_guid": GUID, "token": stuck["report_token"]}
    )
    assert progress["status"] == "running"
    emu.error_next(message="Report failed.")
    _, failing = await post(http, f"{emu.url}/summary", body(traffic=["click"]))
    done = await until_status(http, emu, failing["report_token"])
    assert (done["status"], done["error"]) == ("Error", "Report failed.")
    emu.slow_next(delay=1.0)
    with pytest.raises(TimeoutError):
        async with http.post(
            f"{emu.url}/reportcolumns",
            data=orjson.dumps({"api_key": KEY, "app_guid": GUID, "report": "summary"}),
            timeout=aiohttp.ClientTimeout(total=0.2),
        ):
            pass


async def test_reportcolumns_lists_renamed_columns(http) -> None:
    async with KochavaReportingEmulator(KEY, GUID, rename={"installs": "install_count"}) as emu:
        _, cols = await post(
            http, f"{emu.url}/reportcolumns", {"api_key": KEY, "app_guid": GUID, "report": "summary"}
        )
        assert "install_count" in cols and "installs" not in cols and "campaign" in cols
        _, bad = await post(http, f"{emu.url}/reportcolumns", {"api_key": KEY, "app_guid": GUID})
        assert bad["status"] == "Error"


async def test_unknown_token_is_an_error(emu, http) -> None:
    _, answer = await post(http, f"{emu.url}/progress", {"api_key": KEY, "app_guid": GUID, "token": "nope"})
    assert answer == {"status": "Error", "error": "Invalid token."}


def test_runs_as_a_process(tmp_path: Path) -> None:
    rows = tmp_path / "rows.json"
    rows.write_bytes(orjson.dumps(ROWS))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.emulators.kochava_reporting", "--rows", str(rows), "--api-key", KEY,
         "--app-guid", GUID],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:") and line.strip().endswith("/v1.4")
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
