"""Audience membership rules: Engage detection by structure, idempotency, ordering, device fan-out,
IdentityLink once, kseg's own audiences, and the device facts the processing agent emits."""

from __future__ import annotations

from typing import Any

from app.audiences.devices import device_facts
from app.audiences.engage import changes_from_payload
from app.audiences.own import load_own_audiences
from app.audiences.records import DeviceFacts, MemberState
from app.audiences.rules import EventNames, Outcome, apply_change, apply_device
from app.records import AttributionProfile

NAMES = EventNames()
OWN = load_own_audiences()
IDFV = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
ADID = "38400000-8cf0-11bd-b23e-10b96e40000d"


def identify(
    value: bool, *, user: str | None = "u1", at: str = "2026-01-01T10:00:00Z", **over: Any
) -> dict[str, Any]:
    call: dict[str, Any] = {
        "type": "identify",
        "userId": user,
        "traits": {"high_ltv_paid_social": value, "email": "A@Example.com"},
        "timestamp": at,
        "context": {
            "personas": {
                "computation_class": "audience",
                "computation_id": "aud_123",
                "computation_key": "high_ltv_paid_social",
                "namespace": "spa_9",
                "space_id": "spa_9",
            }
        },
        "integrations": {"All": False, "Webhooks": True},
    }
    call.update(over)
    return call


def track(value: bool, user: str = "u1", event: str = "Whatever Name") -> dict[str, Any]:
    call = identify(value, user=user)
    call.update(
        type="track",
        event=event,
        properties={"audience_key": "high_ltv_paid_social", "high_ltv_paid_social": value},
    )
    del call["traits"]
    return call


def facts(device: str, member: str = "user:u1", **over: Any) -> DeviceFacts:
    base: dict[str, Any] = {
        "member": member,
        "device_key": device,
        "device_ids": {"idfv": IDFV},
        "at": "2026-01-01T09:00:00Z",
    }
    base.update(over)
    return DeviceFacts(**base)


def two_devices() -> MemberState:
    state = apply_device(None, facts("KI1"), [], NAMES).state
    return apply_device(
        state,
        facts("KI2", device_ids={"adid": ADID, "idfa": "00000000-0000-0000-0000-000000000000"}),
        [],
        NAMES,
    ).state


def tracks(out: Outcome) -> list[dict[str, Any]]:
    return [r.body for r in out.requests if r.endpoint == "track"]


def test_identify_and_track_mode_detected_by_structure_not_name() -> None:
    changes, reasons = changes_from_payload(
        [identify(True), track(False), {"type": "track", "event": "Audience Entered"}], "2026-01-01T00:00:00Z"
    )
    assert [(c.member, c.entered, c.audience_key, c.audience_id, c.source) for c in changes] == [
        ("user:u1", True, "high_ltv_paid_social", "aud_123", "segment"),
        ("user:u1", False, "high_ltv_paid_social", "aud_123", "segment"),
    ]
    assert reasons == []


def test_non_boolean_value_or_other_class_is_not_a_membership_change() -> None:
    call = identify(True)
    call["traits"]["high_ltv_paid_social"] = "true"
    other = identify(True)
    other["context"]["personas"]["computation_class"] = "trait"
    assert changes_from_payload([call, other], "t") == ([], [])


def test_email_member_when_no_user_id_and_reason_when_no_identifier() -> None:
    changes, _ = changes_from_payload(identify(True, user=None), "t")
    assert changes[0].member.startswith("email:") and "example" not in changes[0].member
    call = identify(True, user=None)
    call["traits"] = {"high_ltv_paid_social": True}
    assert changes_from_payload(call, "t") == ([], ["no_profile_identifier"])


def test_entry_reaches_every_device_with_its_ids_and_no_junk() -> None:
    change = changes_from_payload(identify(True), "t")[0][0]
    out = apply_change(two_devices(), change, NAMES)
    bodies = tracks(out)
    assert [b["kochava_device_id"] for b in bodies] == ["KI1", "KI2"]
    assert bodies[0]["device_ids"] == {"idfv": IDFV}
    assert bodies[1]["device_ids"] == {"adid": ADID}  # the zeroed IDFA never leaves
    assert bodies[0]["usertime"] == 1767261600 and bodies[0]["action"] == "event"
    assert bodies[0]["data"] == {
        "event_name": "Audience Entered",
        "event_data": {
            "audience_key": "high_ltv_paid_social",
            "audience_id": "aud_123",
            "audience_source": "segment",
        },
    }


def test_resend_and_per_identifier_duplicates_send_nothing() -> None:
    first = apply_change(two_devices(), changes_from_payload(identify(True), "t")[0][0], NAMES)
    again = identify(True, at="2026-01-01T11:00:00Z")
    again["traits"]["email"] = "second@example.com"
    out = apply_change(first.state, changes_from_payload(again, "t")[0][0], NAMES)
    assert out.requests == [] and out.ignored == ["duplicate"]


def test_exit_reaches_both_devices_and_an_older_change_never_wins() -> None:
    entered = apply_change(two_devices(), changes_from_payload(identify(True), "t")[0][0], NAMES)
    exit_ = apply_change(
        entered.state, changes_from_payload(identify(False, at="2026-01-02T00:00:00Z"), "t")[0][0], NAMES
    )
    assert [b["data"]["event_name"] for b in tracks(exit_)] == ["Audience Exited", "Audience Exited"]
    late_entry = apply_change(
        exit_.state, changes_from_payload(identify(True, at="2026-01-01T12:00:00Z"), "t")[0][0], NAMES
    )
    assert late_entry.requests == [] and late_entry.ignored == ["stale"]


