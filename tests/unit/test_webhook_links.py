"""Segment calls → LinkRequests: which calls link, how device ids are typed, what is ignored."""

from __future__ import annotations

import hashlib
from typing import Any

from app.identity.records import LinkRequest
from app.identity.webhook import link_from_message, links_from_payload
from app.metrics import sample


def call(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "identify",
        "messageId": "msg-1",
        "userId": "u1",
        "anonymousId": "anon-1",
        "traits": {"email": " Jane@Example.com "},
        "context": {"device": {"type": "ios", "advertisingId": "IDFA-1", "id": "IDFV-1"}},
    }
    return {**base, **kw}


def test_identify_with_ios_device_links_idfa_and_idfv() -> None:
    link = link_from_message(call())
    assert isinstance(link, LinkRequest)
    assert link.typed_devices() == ["idfa:IDFA-1", "idfv:IDFV-1"]
    assert (link.user_id, link.anonymous_id, link.source, link.message_id) == (
        "u1",
        "anon-1",
        "segment_webhook",
        "msg-1",
    )
    assert link.email_hash == hashlib.sha256(b"jane@example.com").hexdigest()
    assert "jane" not in link.model_dump_json().lower()


def test_android_device_links_adid_and_android_id() -> None:
    link = link_from_message(
        call(context={"device": {"type": "android", "advertisingId": "g-1", "id": "a-1"}})
    )
    assert isinstance(link, LinkRequest) and link.typed_devices() == ["adid:g-1", "android_id:a-1"]


def test_platform_from_os_name_and_kochava_id_from_traits() -> None:
    msg = call(
        traits={"kochava_device_id": "KD1"},
        context={"os": {"name": "iOS"}, "device": {"id": "IDFV-2"}},
    )
    link = link_from_message(msg)
    assert isinstance(link, LinkRequest) and link.typed_devices() == ["kochava_device_id:KD1", "idfv:IDFV-2"]


def test_email_from_context_traits_and_track_calls_need_a_user_id() -> None:
    msg = call(userId=None, traits={}, context={**call()["context"], "traits": {"email": "a@b.co"}})
    link = link_from_message(msg)
    assert isinstance(link, LinkRequest) and link.user_id is None and link.email_hash
    no_anon = {k: v for k, v in msg.items() if k != "anonymousId"}
    assert link_from_message({**no_anon, "type": "track"}) == "no_user_id"
    adopt = link_from_message({**msg, "type": "track"})  # the anonymousId alone is adopted, nobody linked
    assert isinstance(adopt, LinkRequest) and adopt.anonymous_id == "anon-1" and not adopt.has_person()
    track = link_from_message(call(type="track", traits=None))
    assert isinstance(track, LinkRequest) and track.user_id == "u1" and track.email_hash is None


def test_zero_idfa_and_junk_user_ids_never_link() -> None:
    before = sample("kseg_identity_junk_ids_blocked_total", id_type="idfa")
    msg = call(context={"device": {"type": "ios", "advertisingId": "00000000-0000-0000-0000-000000000000"}})
    assert link_from_message(msg) == "no_device_id"
    assert sample("kseg_identity_junk_ids_blocked_total", id_type="idfa") == before + 1
    assert link_from_message(call(userId="anonymous", traits={}, anonymousId=None)) == "no_user_id"


def test_ad_id_ignored_when_ad_tracking_disabled() -> None:
    msg = call(context={"device": {"type": "ios", "advertisingId": "IDFA-1", "adTrackingEnabled": False}})
    assert link_from_message(msg) == "no_device_id"


def test_unknown_platform_is_a_reason_not_a_guess() -> None:
    assert (
        link_from_message(call(context={"device": {"advertisingId": "X", "id": "Y"}}))
        == "unknown_device_type"
    )


def test_link_id_is_deterministic_for_redeliveries() -> None:
    a = link_from_message(call(), "2024-01-01T00:00:00.000Z")
    b = link_from_message(call(), "2024-01-02T00:00:00.000Z")
    c = link_from_message(call(messageId="msg-2"))
    assert isinstance(a, LinkRequest) and isinstance(b, LinkRequest) and isinstance(c, LinkRequest)
    assert a.link_id == b.link_id != c.link_id


def test_batch_payload_keeps_links_and_reasons() -> None:
    nobody = call(userId=None, traits={}, anonymousId=None)
    links, reasons = links_from_payload([call(), call(), nobody, "junk"])
    assert len(links) == 1  # the duplicate collapses
    assert reasons == ["no_user_id", "not_an_object"]
