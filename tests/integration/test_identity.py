"""Identity resolution through the real receiver, broker and worker processes."""

from __future__ import annotations

import hashlib
import hmac
import signal
from typing import Any

import orjson
import pytest

from tests.emulators.segment_api import SegmentEmulator
from tests.harness import LINK_TOKEN, Pipeline, wait_for

IDFV = "6D92078A-8246-4BA4-AE5B-76104861E7DC"


def install(device: str, campaign: str = "Spring Launch", **extra: str) -> dict[str, str]:
    return {
        "event_name": "_install",
        "kochava_device_id": device,
        "idfv": extra.pop("idfv", IDFV),
        "network_name": "ExampleNetwork",
        "campaign_name": campaign,
        "creative_id": "cr_99",
        "timestamp": "1735689600",
        **extra,
    }


def app_event(device: str, name: str, n: int, **extra: str) -> dict[str, str]:
    return {
        "event_name": name,
        "kochava_device_id": device,
        "n": str(n),
        "timestamp": str(1735690000 + n),
        **extra,
    }


def purchase(device: str, n: int) -> dict[str, str]:
    return {
        **app_event(device, "Purchase", n),
        "event_value": "4.99",
        "currency": "USD",
        "order_id": f"o-{n}",
    }


def of_type(segment: SegmentEmulator, kind: str, event: str | None = None) -> list[dict[str, Any]]:
    return [m for m in segment.messages if m["type"] == kind and (event is None or m.get("event") == event)]


