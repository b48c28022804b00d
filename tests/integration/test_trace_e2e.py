"""`kseg trace` through real processes: receiver → worker → Segment emulator (with an outage) → loader →
PostgreSQL → the `kseg trace --json` CLI, for every kind of id it accepts."""

from __future__ import annotations

import time
from typing import Any

import orjson
import psycopg
import pytest

from app.trace.timeline import timeline
from app.warehouse.embedded import EmbeddedWarehouse
from tests.emulators.segment_api import SegmentEmulator
from tests.harness import Pipeline, run_cli, wait_for
from tests.warehouse_support import LoaderProcess, warehouse_pg

pytestmark = pytest.mark.integration
__all__ = ["warehouse_pg"]

KDID = "KITRACE0001"
IDS = {
    "kochava_device_id": KDID,
    "idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "idfv": "0E2B3F4A-1C2D-4E5F-8A9B-0C1D2E3F4A5B",
    "gaid": "38400000-8cf0-11bd-b23e-10b96e40000d",
    "android_id": "9774d56d682e549c",
}
USER = "user-trace-1"


def install() -> dict[str, str]:
    return {
        "event_name": "_install",
        **IDS,
        "network_name": "NetT",
        "campaign_name": "Trace",
        "timestamp": "1735689600",
    }


def purchase() -> dict[str, str]:
    return {
        "event_name": "Purchase",
        **IDS,
        "user_id": USER,
        "event_value": "9.99",
        "currency": "USD",
        "timestamp": "1735689700",
    }


def trace_now(url: str, ident: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        return timeline(conn, ident)


@pytest.mark.long
async def test_trace_every_id_type_through_real_processes(
    make_pipeline: Any, segment: SegmentEmulator, warehouse_pg: EmbeddedWarehouse, dump_logs: list[Pipeline]
) -> None:
    url = warehouse_pg.url
    p: Pipeline = make_pipeline(segment.url, SEGMENT_BATCH_LINGER="0.1")
    dump_logs.append(p)
    await p.start()
    loader = LoaderProcess(p, url).start()
    await loader.wait_ready()

    # ---- the install: in the trace within 5 s of kseg's 200 ----------------------------------------
    assert (await p.get(install()))[0] == 200
    answered = time.monotonic()

    def install_traced() -> bool:
        events = trace_now(url, KDID)["events"]
        return bool(events) and events[0]["outcome"] == "mapped" and bool(events[0]["segment_calls"])

    await wait_for(install_traced, 60, "the install in the trace")
    install_seconds = time.monotonic() - answered
    print(f"install visible in the trace {install_seconds:.2f}s after the 200")
    assert install_seconds <= 5.0, f"the install took {install_seconds:.2f}s to reach the trace"

    # ---- the purchase during a Segment outage: retried, then delivered ------------------------------
    segment.fail_next(2, status=503)
    assert (await p.get(purchase()))[0] == 200

    def order_delivered() -> bool:
        events = trace_now(url, KDID)["events"]
        calls = [c for e in events for c in e["segment_calls"] if c["event"] == "Order Completed"]
        return any(c["outcome"] == "delivered" for c in calls) and all(e["warehouse_row"] for e in events)

    await wait_for(order_delivered, 90, "the Order Completed call delivered and both warehouse rows")
    order = next(m for m in segment.messages if m.get("event") == "Order Completed")

    env = {**p.env, "KSEG_WAREHOUSE_URL": url}
    found_event_id = trace_now(url, KDID)["events"][1]["event_id"]
    queries = {
        "kochava_device_id": KDID,
        "idfa": IDS["idfa"],
        "idfv": IDS["idfv"],
        "adid": IDS["gaid"],
        "android_id": IDS["android_id"],
        "user_id": USER,
        "event_id": found_event_id,
        "message_id": order["messageId"],
    }
    for matched, ident in queries.items():
        code, out, err = await run_cli(env, "trace", ident, "--json")
        assert code == 0, err
        found = orjson.loads(out)
        assert found["matched_as"] == matched, (ident, found["matched_as"])
        events = found["events"]
        assert [e["event_name"] for e in events] == ["_install", "Purchase"], ident
        assert [e["outcome"] for e in events] == ["mapped", "mapped"]
        assert all(e["profile"] == "kochava-default" and e["profile_version"] for e in events)
        assert events[0]["token_name"] == "token-1" and "token" not in events[0]["params"]
        calls = [c for c in events[1]["segment_calls"] if c["event"] == "Order Completed"]
        assert [(c["outcome"], c["http_status"]) for c in calls] == [("retried", 503), ("delivered", 200)]
        assert calls[-1]["attempts"] == 3 and calls[-1]["message_id"] == order["messageId"]
        assert events[1]["warehouse_row"]["segment_event"] == "Order Completed"
        assert events[1]["warehouse_row"]["user_id"] == USER
        assert USER in found["user_ids"] and found["identity"]["user_id"] == USER

    # The readable form says the same.
    code, out, _ = await run_cli(env, "trace", KDID)
    assert code == 0 and "Order Completed" in out and "delivered, HTTP 200, 3 attempts" in out
    assert "retried, HTTP 503" in out
    code, out, _ = await run_cli(env, "trace", "no-such-id")
    assert code == 1 and "no postback" in out
