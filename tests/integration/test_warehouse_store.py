"""The warehouse tables and views against a real embedded PostgreSQL: idempotence, evolution, ROAS rules."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import psycopg
import pytest

from app.warehouse.db import connect_async
from app.warehouse.embedded import EmbeddedWarehouse
from app.warehouse.report import query
from app.warehouse.store import ensure_schema, write_batch
from tests.warehouse_support import row, sql, warehouse_pg

pytestmark = pytest.mark.integration
__all__ = ["warehouse_pg"]


def spend(
    date: str, network: str, campaign: str, amount: float, currency: str = "USD", **extra: object
) -> dict:
    return {
        "date": date,
        "network": network,
        "campaign": campaign,
        "network_id": None,
        "campaign_id": None,
        "clicks": 10,
        "impressions": 100,
        "installs": 2,
        "spend": amount,
        "currency": currency,
        "spend_reporting": extra.get("spend_reporting", amount if currency == "USD" else None),
        "reporting_currency": "USD",
        "digest_run_id": str(extra.get("run", "r1")),
        "fetched_at": str(extra.get("fetched_at", "2025-01-02T00:00:00Z")),
    }


def install(eid: str, anon: str, network: str, campaign: str, at: str = "2025-01-01T10:00:00.000Z") -> dict:
    return row(
        event_id=eid,
        anonymous_id=anon,
        event_type="install",
        event_time=at,
        network=network,
        campaign=campaign,
        install_network=network,
        install_campaign=campaign,
        install_time=at,
    )


def purchase(
    eid: str,
    anon: str,
    net: str,
    camp: str,
    revenue: float,
    currency: str = "USD",
    at: str = "2025-01-01T12:00:00.000Z",
    **extra: object,
) -> dict:
    return row(
        event_id=eid,
        anonymous_id=anon,
        event_type="purchase",
        event_name="Purchase",
        segment_event="Order Completed",
        event_time=at,
        install_network=net,
        install_campaign=camp,
        install_time="2025-01-01T10:00:00.000Z",
        revenue=revenue,
        currency=currency,
        **extra,
    )


async def test_idempotent_exact_and_attributed(warehouse_pg: EmbeddedWarehouse) -> None:
    url = warehouse_pg.url
    conn = await connect_async(url)
    known = await ensure_schema(conn, "USD")
    batch = [
        install("i1", "a1", "NetA", "Alpha"),
        install("i2", "a2", "NetA", "Alpha"),
        install("i3", "a3", "NetB", "Gamma"),
        purchase("p1", "a1", "NetA", "Alpha", 0.1),
        purchase("p2", "a1", "NetA", "Alpha", 0.2),
        purchase("p3", "a2", "NetA", "Alpha", 9.99, at="2025-01-09T12:00:00.000Z"),  # day 8: outside d7
        purchase("p4", "a3", "NetB", "Gamma", 5.0, "EUR", revenue_reporting=5.43, reporting_currency="USD"),
        purchase("p5", "a3", "NetB", "Gamma", 7.0, "EUR"),  # no rate: unconverted
        # Re-engagement: Kochava attributed this purchase to a retargeting campaign.
        purchase(
            "p6", "a3", "NetB", "Gamma", 2.5, is_reengagement=True, network="RetargetCo", campaign="Win"
        ),
    ]
    first = await write_batch(conn, known, batch, [spend("2025-01-01", "NetA", "Alpha", 40.0)])
    assert first.events_inserted == len(batch)
    # Redelivery of the whole batch (crash before the Kafka commit) and a re-run of the digest.
    again = await write_batch(
        conn,
        known,
        batch,
        [spend("2025-01-01", "NetA", "Alpha", 50.0, fetched_at="2025-01-03T00:00:00Z", run="r2")],
    )
    assert (again.events_inserted, again.events_duplicate) == (0, len(batch))
    # An older digest run arriving late does not overwrite the newer figures.
    await write_batch(
        conn, known, [], [spend("2025-01-01", "NetA", "Alpha", 1.0, fetched_at="2025-01-01T00:00:00Z")]
    )
    await conn.close()

    assert sql(url, "SELECT count(*), count(DISTINCT event_id) FROM kseg_events") == [
        (len(batch), len(batch))
    ]
    perf = {
        (r[0], r[1]): r[2:]
        for r in sql(
            url,
            "SELECT network, campaign, revenue, orders, unconverted_orders, spend, roas, "
            "attribution_basis, installs, cohort_revenue_d7 FROM campaign_performance "
            "WHERE \"date\" = '2025-01-01'",
        )
    }
    alpha = perf[("NetA", "Alpha")]
    assert alpha[0] == Decimal("0.30") and alpha[1] == 2 and alpha[3] == Decimal("50")
    assert alpha[4].quantize(Decimal("0.0001")) == Decimal("0.0060")  # 0.30 / 50
    assert alpha[6] == 2 and alpha[7] == Decimal("0.30")  # p3 is a day-8 purchase: not in d7
    gamma = perf[("NetB", "Gamma")]
    assert gamma[0] == Decimal("5.43") and gamma[1] == 2 and gamma[2] == 1 and gamma[3] is None
    assert gamma[4] is None  # no spend: ROAS is null, not zero or infinity
    win = perf[("RetargetCo", "Win")]
    assert win[0] == Decimal("2.50") and win[5] == "reengagement"
    day9 = sql(url, "SELECT revenue FROM campaign_performance WHERE \"date\" = '2025-01-09'")
    assert day9 == [(Decimal("9.99"),)]
    device = sql(url, "SELECT install_campaign, orders, revenue FROM kseg_devices WHERE anonymous_id = 'a3'")
    assert device == [("Gamma", 3, Decimal("7.93"))]

    # The report over the same view: by channel (acquisition channel, re-engagement channel, or none).
    with psycopg.connect(url) as sync:
        sync.execute(
            "UPDATE kseg_events SET acquisition_channel = 'paid_social' WHERE install_campaign = 'Alpha'"
        )
        sync.execute("UPDATE kseg_events SET reengagement_channel = 'retargeting' WHERE campaign = 'Win'")
        by_channel = {
            r["channel"]: r for r in query(sync, date(2025, 1, 1), date(2025, 1, 31), "channel").rows
        }
    assert set(by_channel) == {"paid_social", "retargeting", "(none)"}
    assert (
        by_channel["paid_social"]["revenue"] == Decimal("10.29") and by_channel["paid_social"]["spend"] == 50
    )
    assert (
        by_channel["retargeting"]["revenue"] == Decimal("2.50") and by_channel["retargeting"]["roas"] is None
    )


async def test_new_fields_become_columns_without_losing_rows(warehouse_pg: EmbeddedWarehouse) -> None:
    url = warehouse_pg.url
    conn = await connect_async(url)
    known = await ensure_schema(conn, "USD")
    await write_batch(conn, known, [install("i1", "a1", "N", "C")], [])
    newer = install("i2", "a2", "N", "C")
    newer.update(ltv_tier="high", churn_score=0.25, is_vip=True, **{"Odd Key": "x"})
    result = await write_batch(conn, known, [newer], [])
    assert set(result.columns_added) == {"churn_score", "is_vip"}
    await conn.close()
    # A BI team builds on our view; a second loader (fresh connection) sees the evolved table and
    # replaces the views without breaking theirs.
    sql(url, "CREATE VIEW bi_revenue AS SELECT network, campaign, revenue FROM campaign_performance")
    conn = await connect_async(url)
    await ensure_schema(conn, "USD")
    await conn.close()
    assert sql(url, "SELECT count(*) FROM bi_revenue") == [(1,)]
    rows = sql(
        url, "SELECT event_id, ltv_tier, churn_score, is_vip, extra FROM kseg_events ORDER BY event_id"
    )
    assert rows == [
        ("i1", None, None, None, None),
        ("i2", "high", Decimal("0.250000"), True, '{"Odd Key":"x"}'),
    ]
