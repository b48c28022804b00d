"""Devices that change hands: links ordered by when they happened, person vs device state (pure rules)."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import Settings
from app.identity.index import IndexLimits, apply_update
from app.identity.late_auth import apply_link
from app.identity.person import is_older, person_anonymous_id
from app.identity.records import DeviceIndexUpdate, DeviceRecord
from app.identity.resolver import IdentityRules, resolve
from app.identity.webhook import call_time, link_from_message
from app.ids import anonymous_id_for
from app.receiver.errors import ClientError
from app.receiver.identity_routes import parse_link_body
from app.records import Attribution, AttributionProfile, CanonicalEvent, DeviceLinked, LifecycleState

NS = "test-ns"
KEY = "KD-1"
T1, T2, T3 = "2025-01-01T10:00:00.000Z", "2025-01-02T10:00:00.000Z", "2025-01-03T10:00:00.000Z"
RECEIVED = "2025-01-05T00:00:00.000Z"
LIMITS = IndexLimits(max_ids_per_profile=5, shared_device_threshold=2)


def rules() -> IdentityRules:
    """The identity rules the processing core builds from the default settings."""
    s = settings()
    return IdentityRules(s.kseg_namespace, s.kseg_max_ids_per_profile, s.kseg_allow_raw_email_trait)


def settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, kseg_namespace=NS, **kw)  # type: ignore[call-arg]


# --- link order ------------------------------------------------------------------------------------


def test_link_order_is_by_time_then_ref_and_a_redelivery_is_neither_older_nor_newer() -> None:
    assert is_older(T1, "z", T2, "a") and not is_older(T2, "a", T1, "z")
    assert is_older(T1, "a", T1, "b") and not is_older(T1, "b", T1, "a")  # ties: one order whatever arrives
    assert not is_older(T1, "a", T1, "a")  # an exact re-delivery
    assert not is_older("not a time", "a", T1, "b") and not is_older(T1, "a", None, None)
    assert is_older("2025-01-01T11:00:00+01:00", None, "2025-01-01T10:30:00Z", None)  # time zones honoured


def test_webhook_link_is_timed_by_the_call_not_by_its_arrival() -> None:
    call: dict[str, Any] = {
        "type": "identify",
        "messageId": "m-A",
        "userId": "user-A",
        "context": {"device": {"type": "ios", "id": "V"}},
    }
    assert call_time(call, RECEIVED) == RECEIVED  # no time of its own: when it arrived
    assert call_time({**call, "sentAt": T3}, RECEIVED) == T3
    assert call_time({**call, "sentAt": T3, "originalTimestamp": T2}, RECEIVED) == T2
    assert call_time({**call, "sentAt": T3, "originalTimestamp": T2, "timestamp": T1}, RECEIVED) == T1
    assert (
        call_time({**call, "timestamp": "2031-01-01T00:00:00Z"}, RECEIVED) == RECEIVED
    )  # never after arrival
    assert call_time({**call, "timestamp": "garbage", "sentAt": T2}, RECEIVED) == T2
    first = link_from_message({**call, "timestamp": T1}, T2)
    again = link_from_message({**call, "timestamp": T1}, RECEIVED)  # Segment re-delivers it days later
    assert not isinstance(first, str) and not isinstance(again, str)
    assert (first.requested_at, first.link_id) == (again.requested_at, again.link_id) == (T1, first.link_id)


def test_links_api_takes_an_optional_at() -> None:
    body = {"user_id": "user-B", "kochava_device_id": KEY}
    assert parse_link_body(body, RECEIVED)[0].requested_at == RECEIVED
    dated, ignored = parse_link_body({**body, "at": "2025-01-02T11:00:00+01:00"}, RECEIVED)
    assert (dated.requested_at, ignored) == (T2, [])
    assert dated.link_id != parse_link_body(body, RECEIVED)[0].link_id
    for bad in ("yesterday", "2025-01-02", "2031-01-01T00:00:00Z"):
        with pytest.raises(ClientError) as err:
            parse_link_body({**body, "at": bad}, RECEIVED)
        assert (err.value.status, err.value.code) == (400, "invalid_at"), bad


# --- the device index --------------------------------------------------------------------------------

DEV = "idfv:V"


def link(user: str, at: str, ref: str, **kw: Any) -> DeviceIndexUpdate:
    return DeviceIndexUpdate(kind="link", device=DEV, user_id=user, at=at, ref=ref, source="api", **kw)


def index(updates: list[DeviceIndexUpdate]) -> tuple[DeviceRecord, list[DeviceLinked]]:
    record: DeviceRecord | None = None
    notices: list[DeviceLinked] = []
    for update in updates:
        out = apply_update(record, update, LIMITS)
        record, notices = out.record, notices + out.notices
    assert record is not None
    return record, notices


def test_index_an_older_link_never_overrides_a_newer_one_whatever_the_arrival_order() -> None:
    seen = DeviceIndexUpdate(kind="observed", device=DEV, device_key=KEY, at=T1)
    a = link("user-A", T1, "LA", email_hash="hash-A")
    b = link("user-B", T2, "LB")
    in_order, _ = index([seen, a, b])
    out_of_order, _ = index([seen, b, a])
    replayed, notices = index([seen, a, b, a, a])
    for record in (in_order, out_of_order, replayed):
        assert (record.user_id, record.linked_at, record.link_ref) == ("user-B", T2, "LB")
        assert record.email_hash is None  # A's email hash never follows the device to B
    assert [n.user_id for n in notices] == ["user-A", "user-B"]  # the replays told nobody anything


def test_index_forgets_and_refuses_the_previous_owners_sdk_anonymous_id() -> None:
    seen = DeviceIndexUpdate(kind="observed", device=DEV, device_key=KEY, at=T1)
    adopt_a = DeviceIndexUpdate(kind="adopt", device=DEV, anonymous_id="sdk-A", user_id="user-A", at=T1)
    record, _ = index([seen, link("user-A", T1, "LA"), adopt_a, link("user-B", T2, "LB")])
    assert record.anonymous_id is None and record.reassigned_at == T2
    late = apply_update(record, adopt_a, LIMITS)  # A's SDK call arrives again, after the resale
    assert late.record.anonymous_id is None and late.refused == ["previous_owner"] and late.notices == []
    b_before = DeviceIndexUpdate(kind="adopt", device=DEV, anonymous_id="sdk-X", at=T1)  # before the resale
    assert apply_update(record, b_before, LIMITS).refused == ["previous_owner"]
    b_after = DeviceIndexUpdate(kind="adopt", device=DEV, anonymous_id="sdk-B", user_id="user-B", at=T3)
    adopted = apply_update(record, b_after, LIMITS)
    assert adopted.record.anonymous_id == "sdk-B"
    assert [(n.device_key, n.anonymous_id) for n in adopted.notices] == [(KEY, "sdk-B")]


# --- the device's profile ------------------------------------------------------------------------------

A_ANON = "sdk-anon-A"


def owned_by_a() -> AttributionProfile:
    """A device user A logged in on: A's SDK anonymousId adopted, A's email, a purchase, suppressed ads."""
    return AttributionProfile(
        anonymous_id=anonymous_id_for(NS, KEY),
        sdk_anonymous_id=A_ANON,
        user_id="user-A",
        aliased_user_id="user-A",
        anonymous_events=1,
        email_hash="hash-A",
        lifetime_revenue=9.99,
        purchase_count=1,
        converted=True,
        converted_at=T1,
        conversion_name="Purchase",
        known_ids=[f"kochava_device_id:{KEY}", "idfv:V"],
        first_touch=Attribution(network="Net", campaign="spring", attributed_at="2024-12-31T00:00:00.000Z"),
        lifecycle=LifecycleState(
            acquisition_channel="paid_social",
            acquisition_paid=True,
            stage="converted",
            ltv_revenue=9.99,
            ad_suppressed=True,
            ad_suppressed_at=T1,
            ad_suppression_reason="converted",
        ),
        ownership={"linked_at": T1, "link_ref": "LA", "anonymous_owner": "user-A"},  # type: ignore[arg-type]
    )


def notice(user: str, at: str, ref: str, **kw: Any) -> DeviceLinked:
    return DeviceLinked(device_key=KEY, user_id=user, via=DEV, linked_at=at, link_ref=ref, **kw)


A_IDS = {A_ANON, anonymous_id_for(NS, KEY)}


def test_hand_over_the_new_owner_starts_with_none_of_the_previous_owners_person_state() -> None:
    state, messages = apply_link(owned_by_a(), notice("user-B", T2, "LB"), KEY, settings())
    [identify] = messages
    assert (
        identify["userId"] == "user-B"
        and "anonymousId" not in identify
        and "device" not in identify["context"]
    )
    person = {
        "email_sha256",
        "ltv_revenue",
        "purchase_count",
        "ad_suppressed",
        "converted_at",
        "lifecycle_stage",
    }
    assert not person & identify["traits"].keys(), identify["traits"]
    assert identify["traits"]["kochava_campaign"] == "spring"  # the install's first touch is the device's
    assert identify["traits"]["acquisition_channel"] == "paid_social"
    assert (state.user_id, state.email_hash, state.purchase_count, state.converted) == (
        "user-B",
        None,
        0,
        False,
    )
    assert state.sdk_anonymous_id is None and state.anonymous_id not in A_IDS
    assert set(state.ownership.retired_anonymous_ids) >= A_IDS
    assert state.first_touch == owned_by_a().first_touch and state.known_ids == owned_by_a().known_ids
    assert person_anonymous_id(state, KEY, "user-B", NS) not in A_IDS


def test_a_replayed_old_login_never_takes_the_device_back() -> None:
    state, _ = apply_link(owned_by_a(), notice("user-B", T2, "LB"), KEY, settings())
    replayed, messages = apply_link(state, notice("user-A", T1, "LA", email_hash="hash-A"), KEY, settings())
    assert messages == [] and replayed.user_id == "user-B" and replayed.email_hash is None
    late_anon = DeviceLinked(
        device_key=KEY,
        via=DEV,
        linked_at=T3,
        anonymous_id=A_ANON,
        anonymous_id_at=T1,
        anonymous_user_id="user-A",
    )
    assert apply_link(replayed, late_anon, KEY, settings()) == (replayed, [])  # A's app is never adopted


def test_taking_the_device_back_is_a_new_message_with_a_new_id() -> None:
    first_login, first = apply_link(
        AttributionProfile(anonymous_events=2), notice("user-A", T1, "LA"), KEY, settings()
    )
    to_b, _ = apply_link(first_login, notice("user-B", T2, "LB"), KEY, settings())
    back, messages = apply_link(to_b, notice("user-A", T3, "LA2"), KEY, settings())
    assert back.user_id == "user-A" and [m["type"] for m in messages] == ["identify"]
    assert messages[0]["messageId"] not in {m["messageId"] for m in first}
    assert back.anonymous_id not in set(to_b.ownership.retired_anonymous_ids) | {to_b.anonymous_id}


def postback(user: str | None, at: str, event_id: str) -> CanonicalEvent:
    return CanonicalEvent.model_validate(
        {
            "event_id": event_id,
            "message_id": f"msg-{event_id}",
            "kind": "event",
            "kochava_event_name": "open",
            "segment_event_name": "Open",
            "timestamp": at,
            "received_at": RECEIVED,
            "devices": {"kochava_device_id": KEY},
            "user_id": user,
            "profile": "default",
            "profile_version": "1",
        }
    )


def test_postback_naming_another_person_hands_over_by_event_time() -> None:
    identity, state = resolve(postback("user-B", T2, "e-B"), owned_by_a(), KEY, rules())
    assert identity.user_id == "user-B" and identity.anonymous_id not in A_IDS and identity.email_hash is None
    assert state.user_id == "user-B" and state.purchase_count == 0 and not state.lifecycle.ad_suppressed
    late_a, after = resolve(postback("user-A", T1, "e-A"), state, KEY, rules())  # A's older event, late
    assert after.user_id == "user-B"  # the device stays B's
    assert late_a.user_id == "user-A" and late_a.anonymous_id not in {
        identity.anonymous_id,
        state.anonymous_id,
    }
    anonymous, _ = resolve(postback(None, T3, "e-3"), after, KEY, rules())
    assert anonymous.user_id == "user-B" and anonymous.anonymous_id == identity.anonymous_id


def test_an_owned_device_adopts_only_its_owners_sdk_anonymous_id() -> None:
    """A buyer's new app sends anonymous SDK calls before the buyer's link arrives: never paired with A."""
    anonymous = DeviceLinked(
        device_key=KEY, via=DEV, linked_at=T2, anonymous_id="sdk-new", anonymous_id_at=T2
    )
    state, messages = apply_link(owned_by_a(), anonymous, KEY, settings())
    assert (state.sdk_anonymous_id, messages) == (A_ANON, [])
    named = anonymous.model_copy(update={"anonymous_id": "sdk-A-2", "anonymous_user_id": "user-A"})
    state, messages = apply_link(owned_by_a(), named, KEY, settings())  # A reinstalled the app
    assert state.sdk_anonymous_id == "sdk-A-2" and {m.get("userId") for m in messages} <= {"user-A"}
    fresh, _ = apply_link(AttributionProfile(), anonymous, KEY, settings())  # nobody's device yet
    assert fresh.sdk_anonymous_id == "sdk-new"
