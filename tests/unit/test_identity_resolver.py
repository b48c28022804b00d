"""Identity resolution rules: order, deterministic anonymous id, junk ids, PII hashing, caps."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from app.config import Settings
from app.identity.records import typed_device_key
from app.identity.resolver import IdentityRules, observations, resolve
from app.ids import anonymous_id_for
from app.mapping import ProfileRegistry
from app.metrics import sample
from app.pipeline.steps import StepConfig
from app.records import AttributionProfile, CanonicalEvent, DeviceIds

KEY = "KD-123"


def settings(**kw: Any) -> IdentityRules:
    """The rules as the worker builds them from these settings (`StepConfig`)."""
    values = Settings(_env_file=None, kseg_namespace="test-ns", **kw)  # type: ignore[call-arg]
    config = StepConfig(values, ProfileRegistry.load(None))
    return config.profile_configs.configs["kochava-default"].identity


def event(**kw: Any) -> CanonicalEvent:
    devices = kw.pop("devices", {"kochava_device_id": KEY, "idfa": "IDFA-1", "idfv": "IDFV-1"})
    base: dict[str, Any] = {
        "event_id": kw.pop("event_id", "ev1"),
        "message_id": "m1",
        "kind": "install",
        "kochava_event_name": "install",
        "segment_event_name": "Install Attributed",
        "timestamp": "2024-05-01T10:00:00.000Z",
        "received_at": "2024-05-01T10:00:01.000Z",
        "devices": DeviceIds(**devices),
        "profile": "kochava-default",
        "profile_version": "1",
    }
    return CanonicalEvent(**{**base, **kw})


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- resolution order ----------------------------------------------------------------------------


def test_explicit_user_id_wins_over_everything() -> None:
    state = AttributionProfile(user_id="linked-user", email_hash=sha("a@b.co"))
    ident, new = resolve(event(user_id="explicit", email="x@y.co"), state, KEY, settings())
    assert (ident.user_id, ident.via) == ("explicit", "user_id")
    assert new.user_id == "explicit"  # an explicit id links the device: newest link wins
    assert new.anonymous_events == 0


def test_link_from_state_when_event_has_no_user_id() -> None:
    ident, new = resolve(event(email="x@y.co"), AttributionProfile(user_id="u-linked"), KEY, settings())
    assert (ident.user_id, ident.via) == ("u-linked", "link")
    assert ident.email_hash == sha("x@y.co")
    assert new.anonymous_events == 0


def test_email_then_phone_then_anonymous() -> None:
    s = settings()
    ident, _ = resolve(event(email="x@y.co", phone="+44 7700 900123"), AttributionProfile(), KEY, s)
    assert (ident.user_id, ident.via) == (None, "email")
    ident, _ = resolve(event(phone="+44 7700 900123"), AttributionProfile(), KEY, s)
    assert ident.via == "phone"
    assert ident.phone_hash == sha("+447700900123")
    ident, new = resolve(event(), AttributionProfile(), KEY, s)
    assert (ident.user_id, ident.via) == (None, "anonymous")
    assert new.anonymous_events == 1


def test_email_hash_remembered_from_a_link_is_used_later() -> None:
    state = AttributionProfile(email_hash=sha("a@b.co"))
    ident, _ = resolve(event(), state, KEY, settings())
    assert (ident.via, ident.email_hash) == ("email", sha("a@b.co"))


def test_anonymous_events_are_counted() -> None:
    state = AttributionProfile()
    for _ in range(3):
        _, state = resolve(event(), state, KEY, settings())
    assert state.anonymous_events == 3


# --- anonymous id ----------------------------------------------------------------------------------


def test_anonymous_id_is_deterministic_per_device_and_namespace() -> None:
    a, state = resolve(event(), AttributionProfile(), KEY, settings())
    b, _ = resolve(event(event_id="ev2"), AttributionProfile(), KEY, settings())
    other, _ = resolve(event(), AttributionProfile(), "KD-999", settings())
    assert a.anonymous_id == b.anonymous_id == state.anonymous_id == anonymous_id_for("test-ns", KEY)
    assert other.anonymous_id != a.anonymous_id
    assert anonymous_id_for("other-ns", KEY) != a.anonymous_id


def test_anonymous_id_stays_when_user_is_known() -> None:
    ident, _ = resolve(event(user_id="u1"), AttributionProfile(), KEY, settings())
    assert ident.anonymous_id == anonymous_id_for("test-ns", KEY)


# --- junk ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize("junk", ["anonymous", "null", "-1", "0", "", "00000000-0000-0000-0000-000000000000"])
def test_junk_user_id_is_never_an_identifier(junk: str) -> None:
    before = sample("kseg_identity_junk_ids_blocked_total", id_type="user_id")
    ident, new = resolve(event(user_id=junk), AttributionProfile(), KEY, settings())
    assert ident.user_id is None and ident.via == "anonymous"
    assert new.user_id is None
    assert sample("kseg_identity_junk_ids_blocked_total", id_type="user_id") == before + 1


def test_junk_user_id_emits_no_link() -> None:
    _, updates = observations(event(user_id="anonymous"), AttributionProfile(), KEY, settings())
    assert [u.kind for u in updates] == ["observed"] * 3


# --- PII -------------------------------------------------------------------------------------------


def test_email_is_trimmed_lowercased_and_hashed_raw_only_when_allowed() -> None:
    ident, new = resolve(event(email="  Jane.Doe@Example.COM "), AttributionProfile(), KEY, settings())
    assert ident.email_hash == sha("jane.doe@example.com")
    assert ident.email is None
    assert new.email_hash == sha("jane.doe@example.com")
    assert "jane" not in new.model_dump_json().lower()
    ident, _ = resolve(
        event(email=" Jane.Doe@Example.COM"),
        AttributionProfile(),
        KEY,
        settings(kseg_allow_raw_email_trait=True),
    )
    assert ident.email == "jane.doe@example.com"


def test_invalid_email_and_phone_are_not_hashed() -> None:
    ident, _ = resolve(event(email="not-an-email", phone="12345"), AttributionProfile(), KEY, settings())
    assert (ident.email_hash, ident.phone_hash, ident.via) == (None, None, "anonymous")


# --- shared devices and reassignment ---------------------------------------------------------------


def test_shared_device_resolves_explicit_user_but_never_links() -> None:
    state = AttributionProfile(device_shared=True, email_hash=sha("old@b.co"))
    ident, new = resolve(event(user_id="u9"), state, KEY, settings())
    assert ident.user_id == "u9"
    assert new.user_id is None
    ident, _ = resolve(event(), new, KEY, settings())
    assert (ident.user_id, ident.via, ident.email_hash) == (None, "anonymous", None)


def test_shared_device_postback_link_is_refused() -> None:
    state = AttributionProfile(device_shared=True)
    _, updates = observations(event(user_id="u9"), state, KEY, settings())
    assert all(u.kind == "observed" for u in updates)


def test_postback_reassignment_drops_previous_users_email_hash() -> None:
    state = AttributionProfile(user_id="u1", email_hash=sha("u1@b.co"))
    ident, new = resolve(event(user_id="u2"), state, KEY, settings())
    assert (ident.user_id, new.user_id) == ("u2", "u2")
    assert ident.email_hash is None and new.email_hash is None


# --- observations ----------------------------------------------------------------------------------


def test_observations_announce_new_ids_once() -> None:
    s = settings()
    state, updates = observations(event(), AttributionProfile(), KEY, s)
    assert [(u.kind, u.device, u.device_key) for u in updates] == [
        ("observed", f"kochava_device_id:{KEY}", KEY),
        ("observed", "idfa:IDFA-1", KEY),
        ("observed", "idfv:IDFV-1", KEY),
    ]
    state, updates = observations(event(), state, KEY, s)
    assert updates == []
    state, updates = observations(event(devices={"kochava_device_id": KEY, "idfv": "IDFV-2"}), state, KEY, s)
    assert [u.device for u in updates] == ["idfv:IDFV-2"]


def test_device_key_without_kochava_id_is_its_own_typed_id() -> None:
    assert typed_device_key("idfa:ABC") == "idfa:ABC"
    assert typed_device_key("gaid:abc") == "adid:abc"
    assert typed_device_key("KD-1") == "kochava_device_id:KD-1"
    _, updates = observations(event(devices={"idfa": "ABC"}), AttributionProfile(), "idfa:ABC", settings())
    assert [u.device for u in updates] == ["idfa:ABC"]


def test_ids_per_type_are_capped() -> None:
    s = settings(kseg_max_ids_per_profile=2)
    state = AttributionProfile()
    before = sample("kseg_identity_merges_refused_total", reason="cap")
    for i in range(4):
        state, _ = observations(event(devices={"kochava_device_id": KEY, "idfv": f"V{i}"}), state, KEY, s)
    assert [k for k in state.known_ids if k.startswith("idfv:")] == ["idfv:V0", "idfv:V1"]
    assert sample("kseg_identity_merges_refused_total", reason="cap") == before + 2
    _, updates = observations(
        event(devices={"kochava_device_id": KEY, "idfv": "V3"}, user_id="u1"), state, KEY, s
    )
    assert "idfv:V3" not in {u.device for u in updates}  # an id over the cap is never linked either


def test_ad_ids_ignored_when_ad_tracking_is_limited() -> None:
    _, updates = observations(event(ad_tracking_enabled=False), AttributionProfile(), KEY, settings())
    assert "idfa:IDFA-1" not in {u.device for u in updates}
    assert "idfv:IDFV-1" in {u.device for u in updates}


def test_postback_with_user_id_links_every_id_once_then_only_new_ids() -> None:
    s = settings()
    ev = event(user_id="u1", email="U1@x.io")
    state, updates = observations(ev, AttributionProfile(), KEY, s)
    links = [u for u in updates if u.kind == "link"]
    assert {u.device for u in links} == {f"kochava_device_id:{KEY}", "idfa:IDFA-1", "idfv:IDFV-1"}
    assert all(u.user_id == "u1" and u.email_hash == sha("u1@x.io") and u.device_key == KEY for u in links)
    state, updates = observations(ev, state, KEY, s)
    assert updates == []
    ev2 = event(user_id="u1", email="U1@x.io", devices={"kochava_device_id": KEY, "idfv": "IDFV-9"})
    _, updates = observations(ev2, state, KEY, s)
    assert [(u.kind, u.device) for u in updates] == [("observed", "idfv:IDFV-9"), ("link", "idfv:IDFV-9")]


def test_email_only_postback_emits_links() -> None:
    _, updates = observations(event(email="a@b.co"), AttributionProfile(), KEY, settings())
    links = [u for u in updates if u.kind == "link"]
    assert links and all(u.user_id is None and u.email_hash == sha("a@b.co") for u in links)
