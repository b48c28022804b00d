"""Lifecycle signals and SDK anonymousId adoption end to end through the real receiver, broker
and worker processes and the strict Segment emulator."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from tests.emulators.segment_api import SegmentEmulator
from tests.harness import LINK_TOKEN, Pipeline, wait_for

WEBHOOK_SECRET = "whsec-lifecycle"


def install(device: str, idfv: str, network: str | None) -> dict[str, str]:
    params = {
        "event_name": "_install",
        "kochava_device_id": device,
        "idfv": idfv,
        "campaign_name": "Welcome",
        "install_id": f"inst-{device}",
        "timestamp": "1735689600",
    }
    if network:
        params["network_name"] = network
    return params


def event(device: str, name: str, n: int, **extra: str) -> dict[str, str]:
    return {
        "event_name": name,
        "kochava_device_id": device,
        "n": str(n),
        "timestamp": str(1735690000 + n),
        **extra,
    }


def identifies(segment: SegmentEmulator, anonymous_id: str | None = None) -> list[dict[str, Any]]:
    return [
        m
        for m in segment.messages
        if m["type"] == "identify" and (anonymous_id is None or m.get("anonymousId") == anonymous_id)
    ]


def traits_of(segment: SegmentEmulator, device: str) -> list[dict[str, Any]]:
    """Every identify's traits for one device (by kseg's context.kseg.kochava_device_id), in arrival order."""
    return [
        m["traits"]
        for m in identifies(segment)
        if m.get("context", {}).get("kseg", {}).get("kochava_device_id") == device
    ]


def tracks(segment: SegmentEmulator, name: str, device: str | None = None) -> list[dict[str, Any]]:
    return [
        m
        for m in segment.messages
        if m["type"] == "track"
        and m.get("event") == name
        and (device is None or m.get("context", {}).get("kseg", {}).get("kochava_device_id") == device)
    ]


def merged(traits: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in traits:
        out.update(t)
    return out


async def send(p: Pipeline, params: dict[str, str]) -> None:
    status, body, _ = await p.get(params)
    assert status == 200, body


async def test_channels_stages_suppression_and_ltv(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await make_pipeline(segment.url).start()
    dump_logs.append(p)
    await send(p, install("KIPAID", "8E1D2C3B-4A59-4687-9A1B-2C3D4E5F6071", "Facebook"))
    await send(p, install("KIORG", "1B2C3D4E-5F60-4718-8A9B-0C1D2E3F4A5B", None))
    await wait_for(lambda: len(tracks(segment, "Install Attributed")) == 2, 60, "both installs")
    paid, organic = merged(traits_of(segment, "KIPAID")), merged(traits_of(segment, "KIORG"))
    assert (paid["acquisition_channel"], paid["acquisition_paid"]) == ("paid_social", True)
    assert (organic["acquisition_channel"], organic["acquisition_paid"]) == ("organic", False)
    assert paid["lifecycle_stage"] == "installed"

    # Post-install event -> active; a second one changes nothing (no identify).
    await send(p, event("KIPAID", "Level Complete", 1))
    await send(p, event("KIPAID", "Level Complete", 2))
    await wait_for(lambda: len(tracks(segment, "Level Completed", "KIPAID")) == 2, 60, "the events")
    assert merged(traits_of(segment, "KIPAID"))["lifecycle_stage"] == "active"
    identify_count = len(traits_of(segment, "KIPAID"))
    assert identify_count == 2  # install + active, nothing for the repeated event

    # Re-engagement (paid) and re-attribution (organic device) -> reengaged, with a win-back window.
    await send(
        p, event("KIPAID", "Level Complete", 3, attribution_type="reengagement", network_name="Google Ads")
    )
    await send(
        p, event("KIORG", "Level Complete", 4, attribution_type="reattribution", network_name="TikTok")
    )
    await wait_for(lambda: len(tracks(segment, "Re-engagement Attributed")) == 2, 60, "both re-engagements")
    for device, channel in (("KIPAID", "paid_search"), ("KIORG", "paid_social")):
        changes = [t["properties"]["to"] for t in tracks(segment, "Lifecycle Stage Changed", device)]
        assert changes.count("reengaged") == 1, changes
        traits = merged(traits_of(segment, device))
        assert traits["lifecycle_stage"] == "reengaged"
        assert traits["last_reengagement_channel"] == channel
        second = 3 if device == "KIPAID" else 4  # event time + 14 days
        assert traits["winback_suppress_until"] == f"2025-01-15T00:06:4{second}.000Z"
    # First touch never moved by a re-engagement.
    assert merged(traits_of(segment, "KIORG"))["acquisition_channel"] == "organic"
    assert all(
        t.get("acquisition_channel", "paid_social") == "paid_social" for t in traits_of(segment, "KIPAID")
    )

    # Conversion -> ad_suppressed once, even when it repeats.
    await send(p, event("KIPAID", "Subscribe", 5))
    await send(p, event("KIPAID", "Subscribe", 6))
    await wait_for(lambda: len(tracks(segment, "Subscription Started", "KIPAID")) == 2, 60, "conversions")
    suppressed = [t for t in traits_of(segment, "KIPAID") if "ad_suppressed" in t]
    assert len(suppressed) == 1 and suppressed[0]["ad_suppressed"] is True
    assert suppressed[0]["ad_suppression_reason"] == "conversion:Subscription Started"

    # Purchases in two currencies -> ltv_revenue in USD; a currency without a rate is kept apart.
    await send(p, event("KIPAID", "Purchase", 7, event_value="10", currency="USD", order_id="o7"))
    await send(p, event("KIPAID", "Purchase", 8, event_value="100", currency="EUR", order_id="o8"))
    await send(p, event("KIPAID", "Purchase", 9, event_value="5000", currency="ZWL", order_id="o9"))
    await wait_for(lambda: len(tracks(segment, "Order Completed", "KIPAID")) == 3, 60, "purchases")
    await wait_for(
        lambda: "ltv_revenue_without_rate" in merged(traits_of(segment, "KIPAID")), 60, "the unrated purchase"
    )
    traits = merged(traits_of(segment, "KIPAID"))
    assert traits["ltv_revenue"] == 118.0  # 10 USD + 100 EUR x 1.08
    assert traits["ltv_currency"] == "USD" and traits["ltv_tier"] == "high"
    assert traits["ltv_revenue_without_rate"] == {"ZWL": 5000.0}
    metrics = await p.worker_metrics()
    assert 'kseg_lifecycle_revenue_without_rate_total{currency="ZWL"} 1.0' in metrics


async def test_ltv_revenue_and_purchase_count_are_never_stale(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    """A 10 EUR then a 5 USD purchase (same LTV tier): Segment's profile must end at 15.8 and 2 (it used to
    keep the first purchase's 10.8 and 1, the second changing no tier)."""
    p = await make_pipeline(segment.url).start()
    dump_logs.append(p)
    await send(p, install("KILTV", "2C3D4E5F-6071-4A59-8687-9A1B8E1D2C3B", "Facebook"))
    await send(p, event("KILTV", "Purchase", 1, event_value="10", currency="EUR", order_id="o1"))
    await wait_for(lambda: len(tracks(segment, "Order Completed", "KILTV")) == 1, 60, "the first purchase")
    await send(p, event("KILTV", "Purchase", 2, event_value="5", currency="USD", order_id="o2"))
    await wait_for(lambda: len(tracks(segment, "Order Completed", "KILTV")) == 2, 60, "the second purchase")
    await wait_for(
        lambda: merged(traits_of(segment, "KILTV")).get("purchase_count") == 2,
        30,
        "the second purchase's traits",
    )
    traits = merged(traits_of(segment, "KILTV"))
    assert (traits["ltv_revenue"], traits["purchase_count"], traits["ltv_tier"]) == (15.8, 2, "low")


