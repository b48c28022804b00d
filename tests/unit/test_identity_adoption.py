"""The app's own profile: adopting the Segment SDK's anonymousId for a device (docs/identity.md), through
the real processing steps, device index and link fan-out, with dict tables."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from app import topics
from app.identity.agents import handle_index_update
from app.identity.index import link_updates
from app.identity.records import LinkRequest, to_bytes
from app.identity.webhook import link_from_message
from app.metrics import DeadLetterMetrics, sample
from app.records import DeviceIds
from tests.pipeline_tables import Tables, raw

IDFV_A = "8E1D2C3B-4A59-4687-9A1B-2C3D4E5F6071"
IDFV_B = "1B2C3D4E-5F60-4718-8A9B-0C1D2E3F4A5B"
SDK_ANON = "sdk-anon-1111"


def install(key: str, idfv: str, network: str = "Facebook") -> dict[str, Any]:
    return raw(
        {
            "event_name": "_install",
            "kochava_device_id": key,
            "idfv": idfv,
            "network_name": network,
            "campaign_name": "Welcome",
            "install_id": f"inst-{key}",
            "timestamp": "1735689600",
        }
    )


def event(key: str, idfv: str, n: int) -> dict[str, Any]:
    return raw(
        {
            "event_name": "Level Complete",
            "kochava_device_id": key,
            "idfv": idfv,
            "timestamp": str(1735690000 + n),
        }
    )


def sdk_call(idfv: str, anonymous_id: str = SDK_ANON, **kw: Any) -> dict[str, Any]:
    """A screen call of the app's own SDK as the signed webhook delivers it."""
    return {
        "type": "screen",
        "name": "Welcome",
        "messageId": f"m-{idfv}-{anonymous_id}",
        "anonymousId": anonymous_id,
        "context": {"device": {"type": "ios", "id": idfv}, "library": {"name": "analytics-ios"}},
        **kw,
    }


def deliver(t: Tables, link: LinkRequest) -> None:
    """The links agent's fan-out, the device index, and every notice back through the processing step."""
    for update in link_updates(link):
        t.sent.setdefault(topics.DEVICE_INDEX, []).append(
            (update.device.encode(), update.model_dump(mode="json"))
        )
    settle(t)


def settle(t: Tables) -> None:
    for _ in range(5):
        notices = t.apply_index()
        if not notices:
            return
        t.run([(n.device_key, n.model_dump(mode="json")) for n in notices])


def webhook_link(message: dict[str, Any]) -> LinkRequest:
    link = link_from_message(message, "2025-01-01T00:05:00.000Z")
    assert isinstance(link, LinkRequest), link
    return link


def identifies_to(calls: list[dict[str, Any]], anonymous_id: str) -> list[dict[str, Any]]:
    return [c for c in calls if c["type"] == "identify" and c["anonymousId"] == anonymous_id]


def test_postback_first_then_webhook_sends_first_touch_to_the_sdk_profile() -> None:
    t = Tables()
    t.run([("KA", install("KA", IDFV_A))])
    settle(t)
    kseg_anon = t.take(topics.OUTBOX)[0]["anonymousId"]
    assert kseg_anon != SDK_ANON
    deliver(t, webhook_link(sdk_call(IDFV_A)))
    adopted = identifies_to(t.take(topics.OUTBOX), SDK_ANON)
    assert len(adopted) == 1
    traits = adopted[0]["traits"]
    assert traits["acquisition_channel"] == "paid_social" and traits["acquisition_paid"] is True
    assert traits["kochava_campaign"] == "Welcome" and traits["lifecycle_stage"] == "installed"
    assert adopted[0]["context"]["device"]["id"] == IDFV_A
    # Later calls of the device use the SDK's anonymousId.
    t.run([("KA", event("KA", IDFV_A, 1))])
    assert {c["anonymousId"] for c in t.take(topics.OUTBOX)} == {SDK_ANON}
    # The same SDK calls again adopt nothing new and send nothing.
    deliver(t, webhook_link(sdk_call(IDFV_A)))
    assert t.take(topics.OUTBOX) == []


def test_webhook_first_then_postback_adopts_when_the_device_appears() -> None:
    t = Tables()
    deliver(t, webhook_link(sdk_call(IDFV_A)))
    assert t.take(topics.OUTBOX) == []  # no device behind the id yet
    t.run([("KA", install("KA", IDFV_A))])
    first = t.take(topics.OUTBOX)
    settle(t)  # the install's observation meets the remembered SDK anonymousId
    adopted = identifies_to(t.take(topics.OUTBOX), SDK_ANON)
    assert first and len(adopted) == 1 and adopted[0]["traits"]["acquisition_channel"] == "paid_social"
    assert t.profile("KA").sdk_anonymous_id == SDK_ANON


