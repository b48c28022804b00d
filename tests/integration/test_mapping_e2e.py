"""Every postback kind end to end: real receiver, broker and worker, Segment emulator, warehouse topic.

One deployment carries several devices and kinds (a worker start costs seconds); every assertion names
the device and event it is about, so a failure says which mapping went wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.emulators.segment_api import SegmentEmulator
from tests.harness import Pipeline, read_topic, wait_for

IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
IDFV = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"
ANDROID_ID = "9774d56d682e549c"

# Device KIE2EIOS: first install, then a reinstall (reprocess_for), a conversion and a generic event.
INSTALL = {
    "event_name": "_install",
    "kochava_device_id": "KIE2EIOS",
    "idfa": IDFA,
    "idfv": IDFV,
    "install_id": "inst_1",
    "network_name": "ExampleNetwork",
    "campaign": "Winter Sale",
    "segment": "ios_lookalike",
    "site_id": "site_42",
    "sub_site_id": "sub_7",
    "creative_id": "cr_99",
    "tracker": "kotrack123",
    "click_id": "abc123",
    "country": "US",
    "timestamp": "1735689600",  # 2025-01-01T00:00:00Z
}
REINSTALL = {
    "event_name": "_install",
    "kochava_device_id": "KIE2EIOS",
    "idfa": IDFA,
    "idfv": IDFV,
    "install_id": "inst_2",
    "reprocess_for": "inst_1",
    "network_name": "RetargetCo",
    "campaign": "Winback Q1",
    "timestamp": "2025-02-01 12:30:00",
}
SUBSCRIBE = {
    "event_name": "Subscribe",
    "kochava_device_id": "KIE2EIOS",
    "idfv": IDFV,
    "idfa": "00000000-0000-0000-0000-000000000000",  # declined ATT: no advertisingId
    "event_value": "9.99",
    "currency": "usd",
    "timestamp": "1738800000123",  # epoch ms: 2025-02-06T00:00:00.123Z
}
LEVEL = {
    "event_name": "Level Complete",
    "kochava_device_id": "KIE2EIOS",
    "idfv": IDFV,
    "level": "12",
    "difficulty": "hard",
    "auth_token": "must-not-leak",
    "timestamp": "1738886400",  # 2025-02-07T00:00:00Z
}

# Device KIE2EDROID: install, then a purchase attributed to a re-engagement campaign.
DROID_INSTALL = {
    "event_name": "_install",
    "kochava_device_id": "KIE2EDROID",
    "adid": GAID,
    "android_id": ANDROID_ID,
    "network_name": "ExampleNetwork",
    "campaign": "BR Launch",
    "country": "BR",
    "timestamp": "1735689600",
}
REENGAGED_PURCHASE = {
    "event_name": "Purchase",
    "attribution_type": "reengagement",
    "kochava_device_id": "KIE2EDROID",
    "adid": GAID,
    "android_id": ANDROID_ID,
    "network_name": "RetargetCo",
    "campaign_name": "Lapsed 30d",
    "site_id": "site_9",
    "event_value": "4.99",
    "currency": "USD",
    "order_id": "ord-re-1",
    "timestamp": "1735776000",  # 2025-01-02T00:00:00Z
}

# Device KIE2ESHOP: a purchase with item data, sent as a JSON POST body (numbers stay numbers).
PRODUCTS_PURCHASE: dict[str, Any] = {
    "event_name": "Purchase",
    "kochava_device_id": "KIE2ESHOP",
    "idfa": IDFA,
    "event_value": 19.98,
    "currency": "eur",
    "order_id": "GPA.3372-1111",
    "network_name": "ExampleNetwork",
    "campaign": "Winter Sale",
    "timestamp": "2025-01-03T09:15:30.250+01:00",
    "products": [
        {"content_id": "sku_gems_100", "name": "Gem Pack", "sum": "9.99", "quantity": "1"},
        {"content_id": "sku_coin_x2", "name": "Coin Doubler", "price": 9.99, "quantity": 1},
    ],
}


def messages_of(segment: SegmentEmulator, device: str) -> list[dict[str, Any]]:
    return [m for m in segment.messages if m["context"]["kseg"]["kochava_device_id"] == device]


def one(messages: list[dict[str, Any]], kind: str, event: str | None = None, **match: Any) -> dict[str, Any]:
    """The single message of `kind` (and `event`) whose properties/traits contain `match`."""
    found = [
        m
        for m in messages
        if m["type"] == kind
        and (event is None or m.get("event") == event)
        and all((m.get("properties") or m.get("traits") or {}).get(k) == v for k, v in match.items())
    ]
    summary = [(m["type"], m.get("event"), m.get("properties") or m.get("traits")) for m in messages]
    assert len(found) == 1, f"expected one {kind} {event or ''} {match}, got {len(found)} in:\n{summary}"
    return found[0]


async def deliver(p: Pipeline, params: dict[str, Any]) -> None:
    status, body, _ = await p.get(params)
    assert (status, body) == (200, {"message": "success"}), (params["event_name"], status, body)


async def test_every_kind_maps_to_the_spec_at_segment_and_the_warehouse(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p: Pipeline = make_pipeline(segment.url)
    dump_logs.append(p)
    await p.start()

    # Per device the order matters (first install before the reinstall): each send waits for its 200.
    for params in (INSTALL, REINSTALL, SUBSCRIBE, LEVEL, DROID_INSTALL, REENGAGED_PURCHASE):
        await deliver(p, params)
    status, body, _ = await p.post("/v1/kochava/postbacks", PRODUCTS_PURCHASE)
    assert (status, body) == (200, {"message": "success"})

    # 2 install + 2 reinstall + 2 conversion + 1 event + 2 install + 3 re-engaged purchase + 1 purchase,
    # plus a `Lifecycle Stage Changed` for each of the 6 stage changes and an identify for the first purchase.
    expected_total = 20
    await wait_for(lambda: len(segment.messages) >= expected_total, 45, f"{expected_total} Segment messages")

    # ---- install: first-touch identify + Install Attributed ------------------------------------
    ios = messages_of(segment, "KIE2EIOS")
    installs = [m for m in ios if m.get("event") == "Install Attributed"]
    assert len(installs) == 2, [m.get("properties") for m in installs]
    first = next(m for m in installs if not m["properties"].get("reinstall"))
    assert first["properties"]["provider"] == "Kochava"
    assert first["properties"]["campaign"] == {
        "source": "ExampleNetwork",
        "name": "Winter Sale",
        "content": "site_42/sub_7",
        "ad_creative": "cr_99",
        "ad_group": "ios_lookalike",
    }
    assert first["timestamp"] == "2025-01-01T00:00:00.000Z"
    assert first["context"]["device"] == {
        "id": IDFV,
        "advertisingId": IDFA,
        "adTrackingEnabled": True,
        "type": "ios",
    }
    assert first["context"]["kseg"]["profile"] == "kochava-default"
    assert first["context"]["kseg"]["profile_version"] == "2"
    first_touch = one(ios, "identify", kochava_network="ExampleNetwork")
    assert first_touch["traits"]["kochava_campaign"] == "Winter Sale"
    assert first_touch["traits"]["kochava_ad_group"] == "ios_lookalike"
    assert first_touch["traits"]["kochava_install_time"] == "2025-01-01T00:00:00.000Z"
    assert first_touch["anonymousId"] == first["anonymousId"]

    # ---- reinstall: reinstall flag, original install, first touch not overwritten -------------
    again = one(ios, "track", "Install Attributed", reinstall=True)
    assert again["properties"]["original_install_id"] == "inst_1"
    assert again["properties"]["install_id"] == "inst_2"
    assert again["properties"]["campaign"]["source"] == "RetargetCo"
    assert again["timestamp"] == "2025-02-01T12:30:00.000Z"
    reinstall_identify = one(ios, "identify", last_reinstall_network="RetargetCo")
    assert reinstall_identify["traits"]["last_reinstall_campaign"] == "Winback Q1"
    assert reinstall_identify["traits"]["last_reinstall_at"] == "2025-02-01T12:30:00.000Z"
    assert not any(k.startswith("kochava_") for k in reinstall_identify["traits"]), "first touch overwritten"
    assert not [m for m in ios if m.get("event") == "Re-engagement Attributed"]

    # ---- conversion: converted_at identify + Subscription Started -------------------------------
    converted = one(ios, "identify", conversion_name="Subscription Started")
    assert converted["traits"]["converted_at"] == "2025-02-06T00:00:00.123Z"
    subscription = one(ios, "track", "Subscription Started")
    assert subscription["properties"]["revenue"] == 9.99
    assert subscription["properties"]["currency"] == "USD"
    assert (
        subscription["properties"]["install_campaign"] == "Winter Sale"
    )  # the first touch, not the reinstall
    assert subscription["context"]["device"] == {"id": IDFV, "adTrackingEnabled": False, "type": "ios"}

    # ---- generic in-app event ----------------------------------------------------------------
    level = one(ios, "track", "Level Completed")
    assert level["properties"]["level"] == "12"  # GET values stay strings
    assert level["properties"]["difficulty"] == "hard"
    assert "auth_token" not in level["properties"]
    assert "campaign" not in level["properties"]  # no attribution on this postback
    assert level["timestamp"] == "2025-02-07T00:00:00.000Z"
    stages = [m["properties"]["to"] for m in ios if m.get("event") == "Lifecycle Stage Changed"]
    assert stages == ["installed", "reinstalled", "converted"]  # the event after conversion changes nothing
    assert len(ios) == 10, [(m["type"], m.get("event")) for m in ios]

    # ---- re-engagement on a purchase ---------------------------------------------------------
    droid = messages_of(segment, "KIE2EDROID")
    order = one(droid, "track", "Order Completed")
    assert order["properties"]["revenue"] == 4.99
    assert order["properties"]["currency"] == "USD"
    assert order["properties"]["order_id"] == "ord-re-1"
    assert order["properties"]["campaign"]["source"] == "RetargetCo"
    assert order["properties"]["campaign"]["name"] == "Lapsed 30d"
    assert order["properties"]["install_campaign"] == "BR Launch"
    assert order["context"]["device"] == {
        "id": ANDROID_ID,
        "advertisingId": GAID,
        "adTrackingEnabled": True,
        "type": "android",
    }
    reengaged = one(droid, "track", "Re-engagement Attributed")
    assert reengaged["properties"]["provider"] == "Kochava"
    assert reengaged["properties"]["trigger_event"] == "Order Completed"
    assert reengaged["properties"]["campaign"]["source"] == "RetargetCo"
    last_touch = one(droid, "identify", last_reengagement_network="RetargetCo")
    assert last_touch["traits"]["last_reengagement_at"] == "2025-01-02T00:00:00.000Z"
    assert last_touch["traits"]["last_reengagement_campaign"] == "Lapsed 30d"
    assert last_touch["traits"]["lifecycle_stage"] == "reengaged"
    assert last_touch["traits"]["winback_suppress_until"] == "2025-01-16T00:00:00.000Z"
    assert len(droid) == 7, [(m["type"], m.get("event")) for m in droid]

    # ---- purchase with products (JSON body) ---------------------------------------------------
    shop = messages_of(segment, "KIE2ESHOP")
    basket = one(shop, "track", "Order Completed")
    assert basket["properties"]["revenue"] == 19.98
    assert basket["properties"]["currency"] == "EUR"
    assert basket["properties"]["order_id"] == "GPA.3372-1111"
    assert basket["properties"]["products"] == [
        {"product_id": "sku_gems_100", "name": "Gem Pack", "price": 9.99, "quantity": 1},
        {"product_id": "sku_coin_x2", "name": "Coin Doubler", "price": 9.99, "quantity": 1},
    ]
    assert basket["properties"]["campaign"] == {"source": "ExampleNetwork", "name": "Winter Sale"}
    assert basket["timestamp"] == "2025-01-03T08:15:30.250Z"

    assert len(segment.messages) == expected_total, [(m["type"], m.get("event")) for m in segment.messages]

    # ---- warehouse: one row per event, with the profile ----------------------------------------
    async def warehouse_rows() -> list[dict[str, Any]]:
        return [row for _, row in await read_topic(p.bootstrap, p.topic("warehouse.events"))]

    rows = await wait_for(lambda: _at_least(warehouse_rows(), 7), 20, "7 warehouse rows")
    assert len(rows) == 7, [(r["kochava_device_id"], r["event_name"]) for r in rows]
    assert len({r["event_id"] for r in rows}) == 7
    assert {(r["profile"], r["profile_version"]) for r in rows} == {("kochava-default", "2")}
    by_kind = sorted((r["kochava_device_id"], r["event_type"], r["segment_event"]) for r in rows)
    assert by_kind == [
        ("KIE2EDROID", "install", "Install Attributed"),
        ("KIE2EDROID", "purchase", "Order Completed"),
        ("KIE2EIOS", "conversion", "Subscription Started"),
        ("KIE2EIOS", "event", "Level Completed"),
        ("KIE2EIOS", "install", "Install Attributed"),
        ("KIE2EIOS", "reinstall", "Install Attributed"),
        ("KIE2ESHOP", "purchase", "Order Completed"),
    ]
    reinstall_row = next(r for r in rows if r["event_type"] == "reinstall")
    assert reinstall_row["original_install_id"] == "inst_1"
    assert reinstall_row["install_campaign"] == "Winter Sale"
    reengaged_row = next(r for r in rows if r["kochava_device_id"] == "KIE2EDROID" and r["revenue"])
    assert reengaged_row["is_reengagement"] is True
    assert reengaged_row["lifetime_revenue"] == 4.99 and reengaged_row["purchase_count"] == 1
    basket_row = next(r for r in rows if r["kochava_device_id"] == "KIE2ESHOP")
    assert basket_row["product_count"] == 2 and basket_row["currency"] == "EUR"
    assert orjson.loads(basket_row["products"])[0]["product_id"] == "sku_gems_100"


async def _at_least(rows_coro: Any, n: int) -> list[dict[str, Any]] | None:
    rows: list[dict[str, Any]] = await rows_coro
    return rows if len(rows) >= n else None


CUSTOM_PROFILE = """\
name: acme-e2e
version: "2025-03-01"
description: custom postback keys agreed with the UA team
install_event: _install
purchase_events: [IAP]
conversion_events: [Paywall Converted]
event_names:
  IAP: Order Completed
  Paywall Converted: Subscription Started