def signed(body: bytes) -> dict[str, str]:
    return {"X-Signature": hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha1).hexdigest()}


async def sdk_call(p: Pipeline, anonymous_id: str, idfv: str) -> None:
    body = orjson.dumps(
        {
            "type": "screen",
            "name": "Welcome",
            "messageId": f"m-{anonymous_id}-{idfv}",
            "anonymousId": anonymous_id,
            "context": {"device": {"type": "ios", "id": idfv}, "library": {"name": "analytics-ios"}},
        }
    )
    status, reply, _ = await p.post("/v1/segment/webhook", body, token=None, headers=signed(body))
    assert status == 200 and reply["accepted"] == 1, reply


def uuid_like(n: int) -> str:
    return f"{n:08X}-4A59-4687-9A1B-2C3D4E5F6071"


async def test_sdk_anonymous_id_adoption(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await make_pipeline(segment.url, SEGMENT_WEBHOOK_SECRET=WEBHOOK_SECRET).start()
    dump_logs.append(p)

    # Webhook, postback first.
    await send(p, install("KIW1", uuid_like(1), "Facebook"))
    await wait_for(lambda: traits_of(segment, "KIW1"), 60, "the first install")
    await sdk_call(p, "sdk-w1", uuid_like(1))
    # Webhook first, postback later.
    await sdk_call(p, "sdk-w2", uuid_like(2))
    await send(p, install("KIW2", uuid_like(2), "TikTok"))
    # Links API, both orders (no user: the anonymousId alone is adopted).
    await send(p, install("KIL1", uuid_like(3), "Snapchat"))
    await wait_for(lambda: traits_of(segment, "KIL1"), 60, "the third install")
    status, body, _ = await p.post(
        "/v1/identity/links", {"anonymous_id": "sdk-l1", "idfv": uuid_like(3)}, token=LINK_TOKEN
    )
    assert status == 200, body
    status, body, _ = await p.post(
        "/v1/identity/links", {"anonymous_id": "sdk-l2", "idfv": uuid_like(4)}, token=LINK_TOKEN
    )
    assert status == 200, body
    await send(p, install("KIL2", uuid_like(4), "Reddit"))

    expected = {
        "sdk-w1": "paid_social",
        "sdk-w2": "paid_social",
        "sdk-l1": "paid_social",
        "sdk-l2": "paid_social",
    }
    await wait_for(
        lambda: all(identifies(segment, a) for a in expected), 90, "the adopted profiles' identifies"
    )
    for anonymous_id, channel in expected.items():
        (adopted,) = identifies(segment, anonymous_id)
        assert adopted["traits"]["acquisition_channel"] == channel
        assert adopted["traits"]["acquisition_paid"] is True
        assert adopted["traits"]["lifecycle_stage"] == "installed"
        assert adopted["traits"]["kochava_campaign"] == "Welcome"
    # Later calls of an adopted device go to the SDK's profile.
    await send(p, event("KIW1", "Level Complete", 1))
    await wait_for(lambda: tracks(segment, "Level Completed", "KIW1"), 60, "the post-adoption event")
    assert {m["anonymousId"] for m in tracks(segment, "Level Completed", "KIW1")} == {"sdk-w1"}

    # One anonymousId seen on two devices: only the first device's first touch reaches it.
    await send(p, install("KIC1", uuid_like(5), "Facebook"))
    await send(p, install("KIC2", uuid_like(6), "Google Ads"))
    await wait_for(lambda: traits_of(segment, "KIC1") and traits_of(segment, "KIC2"), 60, "two installs")
    await sdk_call(p, "sdk-clone", uuid_like(5))
    await wait_for(lambda: identifies(segment, "sdk-clone"), 60, "the first device's adoption")
    await sdk_call(p, "sdk-clone", uuid_like(6))

    # A shared device (three users, threshold 2) never adopts.
    await send(p, install("KISH", uuid_like(7), "Facebook"))
    await wait_for(lambda: traits_of(segment, "KISH"), 60, "the shared device's install")
    for user in ("u1", "u2", "u3"):
        status, body, _ = await p.post(
            "/v1/identity/links", {"user_id": user, "idfv": uuid_like(7)}, token=LINK_TOKEN
        )
        assert status == 200, body
    shared = 'kseg_identity_merges_refused_total{reason="shared_device"}'
    await wait_for(lambda: _metric(p, shared), 90, "the device marked shared")
    before = await _metric(p, shared)
    await sdk_call(p, "sdk-shared", uuid_like(7))
    await wait_for(lambda: _above(p, shared, before), 90, "the shared device's adoption refused")

    conflict = 'kseg_identity_merges_refused_total{reason="anonymous_id_conflict"}'
    await wait_for(lambda: _metric(p, conflict), 90, "the second device's claim refused")
    assert [m["traits"]["acquisition_channel"] for m in identifies(segment, "sdk-clone")] == ["paid_social"]
    assert identifies(segment, "sdk-shared") == []


async def _metric(p: Pipeline, sample: str) -> float:
    """One sample's value on the worker's /metrics (0 when absent)."""
    for line in (await p.worker_metrics()).splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _above(p: Pipeline, sample: str, value: float) -> bool:
    return await _metric(p, sample) > value