def test_links_api_anonymous_id_adopts_and_links() -> None:
    t = Tables()
    t.run([("KA", install("KA", IDFV_A)), ("KA", event("KA", IDFV_A, 1))])
    settle(t)
    t.take(topics.OUTBOX)
    link = LinkRequest(
        link_id="l1",
        source="api",
        user_id="user-1",
        anonymous_id=SDK_ANON,
        devices=DeviceIds(idfv=IDFV_A),
        requested_at="2025-01-01T00:05:00.000Z",
    )
    deliver(t, link)
    calls = t.take(topics.OUTBOX)
    adopted = identifies_to(calls, SDK_ANON)
    assert adopted and adopted[0]["traits"]["acquisition_channel"] == "paid_social"
    assert adopted[0]["userId"] == "user-1"  # the SDK's profile joins the user
    # kseg's own anonymous history is aliased to the user once, as for any late login.
    aliases = [c for c in calls if c["type"] == "alias"]
    assert len(aliases) == 1 and aliases[0]["userId"] == "user-1" and aliases[0]["previousId"] != SDK_ANON


def test_shared_device_does_not_adopt() -> None:
    t = Tables()
    t.run([("KA", install("KA", IDFV_A))])
    settle(t)
    for n, user in enumerate(["u1", "u2", "u3"]):  # threshold 2: the third user marks the id shared
        deliver(t, LinkRequest(link_id=f"l{n}", source="api", user_id=user, devices=DeviceIds(idfv=IDFV_A)))
    assert t.profile("KA").device_shared
    t.take(topics.OUTBOX)
    deliver(t, webhook_link(sdk_call(IDFV_A)))
    assert t.take(topics.OUTBOX) == []
    assert t.profile("KA").sdk_anonymous_id is None
    record = t.index[f"idfv:{IDFV_A}"]
    assert record is not None and record.shared and record.anonymous_id is None


def test_one_anonymous_id_on_two_devices_does_not_merge_them() -> None:
    t = Tables()
    t.run([("KA", install("KA", IDFV_A)), ("KB", install("KB", IDFV_B, network="Google Ads"))])
    settle(t)
    t.take(topics.OUTBOX)
    deliver(t, webhook_link(sdk_call(IDFV_A)))
    deliver(t, webhook_link(sdk_call(IDFV_B)))  # the same anonymousId, another device
    adopted = identifies_to(t.take(topics.OUTBOX), SDK_ANON)
    assert [c["traits"]["acquisition_channel"] for c in adopted] == ["paid_social"]
    assert t.profile("KB").sdk_anonymous_id is None
    claim = t.index[f"sdk_anonymous_id:{SDK_ANON}"]
    assert claim is not None and claim.conflicts == 1 and claim.claim_ids == [f"idfv:{IDFV_A}"]


def test_zero_ad_ids_and_kseg_own_calls_never_adopt() -> None:
    zero = sdk_call(IDFV_A)
    zero["context"] = {"device": {"type": "ios", "advertisingId": "00000000-0000-0000-0000-000000000000"}}
    assert link_from_message(zero) == "no_device_id"
    own = sdk_call(IDFV_A)
    own["context"]["library"] = {"name": "kseg"}
    assert link_from_message(own) == "no_user_id"
    assert (
        link_from_message(sdk_call(IDFV_A, anonymous_id="00000000-0000-0000-0000-000000000000"))
        == "no_user_id"
    )


async def test_index_agent_forwards_adopts_and_counts_conflicts() -> None:
    """The device index handler: an accepted claim goes out as adopts on the index topic; a second device's
    claim of the same anonymousId is refused and counted."""
    sent_index: list[tuple[bytes | None, dict[str, Any]]] = []
    events: list[tuple[bytes | None, dict[str, Any]]] = []

    def sink(into: list[tuple[bytes | None, dict[str, Any]]]) -> Any:
        async def send(key: bytes | None, value: bytes) -> None:
            into.append((key, orjson.loads(value)))

        return send

    table: dict[bytes, Any] = {}
    settings = Tables().config.settings
    before = sample("kseg_identity_merges_refused_total", reason="anonymous_id_conflict")
    for idfv in (IDFV_A, IDFV_B):
        (claim,) = link_updates(webhook_link(sdk_call(idfv)))
        await handle_index_update(
            claim.device.encode(),
            to_bytes(claim),
            table,
            sink(events),
            sink([]),
            settings,
            sink(sent_index),
            dead_letters=DeadLetterMetrics.on(CollectorRegistry()).total,
        )
    assert [(k, v["kind"], v["anonymous_id"]) for k, v in sent_index] == [
        (f"idfv:{IDFV_A}".encode(), "adopt", SDK_ANON)
    ]
    assert sample("kseg_identity_merges_refused_total", reason="anonymous_id_conflict") == before + 1
