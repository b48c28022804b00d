"""Devices that change hands, through the real receiver, broker and worker processes and the Segment
emulator: a replayed old login never takes a resold device back, nothing of the previous owner reaches the
new one (email hash, SDK anonymousId, LTV, suppression), two different calls never share a messageId, and
the same holds when the older login arrives after the new owner's link, and on a family device."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from tests.emulators.segment_api import SegmentEmulator
from tests.harness import LINK_TOKEN, Pipeline, metric, wait_for

SECRET = "whsec-resale"
IDFA, IDFV = "5E1A4C2B-1111-4000-8000-00000000000A", "5E1A4C2B-1111-4000-8000-00000000000F"
ALICE, BOB = "alice@example.com", "bob@example.com"
PERSON = {"email_sha256", "phone_sha256", "ltv_revenue", "purchase_count", "ad_suppressed", "converted_at"}


def iso(ago: timedelta) -> str:
    return (datetime.now(UTC) - ago).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sha(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


def postback(device: str, name: str, n: int, **extra: str) -> dict[str, str]:
    return {
        "event_name": name,
        "kochava_device_id": device,
        "idfa": IDFA,
        "idfv": IDFV,
        "n": str(n),
        "timestamp": str(1735690000 + n),
        **extra,
    }


def install(device: str) -> dict[str, str]:
    return {**postback(device, "_install", 0), "network_name": "ExampleNetwork", "campaign_name": "Resale"}


def purchase(device: str, n: int) -> dict[str, str]:
    return {**postback(device, "Purchase", n), "event_value": "9.99", "currency": "USD", "order_id": f"o-{n}"}


def login(user: str, anonymous_id: str, email: str, at: str, message_id: str) -> bytes:
    """The app's Segment SDK identify at login, as the Segment webhook delivers it (the exact bytes)."""
    return orjson.dumps(
        {
            "type": "identify",
            "messageId": message_id,
            "userId": user,
            "anonymousId": anonymous_id,
            "timestamp": at,
            "traits": {"email": email},
            "context": {"device": {"type": "ios", "advertisingId": IDFA, "id": IDFV}},
        }
    )


async def deliver(p: Pipeline, body: bytes) -> None:
    signature = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    status, reply, _ = await p.post(
        "/v1/segment/webhook", body, token=None, headers={"X-Signature": signature}
    )
    assert status == 200 and reply["accepted"] == 1, reply


async def links_processed(p: Pipeline, source: str, count: int) -> None:
    async def done() -> bool:
        page = await p.worker_metrics()
        return metric(page, "kseg_identity_links_accepted_total", source=source, stage="worker") >= count

    await wait_for(done, 60, f"{count} {source} links in the worker")


def tracks(segment: SegmentEmulator, name: str, n: int) -> list[dict[str, Any]]:
    return [
        m
        for m in segment.messages
        if m["type"] == "track" and m.get("event") == name and m["properties"].get("n") == str(n)
    ]


async def event_user(p: Pipeline, segment: SegmentEmulator, device: str, n: int) -> str | None:
    assert (await p.get(postback(device, "Level Complete", n)))[0] == 200
    [message, *_] = await wait_for(lambda: tracks(segment, "Level Completed", n), 60, f"event {n}")
    user = message.get("userId")
    return user if isinstance(user, str) else None


def assert_never_tied(segment: SegmentEmulator, sdk: dict[str, str], emails: dict[str, str]) -> None:
    """No call pairs one person's userId with an anonymousId or email hash the other person used, and no
    messageId was sent with two different contents."""
    ids: dict[str, set[str]] = {user: {anon} for user, anon in sdk.items()}
    for m in segment.messages:
        if m.get("userId") in ids:
            ids[m["userId"]].add(m.get("previousId") or m.get("anonymousId"))
    a, b = sorted(ids)
    assert not (ids[a] - {None}) & (ids[b] - {None}), ids
    for m in segment.messages:
        for other, email in emails.items():
            if m.get("userId") not in (None, other):
                assert m.get("traits", {}).get("email_sha256") != sha(email), m
    contents: dict[str, bytes] = {}
    for m in segment.messages:
        body = orjson.dumps(m, option=orjson.OPT_SORT_KEYS)
        assert contents.setdefault(m["messageId"], body) == body, f"messageId {m['messageId']} reused"


