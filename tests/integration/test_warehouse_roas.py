"""ROAS exact to the cent through the real pipeline: receiver, worker, broker, loader and PostgreSQL.

Three install campaigns, purchases in two currencies, Kochava retrying one purchase, a dead letter
replayed (twice) after its profile was added, a re-engagement purchase, spend re-run by the digest, and
the loader SIGKILLed after its database commit but before its Kafka commit: every event is in
`kseg_events` once and `kseg report roas` shows revenue by install campaign exact to the cent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from app.warehouse.embedded import EmbeddedWarehouse
from tests.harness import ROOT, Pipeline, read_topic, wait_for
from tests.warehouse_support import LoaderProcess, money, sql, warehouse_pg

pytestmark = pytest.mark.integration
__all__ = ["warehouse_pg"]

T0 = 1735689600  # 2025-01-01T00:00:00Z

INSTALLS = [  # device, network, campaign
    ("KIA1", "NetA", "Alpha"),
    ("KIA2", "NetA", "Alpha"),
    ("KIA3", "NetA", "Alpha"),
    ("KIB1", "NetA", "Beta"),
    ("KIB2", "NetA", "Beta"),
    ("KIG1", "NetB", "Gamma"),
]


def install(device: str, network: str, campaign: str, i: int) -> dict[str, Any]:
    return {
        "event_name": "_install",
        "kochava_device_id": device,
        "network_name": network,
        "campaign_name": campaign,
        "country": "US",
        "timestamp": str(T0 + i),
    }


def purchase(device: str, value: str, currency: str, at: int, **extra: str) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "kochava_device_id": device,
        "event_value": value,
        "currency": currency,
        "timestamp": str(T0 + at),
        **extra,
    }


async def kseg(p: Pipeline, *args: str, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        cwd=ROOT,
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": p.bootstrap,
            "KSEG_APP_ID": p.app_id,
            "KSEG_EMBEDDED_BROKER": p.env["KSEG_EMBEDDED_BROKER"],
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def send_spend(p: Pipeline, rows: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=p.bootstrap, acks="all", max_batch_size=1, linger_ms=0)
    await producer.start()
    try:
        for r in rows:
            key = f"{r['date']}|{r['network']}|{r['campaign']}".encode()
            await producer.send_and_wait(p.topic("campaign.spend"), orjson.dumps(r), key=key)
    finally:
        await producer.stop()


def spend_row(
    network: str,
    campaign: str,
    amount: float,
    currency: str,
    reporting: float | None,
    run: str,
    fetched_at: str,
) -> dict[str, Any]:
    return {
        "date": "2025-01-01",
        "network": network,
        "campaign": campaign,
        "network_id": None,
        "campaign_id": None,
        "clicks": 100,
        "impressions": 1000,
        "installs": 3,
        "spend": amount,
        "currency": currency,
        "spend_reporting": reporting,
        "reporting_currency": "USD",
        "digest_run_id": run,
        "fetched_at": fetched_at,
    }


@pytest.mark.long
async def test_roas_exact_each_event_once(
    make_pipeline: Any, warehouse_pg: EmbeddedWarehouse, tmp_path: Path, dump_logs: list[Pipeline]
) -> None:
    url = warehouse_pg.url
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    p = make_pipeline(None, KSEG_MAPPING_DIR=str(profiles))
    dump_logs.append(p)
    await p.start()

    # ---- the loader dies (SIGKILL) right after its first database commit, before the Kafka commit --
    crashing = LoaderProcess(p, url, name="loader-crash").start(KSEG_WAREHOUSE_FAULT_KILL_AFTER_COMMITS="1")
    await crashing.wait_ready()
    for i, (device, network, campaign) in enumerate(INSTALLS):
        status, body, _ = await p.get(install(device, network, campaign, i))
        assert status == 200, body
    assert crashing.proc is not None
    await wait_for(lambda: crashing.proc.poll() is not None, 90, "the loader's fault-injected SIGKILL")
    assert crashing.proc.returncode == -signal.SIGKILL
    in_db_before = sql(url, "SELECT count(*) FROM kseg_events")[0][0]
    assert in_db_before >= 1  # the database commit happened; the Kafka offsets were never committed

    loader = LoaderProcess(p, url).start()
    await loader.wait_ready()

    async def redelivered() -> bool:
        # The batch the first loader wrote but never acknowledged comes again and is ignored, row for row.
        return await loader.metric("kseg_warehouse_rows_duplicate_total") == in_db_before

    await wait_for(redelivered, 60, "the unacknowledged batch redelivered and ignored")
    await wait_for(
        lambda: sql(url, "SELECT count(*) FROM kseg_events")[0][0] == len(INSTALLS), 60, "every install, once"
    )

    # ---- purchases: two currencies, one Kochava retry storm, one re-engagement -------------------
    retried = purchase("KIA2", "100.00", "USD", 3000)
    purchases = [
        purchase("KIA1", "9.99", "USD", 1000),
        purchase("KIA1", "0.01", "USD", 2000),
        retried,
        retried,
        retried,  # Kochava retries: the same postback three times
        purchase("KIB1", "4.99", "EUR", 1500),
        purchase("KIB2", "20.00", "EUR", 2500),
        purchase(
            "KIG1",
            "7.50",
            "USD",
            3500,
            attribution_type="reengagement",
            network_name="RetargetCo",
            campaign_name="Winback",
        ),
    ]
    for params in purchases:
        status, body, _ = await p.get(params)
        assert status == 200, body

    # ---- a dead letter (unknown profile), replayed twice once the profile exists ------------------
    status, body, _ = await p.get({**purchase("KIA3", "15.00", "USD", 4000), "profile": "shop"})
    assert status == 200, body

    async def shop_letter() -> bool:
        letters = [v for _, v in await read_topic(p.bootstrap, p.topic("deadletter"))]
        return any(v.get("reason") == "unknown_profile" for v in letters)

    await wait_for(shop_letter, 60, "the unknown_profile dead letter")
    default = (ROOT / "app/mapping/profiles/kochava-default.yaml").read_text()
    (profiles / "shop.yaml").write_text(default.replace("name: kochava-default", "name: shop", 1))
    p.kill("worker-1", signal.SIGTERM)
    await p.start_worker()
    for _ in range(2):
        code, out, err = await kseg(p, "dlq", "replay", "--reason", "unknown_profile")
        assert code == 0 and "replayed 1 of 1" in out, (out, err)

    # ---- spend from the digest: Alpha re-run (40 -> 50 USD), Beta in EUR with its conversion ------
    await send_spend(
        p,
        [
            spend_row("NetA", "Alpha", 40.0, "USD", 40.0, "run-1", "2025-01-02T06:00:00Z"),
            spend_row("NetA", "Beta", 30.0, "EUR", 32.1, "run-1", "2025-01-02T06:00:00Z"),
            spend_row("NetA", "Alpha", 50.0, "USD", 50.0, "run-2", "2025-01-02T07:00:00Z"),
        ],
    )

    expected_events = len(INSTALLS) + 7  # 6 distinct purchases + the replayed one
    await wait_for(
        lambda: (
            sql(url, "SELECT count(*) FROM kseg_events")[0][0] >= expected_events
            and sql(url, "SELECT spend FROM kseg_campaign_spend WHERE campaign = 'Alpha'")
            == [(Decimal("50"),)]
        ),
        120,
        "every event and the re-run spend in the warehouse",
    )
    await asyncio.sleep(3)  # anything still in flight (replays, retries) would show up as extra rows

    # ---- each event once ---------------------------------------------------------------------------
    topic_ids = {v["event_id"] for _, v in await read_topic(p.bootstrap, p.topic("warehouse.events"))}
    total, distinct = sql(url, "SELECT count(*), count(DISTINCT event_id) FROM kseg_events")[0]
    assert total == distinct == expected_events == len(topic_ids)
    assert {r[0] for r in sql(url, "SELECT event_id FROM kseg_events")} == topic_ids
    assert (await loader.metric("kseg_warehouse_rows_duplicate_total") or 0) > in_db_before  # + the replay
    assert sql(url, "SELECT count(*) FROM kseg_events WHERE revenue = 100")[0][0] == 1  # retries: once

    # ---- revenue by install campaign, exact to the cent ---------------------------------------------
    perf = {
        (r[0], r[1]): r[2:]
        for r in sql(
            url,
            "SELECT network, campaign, sum(revenue), sum(orders), sum(installs), "
            "sum(unconverted_orders), sum(spend), max(attribution_basis) "
            "FROM campaign_performance GROUP BY network, campaign",
        )
    }
    assert perf[("NetA", "Alpha")][:3] == (Decimal("125.00"), 4, 3)  # 9.99 + 0.01 + 100.00 + 15.00
    assert perf[("NetA", "Alpha")][4] == Decimal("50")
    assert perf[("NetB", "Gamma")][:3] == (Decimal("0"), 0, 1)  # its only purchase was a re-engagement
    assert perf[("RetargetCo", "Winback")][0] == Decimal("7.50")
    assert perf[("RetargetCo", "Winback")][5] == "reengagement"
    eur = sql(
        url,
        "SELECT sum(revenue), sum(revenue_reporting), count(revenue_reporting) FROM kseg_events "
        "WHERE currency = 'EUR'",
    )[0]
    assert eur[0] == Decimal("24.99")  # original currency, exact
    # The lifecycle stage converts with the packaged rates (EUR 1.08 USD): both rows carry the
    # reporting-currency figure, and the view uses it; nothing is left unconverted.
    assert eur[2] == 2 and eur[1] == Decimal("26.9892")  # (4.99 + 20.00) * 1.08
    beta = perf[("NetA", "Beta")]
    assert beta[0] == eur[1] and beta[3] == 0

    # ---- the operator's view: `kseg report roas` -----------------------------------------------------
    code, out, err = await kseg(p, "report", "roas", "--by", "campaign", "--json", KSEG_WAREHOUSE_URL=url)
    assert code == 0, err
    report = orjson.loads(out)
    rows = {(r["network"], r["campaign"]): r for r in report["rows"]}
    assert money(rows[("NetA", "Alpha")]["revenue"]) == Decimal("125.00")
    assert (
        rows[("NetA", "Alpha")]["roas"] == 2.5 and rows[("NetA", "Alpha")]["cpi"] == 16.67
    )  # 50 / 3, to the cent
    assert rows[("NetB", "Gamma")]["roas"] is None  # no spend: no ROAS
    assert money(rows[("RetargetCo", "Winback")]["revenue"]) == Decimal("7.50")
    code, out, err = await kseg(p, "report", "roas", "--by", "network", KSEG_WAREHOUSE_URL=url)
    assert code == 0, err
    total = Decimal("132.50") + beta[0]  # + NetA/Beta's EUR orders once the lifecycle stage converted them
    assert "NetA" in out and "TOTAL" in out and f"{total:.2f}" in out.replace(",", ""), out