fields:
  event_name: [evt]
  kochava_device_id: [kdid]
  idfa: [idfa]
  timestamp: [ts]
  revenue: [amount]
  currency: [cur]
  order_id: [receipt_id]
  network: [net]
  campaign: [camp]
  user_agent: [device_ua]
"""


async def test_custom_profile_from_mapping_dir_by_url_parameter(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline], tmp_path: Path
) -> None:
    mapping_dir = tmp_path / "mapping"
    mapping_dir.mkdir()
    (mapping_dir / "acme.yaml").write_text(CUSTOM_PROFILE)
    p: Pipeline = make_pipeline(segment.url, KSEG_MAPPING_DIR=str(mapping_dir))
    dump_logs.append(p)
    await p.start()

    custom = {
        "profile": "acme-e2e",
        "evt": "IAP",
        "kdid": "KIACME1",
        "idfa": IDFA,  # one of the receiver's device keys, so it accepts the postback
        "amount": "4.99",
        "cur": "usd",
        "receipt_id": "R1",
        "ts": "1735776000",
        "net": "Meta",
        "camp": "Spring",
        "coupon": "SPRING10",
    }
    await deliver(p, custom)
    # The same keys without the profile: the default profile finds no event name.
    await deliver(p, {k: v for k, v in custom.items() if k != "profile"} | {"evt": "IAP", "kdid": "KIACME2"})

    order = await wait_for(
        lambda: [m for m in segment.messages if m.get("event") == "Order Completed"], 30, "the IAP order"
    )
    assert len(order) == 1
    props = order[0]["properties"]
    assert props["order_id"] == "R1"
    assert props["revenue"] == 4.99
    assert props["currency"] == "USD"
    assert props["campaign"] == {"source": "Meta", "name": "Spring"}
    assert props["coupon"] == "SPRING10"
    assert not {"evt", "kdid", "amount", "cur", "receipt_id", "ts", "net", "camp"} & set(props)
    assert order[0]["timestamp"] == "2025-01-02T00:00:00.000Z"
    assert order[0]["context"]["kseg"]["profile"] == "acme-e2e"
    assert order[0]["context"]["kseg"]["profile_version"] == "2025-03-01"
    assert order[0]["context"]["kseg"]["kochava_device_id"] == "KIACME1"
    assert order[0]["context"]["device"]["advertisingId"] == IDFA

    rows = [row for _, row in await read_topic(p.bootstrap, p.topic("warehouse.events"))]
    assert [(r["profile"], r["profile_version"], r["event_type"]) for r in rows] == [
        ("acme-e2e", "2025-03-01", "purchase")
    ]
    assert rows[0]["revenue"] == 4.99 and rows[0]["order_id"] == "R1"

    letters = await wait_for(
        lambda: _at_least(_values(read_topic(p.bootstrap, p.topic("deadletter"))), 1),
        20,
        "the default-profile dead letter",
    )
    assert [(d["reason"], d["profile"]) for d in letters] == [("missing_event_name", "kochava-default")]
    # The IAP order, plus the first purchase's lifecycle identify and stage change.
    assert len(segment.messages) == 3, [(m["type"], m.get("event")) for m in segment.messages]


async def _values(records_coro: Any) -> list[Any]:
    return [value for _, value in await records_coro]