async def test_replayed_old_login_never_takes_a_resold_device_back(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await make_pipeline(segment.url, SEGMENT_WEBHOOK_SECRET=SECRET).start()
    dump_logs.append(p)
    device = "KRESOLD1"
    assert (await p.get(install(device)))[0] == 200
    assert await event_user(p, segment, device, 1) is None
    a_login = login("user-A", "sdk-anon-A", ALICE, iso(timedelta(hours=1)), "m-login-A")
    await deliver(p, a_login)
    await wait_for(lambda: [m for m in segment.messages if m["type"] == "alias"], 60, "A's alias")
    assert (await p.get(purchase(device, 2)))[0] == 200  # A buys: A's LTV, purchase count, conversion
    await wait_for(lambda: tracks(segment, "Order Completed", 2), 60, "A's purchase")

    # The phone is sold: the app links it to B through the links API (timed by its arrival: now).
    status, body, _ = await p.post(
        "/v1/identity/links",
        {"user_id": "user-B", "kochava_device_id": device, "idfv": IDFV},
        token=LINK_TOKEN,
    )
    assert status == 200, body

    def b_identifies() -> list[dict[str, Any]]:
        return [m for m in segment.messages if m["type"] == "identify" and m.get("userId") == "user-B"]

    [hand_over, *_] = await wait_for(b_identifies, 60, "B's identify")
    assert "anonymousId" not in hand_over and not PERSON & hand_over["traits"].keys(), hand_over
    assert hand_over["traits"]["kochava_campaign"] == "Resale"  # the install's first touch is the device's
    assert (await p.get(purchase(device, 3)))[0] == 200
    [b_order] = await wait_for(lambda: tracks(segment, "Order Completed", 3), 60, "B's purchase")
    assert b_order["userId"] == "user-B"

    await deliver(p, a_login)  # Segment re-delivers A's old login, with its own old timestamp
    await links_processed(p, "segment_webhook", 2)
    for n in range(4, 10):  # the replay has had time to reach the device: every event stays B's
        assert await event_user(p, segment, device, n) == "user-B", n
        await asyncio.sleep(0.3)
    assert_never_tied(segment, {"user-A": "sdk-anon-A", "user-B": "-"}, {"user-A": ALICE, "user-B": BOB})
    b_traits = [m["traits"] for m in b_identifies()]
    assert not [t for t in b_traits if t.get("purchase_count", 0) > 1 or t.get("email_sha256")], b_traits


async def test_older_login_arriving_after_the_new_owners_link_changes_nothing(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await make_pipeline(segment.url, SEGMENT_WEBHOOK_SECRET=SECRET).start()
    dump_logs.append(p)
    device = "KRESOLD2"
    assert (await p.get(install(device)))[0] == 200
    assert await event_user(p, segment, device, 1) is None
    status, body, _ = await p.post(
        "/v1/identity/links",
        {"user_id": "user-B", "email": BOB, "kochava_device_id": device, "idfv": IDFV},
        token=LINK_TOKEN,
    )
    assert status == 200, body
    await wait_for(lambda: [m for m in segment.messages if m["type"] == "alias"], 60, "B's alias")
    # A's login from before the sale arrives only now (a webhook backlog): older than B's link.
    await deliver(p, login("user-A", "sdk-anon-A", ALICE, iso(timedelta(days=3)), "m-old-A"))
    await links_processed(p, "segment_webhook", 1)
    for n in range(2, 8):
        assert await event_user(p, segment, device, n) == "user-B", n
        await asyncio.sleep(0.3)
    assert (await p.get(purchase(device, 8)))[0] == 200
    await wait_for(lambda: tracks(segment, "Order Completed", 8), 60, "B's purchase")
    assert not [m for m in segment.messages if m.get("userId") == "user-A"]
    assert_never_tied(segment, {"user-A": "sdk-anon-A", "user-B": "-"}, {"user-A": ALICE, "user-B": BOB})


async def test_family_device_second_person_never_carries_the_first_persons_ids(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    """One app install (one SDK anonymousId) used by two people, below the shared-device threshold."""
    p = await make_pipeline(segment.url, SEGMENT_WEBHOOK_SECRET=SECRET).start()
    dump_logs.append(p)
    device = "KFAMILY1"
    assert (await p.get(install(device)))[0] == 200
    assert await event_user(p, segment, device, 1) is None
    await deliver(p, login("mum", "sdk-anon-family", ALICE, iso(timedelta(hours=2)), "m-mum"))
    await wait_for(lambda: [m for m in segment.messages if m["type"] == "alias"], 60, "mum's alias")
    assert (await p.get(purchase(device, 2)))[0] == 200
    await wait_for(lambda: tracks(segment, "Order Completed", 2), 60, "mum's purchase")
    await deliver(p, login("son", "sdk-anon-family", BOB, iso(timedelta(hours=1)), "m-son"))
    await links_processed(p, "segment_webhook", 2)

    async def son_owns() -> bool:
        return await event_user(p, segment, device, next(counter)) == "son"

    counter = iter(range(3, 60))
    await wait_for(son_owns, 60, "the son's login to reach the device", interval=0.3)
    assert (await p.get(purchase(device, 60)))[0] == 200
    await wait_for(lambda: tracks(segment, "Order Completed", 60), 60, "the son's purchase")
    son_calls = [m for m in segment.messages if m.get("userId") == "son"]
    assert son_calls and all(m.get("anonymousId") != "sdk-anon-family" for m in son_calls)
    assert_never_tied(segment, {"mum": "sdk-anon-family", "son": "-"}, {"mum": ALICE, "son": BOB})
