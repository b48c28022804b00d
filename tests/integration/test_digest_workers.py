"""The daily schedule inside real worker processes: two workers, one digest per day, none after restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.warehouse.db import connect_async
from app.warehouse.store import ensure_schema
from tests.emulators.kochava_api import KochavaEmulator
from tests.emulators.kochava_reporting import KochavaReportingEmulator
from tests.emulators.segment_api import SegmentEmulator
from tests.harness import Pipeline, metric, read_topic, segment_calls, wait_for
from tests.warehouse_support import warehouse_pg

pytestmark = pytest.mark.integration
__all__ = ["warehouse_pg"]

KEY, GUID = "sched-key", "kosched-guid"


async def start_both(p: Pipeline) -> None:
    """Two workers of one group (generous readiness timeouts: two joining workers rebalance a while)."""
    for name in ("worker-1", "worker-2"):
        await p.start_worker(name, wait_ready=False)
    for name in ("worker-1", "worker-2"):
        await p.wait_worker_ready(name, timeout=240)


async def test_the_schedule_fires_once_per_day_across_two_workers(
    make_isolated_pipeline: Any, segment: SegmentEmulator, warehouse_pg: Any, dump_logs: list[Pipeline]
) -> None:
    conn = await connect_async(warehouse_pg.url)
    await ensure_schema(conn, "USD")  # the loader's tables, empty: cohorts of nobody
    await conn.close()
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    # KOCHAVA_APP_GUID also turns on the Kochava S2S sink: point it at its emulator.
    async with (
        KochavaEmulator(GUID) as s2s,
        KochavaReportingEmulator(KEY, GUID, queue_seconds=0.5, run_seconds=1.0) as kochava,
    ):
        row = {"date": yesterday, "network": "Meta", "campaign": "spring", "installs": "4"}
        kochava.set_rows([{**row, "install_spend": "20"}, {**row, "network": "Google", "campaign": "brand"}])
        p: Pipeline = make_isolated_pipeline(
            segment.url,
            KSEG_WAREHOUSE_URL=warehouse_pg.url,
            KOCHAVA_API_KEY=KEY,
            KOCHAVA_APP_GUID=GUID,
            KOCHAVA_REPORTING_URL=kochava.url,
            KOCHAVA_TRACKING_URL=s2s.url,
            KOCHAVA_TIME_ZONE="UTC",
            KOCHAVA_DIGEST_HOUR="0",  # yesterday is due at once
            KOCHAVA_DIGEST_CHECK_SECONDS="1",
            KOCHAVA_POLL_FIRST_WAIT="0.5",
            KOCHAVA_POLL_MAX_WAIT="0.5",
        )
        dump_logs.append(p)
        await p.start_receiver()
        await start_both(p)

        async def groups() -> list[dict[str, Any]]:
            """The digest's group calls in the Segment outbox (delivery itself: test_digest_job)."""
            records = [v for _, v in await read_topic(p.bootstrap, p.topic("segment.outbox"))]
            outbox = segment_calls(records)  # whichever record shape (docs/topics.md)
            return [m for m in outbox if m["type"] == "group" and m["context"]["kseg"]["source"] == "digest"]

        await wait_for(lambda: groups(), 180, "the digest's group calls in the outbox")

        async def done() -> list[dict[str, Any]]:
            days = [v for _, v in await read_topic(p.bootstrap, p.topic("digest.days"))]
            return [d for d in days if d["status"] == "done"]

        await wait_for(done, 60, "the day's done record")
        assert [d["day"] for d in await done()] == [yesterday]
        assert sorted(g["groupId"] for g in await groups()) == ["kochava:Google/brand", "kochava:Meta/spring"]
        assert kochava.calls["summary"] == 1  # one report requested: one run
        spend = await read_topic(p.bootstrap, p.topic("campaign.spend"))
        assert sorted(k for k, _ in spend) == [
            f"{yesterday}|Google|brand".encode(),
            f"{yesterday}|Meta|spring".encode(),
        ]

        # Both workers keep checking; neither runs the day again, even after both restart.
        ran = {
            n: metric(await p.worker_metrics(n), "kseg_digest_ticks_total", outcome="ran")
            for n in ("worker-1", "worker-2")
        }
        assert sorted(ran.values()) == [0.0, 1.0], ran
        for name in ("worker-1", "worker-2"):
            p.kill(name)
        await start_both(p)

        async def skipped() -> bool:
            texts = [await p.worker_metrics(n) for n in ("worker-1", "worker-2")]
            return any(metric(t, "kseg_digest_ticks_total", outcome="skipped") >= 3 for t in texts)

        await wait_for(skipped, 120, "the new leader to check (and skip) the done day three times")
        assert kochava.calls["summary"] == 1 and len(await groups()) == 2
        assert len(await read_topic(p.bootstrap, p.topic("campaign.spend"))) == 2
        assert len(await done()) == 1
