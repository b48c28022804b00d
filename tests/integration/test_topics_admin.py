"""Topics as code on the embedded broker: plan, apply, the worker's co-partition refusal, and a
4 → 8 partition migration with live state (profiles, dedupe marks, identity links)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.topics import catalogue
from tests.emulators.segment_api import SegmentEmulator
from tests.harness import LINK_TOKEN, Pipeline, run_cli, wait_for

DEVICES = 16


async def kseg(env: dict[str, str], *args: str) -> tuple[int, str]:
    code, out, err = await run_cli(env, *args, timeout=180)
    return code, out + err


def idfv(i: int) -> str:
    return f"6D92078A-8246-4BA4-AE5B-{i:012d}"


def install(i: int) -> dict[str, str]:
    return {
        "event_name": "_install",
        "kochava_device_id": f"KIMIG{i}",
        "idfv": idfv(i),
        "network_name": "ExampleNetwork",
        "campaign_name": f"Campaign {i}",
        "timestamp": "1735689600",
    }


def purchase(i: int) -> dict[str, str]:
    return {
        "event_name": "Purchase",
        "kochava_device_id": f"KIMIG{i}",
        "event_value": "4.99",
        "currency": "USD",
        "order_id": f"o-{i}",
        "timestamp": "1735693200",
    }


async def link(p: Pipeline, user: str, device: int) -> tuple[int, dict[str, Any], dict[str, str]]:
    return await p.post("/v1/identity/links", {"user_id": user, "idfv": idfv(device)}, token=LINK_TOKEN)


def of(segment: SegmentEmulator, kind: str, event: str | None = None) -> list[dict[str, Any]]:
    return [m for m in segment.messages if m["type"] == kind and (event is None or m.get("event") == event)]


async def test_plan_apply_and_the_keyed_partition_refusal(make_pipeline: Any) -> None:
    p: Pipeline = make_pipeline(None)
    env = {**p.env, "KSEG_TOPIC_PARTITIONS": "4"}
    code, out = await kseg(env, "topics", "plan")
    assert code == 1 and f"+ {p.app_id}.postbacks.raw" in out, out
    assert f"{len(catalogue())} difference(s)" in out, out
    code, out = await kseg(env, "topics", "apply")
    assert code == 0 and f"applied {len(catalogue())} change(s), 0 refused" in out, out
    code, out = await kseg(env, "topics", "plan")
    assert (code, out.splitlines()[-1]) == (0, "the cluster matches topics.yaml"), out

    code, out = await kseg({**env, "KSEG_TOPIC_PARTITIONS": "8"}, "topics", "apply")
    assert code == 1, out
    assert f"! {p.app_id}.postbacks.raw" in out and "kseg topics migrate --partitions 8" in out


async def test_worker_refuses_to_start_when_co_partitioned_topics_disagree(make_pipeline: Any) -> None:
    p: Pipeline = make_pipeline(None)
    code, out = await kseg({**p.env, "KSEG_TOPIC_PARTITIONS": "4"}, "topics", "apply")
    assert code == 0, out
    code, out = await kseg({**p.env, "KSEG_TOPIC_PARTITIONS": "8", "KSEG_WORKER_WEB_PORT": "0"}, "worker")
    assert code != 0
    assert "refusing to start" in out and "co-partitioned group 'device'" in out, out
    assert f"{p.app_id}.postbacks.raw=4" in out


@pytest.mark.long
async def test_migrate_4_to_8_partitions_keeps_profiles_dedupe_and_links(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline], tmp_path: Path
) -> None:
    old: Pipeline = make_pipeline(segment.url)
    dump_logs.append(old)
    await old.start()
    for i in range(DEVICES):
        assert (await old.get(install(i)))[0] == 200
    await wait_for(lambda: len(of(segment, "track", "Install Attributed")) == DEVICES, 60, "every install")
    assert (await link(old, "user-0", 0))[0] == 200
    await wait_for(lambda: of(segment, "alias"), 60, "user-0's alias")
    installs = of(segment, "track", "Install Attributed")
    anonymous = {m["properties"]["campaign"]["name"]: m["anonymousId"] for m in installs}
    await old.stop()

    code, out = await kseg(old.env, "topics", "migrate", "--partitions", "8")
    assert code == 0, out
    target = f"{old.app_id}-g2"
    assert f"KSEG_APP_ID={target} KSEG_TOPIC_PARTITIONS=8" in out
    assert f"{old.app_id}-profiles-changelog -> {target}-profiles-changelog" in out

    new: Pipeline = make_pipeline(segment.url, KSEG_APP_ID=target, KSEG_TOPIC_PARTITIONS="8")
    new.app_id = target
    dump_logs.append(new)
    code, out = await kseg(new.env, "topics", "plan")
    assert code == 0, out
    await new.start()
    before = len(segment.messages)

    # A returning device's purchase still carries its install campaign (profiles table).
    for i in range(DEVICES):
        assert (await new.get(purchase(i)))[0] == 200
    orders = await wait_for(
        lambda: (
            len(of(segment, "track", "Order Completed")) == DEVICES
            and of(segment, "track", "Order Completed")
        ),
        90,
        "every purchase after the migration",
    )
    by_order = {o["properties"]["order_id"]: o for o in orders}
    for i in range(DEVICES):
        assert by_order[f"o-{i}"]["properties"]["install_campaign"] == f"Campaign {i}", by_order[f"o-{i}"]
    # A logged-in user still resolves.
    assert by_order["o-0"]["userId"] == "user-0"
    # A link for an id seen before the migration finds its device (device index table).
    assert (await link(new, "user-5", 5))[0] == 200
    aliases = await wait_for(
        lambda: [a for a in of(segment, "alias") if a["userId"] == "user-5"], 60, "alias"
    )
    assert aliases[0]["previousId"] == anonymous["Campaign 5"]
    # Exact repeats of pre-migration postbacks are still deduplicated (marks in the device profile).
    for i in range(DEVICES):
        assert (await new.get(install(i)))[0] == 200

    async def deduplicated() -> bool:
        return f"kseg_worker_deduplicated_total {DEVICES}" in await new.worker_metrics()

    await wait_for(deduplicated, 60, "every repeated install dropped as a duplicate")
    assert len(of(segment, "track", "Install Attributed")) == DEVICES
    assert len(segment.messages) > before

    # Migrating again onto the now-running generation would mix two histories: refused.
    code, out = await kseg(old.env, "topics", "migrate", "--partitions", "8")
    assert code == 1 and "already hold table state" in out, out
