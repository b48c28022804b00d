"""The warehouse database stopped while postbacks arrive: Segment delivery goes on, the loader waits
(not ready, lag visible), and once the database is back every event is loaded exactly once."""

from __future__ import annotations

import os
from typing import Any

import pytest

from app.warehouse.embedded import EmbeddedWarehouse
from tests.emulators.segment_api import SegmentEmulator
from tests.harness import Pipeline, wait_for
from tests.warehouse_support import LoaderProcess, sql, warehouse_pg

pytestmark = pytest.mark.integration
__all__ = ["warehouse_pg"]


def install(n: int) -> dict[str, str]:
    return {
        "event_name": "_install",
        "kochava_device_id": f"KIOUT{n}",
        "network_name": "NetO",
        "campaign_name": "Outage",
        "timestamp": str(1735689600 + n),
    }


def tracked(segment: SegmentEmulator) -> set[str]:
    """Kochava device ids of the `Install Attributed` tracks Segment accepted."""
    return {
        str(m.get("context", {}).get("device", {}).get("id") or m.get("anonymousId"))
        for m in segment.messages
        if m.get("type") == "track" and m.get("event") == "Install Attributed"
    }


async def test_database_down_loses_nothing(
    make_pipeline: Any, segment: SegmentEmulator, warehouse_pg: EmbeddedWarehouse, dump_logs: list[Pipeline]
) -> None:
    url = warehouse_pg.url
    p = make_pipeline(segment.url)
    dump_logs.append(p)
    await p.start()
    loader = LoaderProcess(p, url).start()
    await loader.wait_ready()
    topic = p.topic("warehouse.events")

    for n in range(3):
        assert (await p.get(install(n)))[0] == 200
    await wait_for(lambda: sql(url, "SELECT count(*) FROM kseg_events")[0][0] == 3, 60, "the first rows")
    tracks_before = len(tracked(segment))

    # ---- the database goes away; postbacks keep coming ------------------------------------------
    warehouse_pg.stop()
    for n in range(3, 8):
        assert (await p.get(install(n)))[0] == 200
    # Segment delivery is not held up by the warehouse.
    await wait_for(lambda: len(tracked(segment)) >= tracks_before + 5, 90, "Segment tracks during the outage")

    # The 5 outage rows are the lag on Apache Kafka. The embedded broker reports a partition's end as
    # its last batch's first record + 1 and the worker writes warehouse rows in batches (README, "The
    # embedded broker"), so there the lag is only known to be visible, not exact.
    least_lag = 5 if os.environ.get("KSEG_TEST_BROKER") == "kafka" else 1

    async def visibly_waiting() -> bool:
        status, body = await loader.page("/readyz")
        lag = await loader.metric("kseg_warehouse_lag_records", topic=topic)
        up = await loader.metric("kseg_warehouse_db_up")
        return status == 503 and "database" in body and (lag or 0) >= least_lag and up == 0

    await wait_for(visibly_waiting, 60, "loader not ready, db_up 0 and the lag growing")
    assert loader.proc is not None and loader.proc.poll() is None  # waiting, not crash-looping
    assert (await loader.metric("kseg_warehouse_db_errors_total", error="OperationalError") or 0) >= 1

    # ---- the database is back ---------------------------------------------------------------------
    warehouse_pg.start()
    await wait_for(lambda: sql(url, "SELECT count(*) FROM kseg_events")[0][0] >= 8, 90, "the outage's rows")
    await loader.wait_ready()

    async def caught_up() -> bool:
        return await loader.metric("kseg_warehouse_lag_records", topic=topic) == 0

    await wait_for(caught_up, 30, "the lag back to 0")
    total, distinct = sql(url, "SELECT count(*), count(DISTINCT event_id) FROM kseg_events")[0]
    assert total == distinct == 8
    devices = {r[0] for r in sql(url, "SELECT kochava_device_id FROM kseg_events")}
    assert devices == {f"KIOUT{n}" for n in range(8)}
