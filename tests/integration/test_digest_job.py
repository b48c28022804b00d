"""The whole digest for real: postbacks → worker → warehouse loader → PostgreSQL, then `kseg digest run`
against the Reporting API emulator → spend in the warehouse and traits through the Segment sink.

Every expected figure is computed by hand in the comments next to the data.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.emulators.kochava_api import KochavaEmulator
from tests.emulators.kochava_reporting import KochavaReportingEmulator
from tests.emulators.segment_api import SegmentEmulator
from tests.harness import ROOT, Pipeline, wait_for
from tests.warehouse_support import LoaderProcess, sql, warehouse_pg

pytestmark = pytest.mark.integration
__all__ = ["warehouse_pg"]

KEY, GUID = "job-key", "kojob-guid"


def ts(text: str) -> str:
    return str(int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()))


def install(device: str, network: str, campaign: str, user: str | None = None) -> dict[str, str]:
    params = {"event_name": "_install", "kochava_device_id": device, "network_name": network,
              "campaign": campaign, "timestamp": ts("2026-11-01T09:00:00")}  # fmt: skip
    return {**params, "user_id": user} if user else params


def purchase(device: str, value: str, at: str, user: str | None = None) -> dict[str, str]:
    params = {"event_name": "Purchase", "kochava_device_id": device, "event_value": value, "currency": "USD",
              "timestamp": ts(at)}  # fmt: skip
    return {**params, "user_id": user} if user else params


# Cohorts. Meta/spring: u1 (KD1), the anonymous device KD2, u3 on two devices (KD3A, KD3B) -> 3 members.
# Google/brand: the anonymous device KD4 -> 1 member. KD5 installed from a campaign with no report row.
POSTBACKS = [
    install("KD1", "Meta", "spring", "u1"),
    install("KD2", "Meta", "spring"),
    install("KD3A", "Meta", "spring", "u3"),
    install("KD3B", "Meta", "spring", "u3"),
    install("KD4", "Google", "brand"),
    install("KD5", "TikTok", "unreported"),
    purchase("KD1", "30", "2026-11-30T12:00:00", "u1"),  # spring: the digest day and 7d and 30d
    purchase("KD2", "15", "2026-11-26T12:00:00"),  # spring: 7d and 30d
    purchase("KD3A", "150", "2026-11-05T12:00:00", "u3"),  # spring: 30d only
    purchase("KD4", "25", "2026-11-30T08:00:00"),  # brand: every window
    purchase("KD1", "999", "2026-12-01T00:00:00", "u1"),  # after the digest day: in no window
]


def report_row(day: str, network: str, campaign: str, installs: int, spend: float, **parts: float) -> dict:
    return {"date": day, "network": network, "network_id": f"n-{network}", "campaign": campaign,
            "campaign_id": f"c-{campaign}", "clicks": "100", "impressions": "1000", "installs": str(installs),
            "click_spend": parts.get("click", 0), "impression_spend": parts.get("impression", 0),
            "install_spend": spend}  # fmt: skip


# spring: day 20 (2+3+15) / 4 installs; 7d = 20 + 40 = 60 / 10 installs; 30d = 60 + 60 = 120.
# brand: 10 / 2 installs on the day; the October row is outside 30 days.
REPORT = [
    report_row("2026-11-30", "Meta", "spring", 4, 15, click=2, impression=3),
    report_row("2026-11-27", "Meta", "spring", 6, 40),
    report_row("2026-11-10", "Meta", "spring", 10, 60),
    report_row("2026-11-30", "Google", "brand", 2, 10),
    report_row("2026-10-20", "Google", "brand", 50, 500),
]
SPRING = {
    "kochava_campaign_cpi": 6.0,  # 60 / 10
    "kochava_campaign_roas_7d": 0.75,  # (30 + 15) / 60
    "kochava_campaign_roas_30d": 1.625,  # (30 + 15 + 150) / 120
    "kochava_campaign_installs_7d": 10,
    "kochava_campaign_spend_7d": 60.0,
    "kochava_digest_date": "2026-11-30",
}
BRAND = {
    "kochava_campaign_cpi": 5.0,  # 10 / 2
    "kochava_campaign_roas_7d": 2.5,  # 25 / 10
    "kochava_campaign_roas_30d": 2.5,
    "kochava_campaign_installs_7d": 2,
    "kochava_campaign_spend_7d": 10.0,
    "kochava_digest_date": "2026-11-30",
}


async def run_cli(env: dict[str, str], *args: str, timeout: float = 180) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


def count(url: str, table: str) -> int:
    """Rows of `table`, 0 while the loader has not created it yet."""
    try:
        return int(sql(url, f"SELECT count(*) FROM {table}")[0][0])
    except psycopg.errors.UndefinedTable:
        return 0


def digest_calls(segment: SegmentEmulator) -> list[dict[str, Any]]:
    return [m for m in segment.messages if m.get("context", {}).get("kseg", {}).get("source") == "digest"]


@pytest.mark.long
async def test_full_digest_against_the_emulator(
    make_pipeline: Any, segment: SegmentEmulator, warehouse_pg: Any, dump_logs: list[Pipeline]
) -> None:
    url = warehouse_pg.url
    # KOCHAVA_APP_GUID also turns on the Kochava S2S sink: point it at its emulator.
    async with (
        KochavaEmulator(GUID) as s2s,
        KochavaReportingEmulator(KEY, GUID, queue_seconds=0.2, run_seconds=0.3) as kochava,
    ):
        kochava.set_rows(REPORT)
        p: Pipeline = make_pipeline(
            segment.url,
            KSEG_WAREHOUSE_URL=url,
            KOCHAVA_API_KEY=KEY,
            KOCHAVA_APP_GUID=GUID,
            KOCHAVA_REPORTING_URL=kochava.url,
            KOCHAVA_TRACKING_URL=s2s.url,
            KOCHAVA_POLL_FIRST_WAIT="0.2",
            KOCHAVA_POLL_MAX_WAIT="0.3",
        )
        dump_logs.append(p)
        await p.start()
        loader = LoaderProcess(p, url).start()
        await loader.wait_ready()
        for params in POSTBACKS:
            status, body, _ = await p.get(params)
            assert status == 200, body
        await wait_for(lambda: count(url, "kseg_events") == len(POSTBACKS), 120, "events loaded")

        code, out, err = await run_cli(p.env, "digest", "run", "--date", "2026-11-30", "--days", "7")
        assert code == 0, err
        # The summary: per campaign, installs, spend, revenue, CPI, ROAS of the day, and identifies queued.
        lines = {
            line.split()[1]: line.split() for line in out.splitlines() if line.startswith(("Meta", "Google"))
        }
        assert lines["spring"][2:5] == ["4", "20.00", "30.00"] and lines["spring"][5:7] == ["5.00", "1.50"]
        assert lines["spring"][-1] == "3" and lines["brand"][-1] == "1"
        assert "4 identifies and 2 group calls queued" in out

        # Spend in the warehouse: 2026-11-24..30 only (--days 7); November 10 was fetched, not written.
        def spend() -> dict[tuple[str, str, str], Decimal]:
            rows = sql(url, 'SELECT "date"::text, network, campaign, spend FROM kseg_campaign_spend')
            return {(r[0], r[1], r[2]): r[3] for r in rows}

        await wait_for(lambda: len(spend()) == 3, 60, "3 spend rows loaded")
        assert spend() == {
            ("2026-11-30", "Meta", "spring"): Decimal("20"),
            ("2026-11-27", "Meta", "spring"): Decimal("40"),
            ("2026-11-30", "Google", "brand"): Decimal("10"),
        }
        perf = sql(
            url,
            "SELECT network, spend, network_installs, roas FROM campaign_performance "
            "WHERE \"date\" = '2026-11-30' AND spend IS NOT NULL ORDER BY network",
        )
        # CPI by Kochava installs = spend / network_installs; ROAS = the day's revenue / spend.
        assert [(n, s / i, r) for n, s, i, r in perf] == [
            ("Google", Decimal("5"), Decimal("2.5")),  # 10 / 2, 25 / 10
            ("Meta", Decimal("5"), Decimal("1.5")),  # 20 / 4, 30 / 20
        ]
        code, report, err = await run_cli(
            p.env, "report", "roas", "--from", "2026-11-30", "--to", "2026-11-30", "--by", "campaign"
        )
        assert code == 0, err
        spring_line = next(line for line in report.splitlines() if "spring" in line)
        assert "20.00" in spring_line and "1.50" in spring_line

        # Segment: one identify per cohort member with the hand-computed traits, one group per campaign.
        await wait_for(lambda: len(digest_calls(segment)) == 6, 120, "4 identifies + 2 groups at Segment")
        identifies = [m for m in digest_calls(segment) if m["type"] == "identify"]
        members = sorted(m.get("userId") or "anon" for m in identifies)
        assert members == ["anon", "anon", "u1", "u3"]
        for m in identifies:
            expected = BRAND if m["context"]["kseg"]["campaign"] == "brand" else SPRING
            assert m["traits"] == expected
        groups = {m["groupId"]: m for m in digest_calls(segment) if m["type"] == "group"}
        assert set(groups) == {"kochava:Meta/spring", "kochava:Google/brand"}
        first_ids = {m["messageId"] for m in digest_calls(segment)}

        # Rerun of the same day: the same messageIds (Segment drops them), no total changes.
        delivered = segment.stats()["messages"]
        code, out, err = await run_cli(p.env, "digest", "run", "--date", "2026-11-30", "--days", "7")
        assert code == 0, err
        await wait_for(lambda: segment.stats()["messages"] >= delivered + 6, 120, "the rerun's calls")
        assert {m["messageId"] for m in digest_calls(segment)} == first_ids  # nothing new for Segment
        assert sorted(segment.by_message_id[i] for i in first_ids) == [2] * 6  # each id sent once per run
        await asyncio.sleep(2)  # give the loader time to (wrongly) add anything
        assert sum(spend().values()) == Decimal("70")

        # Kochava restates the day's spring spend: the rerun replaces the figure, never adds to it.
        kochava.set_rows([report_row("2026-11-30", "Meta", "spring", 4, 35, click=2, impression=3)])
        code, out, err = await run_cli(p.env, "digest", "run", "--date", "2026-11-30", "--days", "7")
        assert code == 0, err
        await wait_for(
            lambda: spend()[("2026-11-30", "Meta", "spring")] == Decimal("40"), 60, "restated spend loaded"
        )
        assert sum(spend().values()) == Decimal("90") and len(spend()) == 3
