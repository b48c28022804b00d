"""apply_event: first touch once, last re-engagement, revenue totals, first conversion."""

from __future__ import annotations

from typing import Any

from app.attribution import apply_event
from app.mapping import ProfileRegistry, map_postback
from app.records import AttributionProfile, CanonicalEvent, RawPostback

PROFILE = ProfileRegistry.load(None).get("kochava-default")
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"


def ev(event_id: str = "e", **params: Any) -> CanonicalEvent:
    params.setdefault("idfa", IDFA)
    result = map_postback(
        RawPostback(event_id=event_id, received_at="2025-03-01T00:00:00.000Z", params=params), PROFILE, "ns"
    )
    assert isinstance(result, CanonicalEvent), result
    return result


def test_first_install_sets_first_touch_once() -> None:
    empty = AttributionProfile()
    state, first = apply_event(
        empty, ev(event_name="_install", network_name="A", install_id="i1", timestamp="1735689600")
    )
    assert first and state.first_touch and state.first_touch.network == "A" and state.install_id == "i1"
    assert empty.first_touch is None  # the input is not mutated
    later, first2 = apply_event(
        state, ev("e2", event_name="_install", network_name="B", install_id="i2", timestamp="1738000000")
    )
    assert not first2
    assert later.first_touch == state.first_touch and later.install_id == "i1"


def test_replayed_first_install_is_still_first() -> None:
    install = ev(event_name="_install", network_name="A", install_id="i1", timestamp="1735689600")
    state, _ = apply_event(AttributionProfile(), install)
    again, first = apply_event(state, install)
    assert first and again == state


def test_replayed_install_without_install_id_is_recognised_by_its_attribution() -> None:
    install = ev(event_name="_install", network_name="A", timestamp="1735689600")
    state, _ = apply_event(AttributionProfile(), install)
    assert apply_event(state, install)[1] is True
    other = ev("e3", event_name="_install", network_name="A", timestamp="1735689700")
    assert apply_event(state, other)[1] is False


def test_reinstall_never_sets_first_touch_but_remembers_original_install() -> None:
    state, first = apply_event(AttributionProfile(), ev(event_name="_install", reprocess_for="orig"))
    assert not first and state.first_touch is None and state.install_id == "orig"


def test_last_touch_is_latest_reengagement() -> None:
    s1, _ = apply_event(
        AttributionProfile(),
        ev(event_name="Purchase", attribution_type="reengagement", network_name="R1", timestamp="1736000000"),
    )
    assert s1.last_touch and s1.last_touch.network == "R1"
    s2, _ = apply_event(
        s1,
        ev(
            "e2",
            event_name="Open",
            attribution_type="reengagement",
            network_name="R2",
            timestamp="1737000000",
        ),
    )
    assert s2.last_touch and s2.last_touch.network == "R2"
    late, _ = apply_event(
        s2,
        ev(
            "e3",
            event_name="Open",
            attribution_type="reengagement",
            network_name="OLD",
            timestamp="1735000000",
        ),
    )
    assert late.last_touch and late.last_touch.network == "R2"
    plain, _ = apply_event(s2, ev("e4", event_name="Open", network_name="X"))
    assert plain.last_touch == s2.last_touch


def test_revenue_and_purchase_count() -> None:
    s, _ = apply_event(AttributionProfile(), ev(event_name="Purchase", event_value="0.1"))
    s, _ = apply_event(s, ev("e2", event_name="Purchase", event_value="0.2"))
    s, _ = apply_event(s, ev("e3", event_name="Purchase"))
    s, _ = apply_event(s, ev("e4", event_name="Subscribe", event_value="100"))
    assert s.purchase_count == 3
    assert s.lifetime_revenue == 0.3


def test_first_conversion_is_kept() -> None:
    s, _ = apply_event(AttributionProfile(), ev(event_name="Start Trial", timestamp="1736000000"))
    assert (
        s.converted and s.conversion_name == "Trial Started" and s.converted_at == "2025-01-04T14:13:20.000Z"
    )
    s2, _ = apply_event(s, ev("e2", event_name="Subscribe", timestamp="1737000000"))
    assert (s2.converted_at, s2.conversion_name) == (s.converted_at, "Trial Started")


def test_other_profile_fields_survive() -> None:
    start = AttributionProfile(anonymous_id="a", user_id="u", anonymous_events=3)
    s, _ = apply_event(start, ev(event_name="Level Complete"))
    assert (s.anonymous_id, s.user_id, s.anonymous_events) == ("a", "u", 3)
