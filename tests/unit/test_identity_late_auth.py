"""Late authentication: one alias + one identify on the first link, idempotent, safe on reassignment."""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.identity.late_auth import apply_link, content_message_id
from app.ids import anonymous_id_for
from app.metrics import sample
from app.records import Attribution, AttributionProfile, DeviceLinked

KEY = "KD-1"
NS = "test-ns"
ANON = anonymous_id_for(NS, KEY)
AT = "2024-05-02T08:00:00.000Z"


def settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, kseg_namespace=NS, **kw)  # type: ignore[call-arg]


def anon_state(events: int = 2) -> AttributionProfile:
    return AttributionProfile(
        anonymous_id=ANON,
        anonymous_events=events,
        known_ids=[f"kochava_device_id:{KEY}", "idfa:IDFA-1", "idfv:IDFV-1"],
        first_touch=Attribution(
            network="Facebook",
            campaign="spring",
            ad_group="ag1",
            creative="cr1",
            site="s1",
            tracker="trk1",
            click_id="clk1",
            country="US",
            attributed_at="2024-05-01T10:00:00.000Z",
        ),
    )


def notice(user: str | None = "u1", **kw: Any) -> DeviceLinked:
    return DeviceLinked(device_key=KEY, user_id=user, via="idfv:IDFV-1", linked_at=AT, **kw)


def test_first_link_emits_exactly_one_alias_and_one_identify() -> None:
    before = sample("kseg_identity_aliases_emitted_total")
    state, messages = apply_link(anon_state(), notice(email_hash="eh"), KEY, settings())
    assert [m["type"] for m in messages] == ["alias", "identify"]
    alias, identify = messages
    assert (alias["previousId"], alias["userId"]) == (ANON, "u1")
    # messageIds derive from the content (not only from device key and userId): see content_message_id.
    assert alias["messageId"] == content_message_id(NS, alias)
    assert identify["messageId"] == content_message_id(NS, identify)
    assert alias["messageId"] != identify["messageId"]
    assert (identify["userId"], identify["anonymousId"]) == ("u1", ANON)
    assert identify["traits"] == {
        "kochava_network": "Facebook",
        "kochava_campaign": "spring",
        "kochava_ad_group": "ag1",
        "kochava_creative": "cr1",
        "kochava_site": "s1",
        "kochava_tracker": "trk1",
        "kochava_click_id": "clk1",
        "kochava_country": "US",
        "kochava_install_time": "2024-05-01T10:00:00.000Z",
        "email_sha256": "eh",
    }
    for m in messages:
        assert m["timestamp"] == AT
        assert m["context"]["library"] == {"name": "kseg"}
        assert m["context"]["device"] == {"type": "ios", "id": "IDFV-1", "advertisingId": "IDFA-1"}
    assert (state.user_id, state.aliased_user_id, state.email_hash) == ("u1", "u1", "eh")
    assert sample("kseg_identity_aliases_emitted_total") == before + 1


def test_same_user_again_is_idempotent() -> None:
    state, _ = apply_link(anon_state(), notice(), KEY, settings())
    again, messages = apply_link(state, notice(), KEY, settings())
    assert messages == []
    assert again == state


def test_message_ids_are_stable_across_replays() -> None:
    _, first = apply_link(anon_state(), notice(), KEY, settings())
    _, replay = apply_link(anon_state(), notice(), KEY, settings())
    assert [m["messageId"] for m in first] == [m["messageId"] for m in replay]


def test_link_without_anonymous_history_emits_nothing() -> None:
    state, messages = apply_link(anon_state(events=0), notice(), KEY, settings())
    assert messages == [] and state.user_id == "u1" and state.aliased_user_id is None


def test_link_after_postback_set_the_user_still_aliases_anonymous_history() -> None:
    state = anon_state()
    state.user_id = "u1"  # resolve() linked it from an explicit user id in a postback
    _, messages = apply_link(state, notice(), KEY, settings())
    assert [m["type"] for m in messages] == ["alias", "identify"]


def test_reassigned_device_new_user_wins_and_old_user_keeps_history() -> None:
    state, _ = apply_link(anon_state(), notice("u1", email_hash="eh1"), KEY, settings())
    state, messages = apply_link(state, notice("u2"), KEY, settings())
    assert state.user_id == "u2"
    assert state.aliased_user_id == "u1"
    assert state.email_hash is None  # u1's email hash does not follow the device to u2
    assert [m["type"] for m in messages] == ["identify"]
    identify = messages[0]
    assert identify["userId"] == "u2"
    assert "anonymousId" not in identify and "device" not in identify["context"]
    assert "email_sha256" not in identify["traits"]
    assert not any(m.get("previousId") == ANON and m.get("userId") == "u2" for m in messages)


def test_shared_notice_clears_user_and_nothing_merges_afterwards() -> None:
    state, _ = apply_link(anon_state(), notice("u1", email_hash="eh"), KEY, settings())
    state, messages = apply_link(state, notice(None, shared=True), KEY, settings())
    assert messages == []
    assert (state.user_id, state.email_hash, state.device_shared) == (None, None, True)
    before = sample("kseg_identity_merges_refused_total", reason="shared_device")
    state2, messages = apply_link(state, notice("u5"), KEY, settings())
    assert messages == [] and state2.user_id is None
    assert sample("kseg_identity_merges_refused_total", reason="shared_device") == before + 1


def test_android_device_context() -> None:
    state = anon_state()
    state.known_ids = [f"kochava_device_id:{KEY}", "adid:gaid-1", "android_id:aid-1"]
    _, messages = apply_link(state, notice(), KEY, settings())
    assert messages[0]["context"]["device"] == {"type": "android", "id": "aid-1", "advertisingId": "gaid-1"}