async def orders_by_device(
    segment: SegmentEmulator, devices: list[str], what: str
) -> dict[str, dict[str, Any]]:
    """Wait for an `Order Completed` from every device; return one per device.

    A restart or rebalance replays the records processed after the last commit (at-least-once),
    so a device may be delivered twice: the replay must be the same message (same messageId, which
    Segment deduplicates, and the same properties), never a different one."""

    def grouped() -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for m in of_type(segment, "track", "Order Completed"):
            out.setdefault(m["context"]["kseg"]["kochava_device_id"], []).append(m)
        return out

    # Late is not lost: a rebalance on a busy 2-core machine can take a while, so wait long and name
    # the devices still missing if it ends.
    missing: list[str] = []

    def complete() -> bool:
        missing[:] = sorted(set(devices) - set(grouped()))
        return not missing

    try:
        await wait_for(complete, 120, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; no Order Completed from {missing}") from None
    by_device = grouped()
    for device, messages in by_device.items():
        assert len({m["messageId"] for m in messages}) == 1, (device, messages)
        properties = {orjson.dumps(m["properties"], option=orjson.OPT_SORT_KEYS) for m in messages}
        assert len(properties) == 1, device
    return {device: messages[0] for device, messages in by_device.items()}


async def start(p: Pipeline) -> Pipeline:
    await p.start()
    return p


async def test_anonymous_events_then_login_alias_once_and_attribution_on_user(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await make_pipeline(segment.url).start()
    dump_logs.append(p)
    assert (await p.get(install("KIAAA1")))[0] == 200
    for n in range(3):
        assert (await p.get(app_event("KIAAA1", "Level Complete", n)))[0] == 200
    await wait_for(lambda: len(of_type(segment, "track", "Level Completed")) == 3, 30, "anonymous events")
    anonymous_id = of_type(segment, "track", "Install Attributed")[0]["anonymousId"]
    assert all("userId" not in m for m in segment.messages)

    status, body, _ = await p.post(
        "/v1/identity/links", {"user_id": "user-42", "idfv": IDFV}, token=LINK_TOKEN
    )
    assert status == 200, body
    await wait_for(lambda: of_type(segment, "alias"), 30, "the alias")
    # The same link again must not alias twice.
    status, _, _ = await p.post("/v1/identity/links", {"user_id": "user-42", "idfv": IDFV}, token=LINK_TOKEN)
    assert status == 200
    assert (await p.get(purchase("KIAAA1", 10)))[0] == 200
    orders = await wait_for(lambda: of_type(segment, "track", "Order Completed"), 30, "the purchase")

    aliases = of_type(segment, "alias")
    assert len(aliases) == 1
    assert aliases[0]["previousId"] == anonymous_id and aliases[0]["userId"] == "user-42"
    identifies = [
        m
        for m in of_type(segment, "identify")
        if m.get("userId") == "user-42" and "kochava_campaign" in m["traits"]
    ]
    assert len(identifies) == 1  # one late-authentication identify with the install attribution
    # The purchase after login is the device's first: its lifecycle identify goes to the user too.
    converted = [m for m in of_type(segment, "identify") if m["traits"].get("lifecycle_stage") == "converted"]
    assert [m.get("userId") for m in converted] == ["user-42"]
    assert identifies[0]["traits"]["kochava_campaign"] == "Spring Launch"
    assert identifies[0]["traits"]["kochava_network"] == "ExampleNetwork"
    # Later events belong to the user and carry the install campaign for ROAS.
    assert orders[0]["userId"] == "user-42"
    assert orders[0]["properties"]["install_campaign"] == "Spring Launch"


async def test_shared_device_never_merges_two_users(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await make_pipeline(segment.url, KSEG_SHARED_DEVICE_THRESHOLD="1").start()
    dump_logs.append(p)
    shared_idfv = "11111111-2222-3333-4444-555555555555"
    assert (await p.get(install("KISHARED", idfv=shared_idfv)))[0] == 200
    assert (await p.get(app_event("KISHARED", "Level Complete", 1)))[0] == 200
    await wait_for(lambda: of_type(segment, "track", "Level Completed"), 30, "the anonymous event")
    assert (await p.post("/v1/identity/links", {"user_id": "alice", "idfv": shared_idfv}, token=LINK_TOKEN))[
        0
    ] == 200
    await wait_for(lambda: of_type(segment, "alias"), 30, "alice's alias")
    assert (await p.post("/v1/identity/links", {"user_id": "bob", "idfv": shared_idfv}, token=LINK_TOKEN))[
        0
    ] == 200

    async def shared() -> bool:
        return 'merges_refused_total{reason="shared_device"}' in await p.worker_metrics()

    await wait_for(shared, 30, "the shared-device refusal")

    # The refusal reaches the device's profile asynchronously (through identity.device-events), so events
    # sent meanwhile may still resolve to alice. Once it has, the device's events are anonymous for good.
    sent = iter(range(2, 60))

    def level(n: int) -> list[dict[str, Any]]:
        return [m for m in of_type(segment, "track", "Level Completed") if m["properties"].get("n") == str(n)]

    async def next_event_is_anonymous() -> bool:
        n = next(sent)
        assert (await p.get(app_event("KISHARED", "Level Complete", n)))[0] == 200
        message = await wait_for(lambda: level(n), 30, f"event {n}")
        return "userId" not in message[0]

    await wait_for(next_event_is_anonymous, 60, "the device to stop resolving to a user", interval=0.5)
    assert await next_event_is_anonymous(), "a later event resolved to a user again"
    assert [a["userId"] for a in of_type(segment, "alias")] == ["alice"]
    assert not [m for m in segment.messages if m.get("userId") == "bob" and m.get("anonymousId")]


@pytest.mark.exclusive  # the restarted worker's rejoin and table recovery are timed: alone on the CPU
async def test_tables_survive_a_worker_kill(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await make_pipeline(segment.url).start()
    dump_logs.append(p)
    devices = [f"KIKILL{i:02d}" for i in range(12)]
    for i, device in enumerate(devices):
        assert (
            await p.get(
                install(device, campaign=f"camp-{i}", idfv=f"00000000-0000-0000-0000-0000000000{i:02d}")
            )
        )[0] == 200
    await wait_for(lambda: len(of_type(segment, "track", "Install Attributed")) == 12, 30, "installs")
    p.kill("worker-1", signal.SIGKILL)
    await p.start_worker()
    for i, device in enumerate(devices):
        assert (await p.get(purchase(device, i)))[0] == 200
    by_device = await orders_by_device(segment, devices, "purchases after the restart")
    for i, device in enumerate(devices):
        assert by_device[device]["properties"]["install_campaign"] == f"camp-{i}", device


async def test_tables_survive_a_rebalance_between_two_workers(
    make_isolated_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await make_isolated_pipeline(segment.url).start()
    dump_logs.append(p)
    devices = [f"KIREB{i:02d}" for i in range(16)]
    for i, device in enumerate(devices):
        assert (
            await p.get(install(device, campaign=f"c{i}", idfv=f"00000000-0000-0000-0000-0000000001{i:02d}"))
        )[0] == 200
    await wait_for(lambda: len(of_type(segment, "track", "Install Attributed")) == 16, 30, "installs")
    await p.start_worker("worker-2")  # joins the group: partitions and their tables move

    async def both_assigned() -> bool:
        import aiohttp

        counts = []
        async with aiohttp.ClientSession() as session:
            for name in ("worker-1", "worker-2"):
                url = f"http://127.0.0.1:{p.worker_ports[name]}/readyz"
                async with session.get(url) as r:
                    counts.append((await r.json()).get("partitions", 0))
        return all(counts)

    await wait_for(both_assigned, 120, "both workers to own partitions")  # a join can be slow on 2 busy cores
    for i, device in enumerate(devices):
        assert (await p.get(purchase(device, i)))[0] == 200
    by_device = await orders_by_device(segment, devices, "purchases after the rebalance")
    assert {d: by_device[d]["properties"]["install_campaign"] for d in devices} == {
        d: f"c{i}" for i, d in enumerate(devices)
    }


async def test_signed_segment_webhook_links_and_bad_signature_is_refused(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await make_pipeline(segment.url, SEGMENT_WEBHOOK_SECRET="whsec").start()
    dump_logs.append(p)
    idfv = "ABCDEF01-2345-6789-ABCD-EF0123456789"
    assert (await p.get(install("KIWEB1", idfv=idfv)))[0] == 200
    await wait_for(lambda: of_type(segment, "track", "Install Attributed"), 30, "the install")
    body = orjson.dumps(
        {
            "type": "identify",
            "messageId": "m-1",
            "userId": "user-web",
            "traits": {"email": "Jane@Example.com "},
            "context": {"device": {"type": "ios", "id": idfv}},
        }
    )
    bad = await p.post("/v1/segment/webhook", body, token=None, headers={"X-Signature": "00" * 20})
    assert bad[0] == 401
    signature = hmac.new(b"whsec", body, hashlib.sha1).hexdigest()
    status, reply, _ = await p.post(
        "/v1/segment/webhook", body, token=None, headers={"X-Signature": signature}
    )
    assert status == 200, reply
    aliases = await wait_for(lambda: of_type(segment, "alias"), 30, "the alias from the webhook link")
    assert aliases[0]["userId"] == "user-web"
    identify = next(m for m in of_type(segment, "identify") if m.get("userId") == "user-web")
    assert identify["traits"]["email_sha256"] == hashlib.sha256(b"jane@example.com").hexdigest()
    assert "email" not in identify["traits"]