def test_device_linked_later_enters_and_identity_link_once_per_device_and_user() -> None:
    state = apply_change(None, changes_from_payload(identify(True), "t")[0][0], NAMES).state
    out = apply_device(state, facts("KI3", att=True), [], NAMES)
    assert [r.endpoint for r in out.requests] == ["track", "identity_link"]
    assert out.requests[0].body["app_tracking_transparency"] == {"att": True}
    assert out.requests[1].body == {
        "device_id": {"kochava_device_id": "KI3", "idfv": IDFV},
        "data": {"app_userid": "u1"},
    }
    again = apply_device(
        out.state,
        facts("KI3", device_ids={"idfv": IDFV, "idfa": "AB92078A-8246-4BA4-AE5B-76104861E7DC"}),
        [],
        NAMES,
    )
    assert again.requests == []


def test_device_leaving_a_member_exits_its_audiences() -> None:
    state = apply_change(two_devices(), changes_from_payload(identify(True), "t")[0][0], NAMES).state
    out = apply_device(state, facts("KI2", linked=False), [], NAMES)
    assert [(b["kochava_device_id"], b["data"]["event_name"]) for b in tracks(out)] == [
        ("KI2", "Audience Exited")
    ]
    assert set(out.state.devices) == {"KI1"}


def test_own_suppression_audience_from_the_ad_suppressed_signal() -> None:
    state = apply_device(None, facts("KI1"), OWN, NAMES).state
    out = apply_device(
        state, facts("KI2", device_ids={"adid": ADID}, traits={"ad_suppressed": True}), OWN, NAMES
    )
    suppressed = [b for b in tracks(out) if b["data"]["event_data"]["audience_key"] == "kseg_ad_suppression"]
    assert sorted(b["kochava_device_id"] for b in suppressed) == ["KI1", "KI2"]
    assert {b["data"]["event_data"]["audience_source"] for b in suppressed} == {"kseg"}
    repeat = apply_device(
        out.state, facts("KI2", device_ids={"adid": ADID}, traits={"ad_suppressed": True}), OWN, NAMES
    )
    assert tracks(repeat) == []


def test_device_without_kochava_id_is_skipped_and_counted() -> None:
    state = apply_device(None, facts("idfa:AB92078A-8246-4BA4-AE5B-76104861E7DC"), [], NAMES).state
    out = apply_change(state, changes_from_payload(identify(True), "t")[0][0], NAMES)
    assert out.requests == [] and out.skipped == [("high_ltv_paid_social", "no_kochava_device_id")]


def test_device_facts_from_profile_changes() -> None:
    anon = AttributionProfile(known_ids=["kochava_device_id:KI1", f"idfv:{IDFV}"])
    linked = anon.model_copy(update={"user_id": "u1"})
    assert device_facts(None, anon, "KI1", "t") == []  # nobody to be a member of, no signal
    [fact] = device_facts(anon, linked, "KI1", "t")
    assert (fact.member, fact.device_ids, fact.linked) == ("user:u1", {"idfv": IDFV}, True)
    assert device_facts(linked, linked, "KI1", "t") == []
    moved = linked.model_copy(update={"user_id": "u2"})
    assert [(f.member, f.linked) for f in device_facts(linked, moved, "KI1", "t")] == [
        ("user:u1", False),
        ("user:u2", True),
    ]
    shared = moved.model_copy(update={"device_shared": True})
    assert [(f.member, f.linked) for f in device_facts(moved, shared, "KI1", "t")] == [("user:u2", False)]


def test_att_status_from_ios_postbacks_only() -> None:
    from app.audiences.devices import with_att
    from app.records import CanonicalEvent

    def event(device_type: str | None, enabled: bool | None) -> CanonicalEvent:
        return CanonicalEvent.model_validate(
            {**_EVENT, "device_type": device_type, "ad_tracking_enabled": enabled}
        )

    profile = AttributionProfile()
    assert with_att(profile, event("ios", True)).att_authorized is True
    assert with_att(profile, event("ios", False)).att_authorized is False
    assert with_att(profile, event("android", True)).att_authorized is None
    assert (
        with_att(profile.model_copy(update={"att_authorized": True}), event("ios", None)).att_authorized
        is True
    )


_EVENT: dict[str, Any] = {
    "event_id": "e1",
    "message_id": "m1",
    "kind": "event",
    "kochava_event_name": "Level Complete",
    "segment_event_name": "Level Completed",
    "timestamp": "2026-01-01T00:00:00Z",
    "received_at": "2026-01-01T00:00:00Z",
    "devices": {"kochava_device_id": "KI1"},
    "profile": "kochava-default",
    "profile_version": "1",
}



def test_anonymous_device_is_a_member_only_once_ad_suppressed() -> None:
    from app.audiences.devices import member_of
    from app.records import LifecycleState

    anon = AttributionProfile(known_ids=["kochava_device_id:KI1"])
    tiered = anon.model_copy(update={"lifecycle": LifecycleState(ltv_tier="high")})
    suppressed = anon.model_copy(update={"lifecycle": LifecycleState(ad_suppressed=True, ltv_tier="low")})
    assert member_of(anon, "KI1") is None
    assert member_of(tiered, "KI1") is None
    assert member_of(suppressed, "KI1") == "device:KI1"
    [fact] = device_facts(anon, suppressed, "KI1", "t")
    assert fact.traits == {"ad_suppressed": True, "ltv_tier": "low"}
