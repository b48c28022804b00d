"""First-touch inheritance: a reinstall on a new device key inherits the original install's first touch
through the device index (index transition, adoption rule, observed updates, and the whole chain)."""

from __future__ import annotations

from typing import Any

from app import topics
from app.config import Settings
from app.identity.agents import index_limits
from app.identity.index import apply_update
from app.identity.late_auth import adopt_first_touch, apply_link
from app.identity.records import DeviceIndexUpdate, DeviceRecord
from app.records import Attribution, AttributionProfile, DeviceLinked
from tests.pipeline_tables import Tables, raw

DEV = "idfv:IDFV-1"
SPRING = Attribution(network="Facebook", campaign="spring", attributed_at="2024-05-01T10:00:00.000Z")
RETARGET = Attribution(network="Retargeter", campaign="winback", attributed_at="2024-06-01T10:00:00.000Z")


def settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, kseg_namespace="test-ns", **kw)  # type: ignore[call-arg]


def observed(key: str, touch: Attribution | None = None, **kw: Any) -> DeviceIndexUpdate:
    return DeviceIndexUpdate(kind="observed", device=DEV, device_key=key, first_touch=touch, **kw)


def link(user: str, at: str = "2024-05-01T11:00:00.000Z") -> DeviceIndexUpdate:
    return DeviceIndexUpdate(kind="link", device=DEV, user_id=user, at=at, source="api")


def run(updates: list[DeviceIndexUpdate], s: Settings | None = None) -> tuple[DeviceRecord, list[Any]]:
    record: DeviceRecord | None = None
    outs: list[Any] = []
    for update in updates:
        out = apply_update(record, update, index_limits(s or settings()))
        record = out.record
        outs.append(out)
    assert record is not None
    return record, outs


# -- index transition ----------------------------------------------------------------------------


def test_index_remembers_the_first_first_touch_and_never_overwrites_it() -> None:
    record, _ = run([observed("KA", SPRING, install_id="I-A"), observed("KC", RETARGET, install_id="I-C")])
    assert record.first_touch == SPRING
    assert (record.install_id, record.first_touch_key) == ("I-A", "KA")


def test_new_device_key_inherits_the_first_touch() -> None:
    _, outs = run([observed("KA", SPRING, install_id="I-A"), observed("KB", reprocess_for="I-A")])
    assert outs[0].notices == []
    [notice] = outs[1].notices
    assert (notice.device_key, notice.first_touch, notice.install_id) == ("KB", SPRING, "I-A")
    assert notice.user_id is None and not notice.shared
    assert notice.confirmed  # reprocess_for names the remembered install


def test_inheritance_without_reprocess_for_is_unconfirmed_but_sent() -> None:
    _, outs = run([observed("KA", SPRING, install_id="I-A"), observed("KB", reprocess_for="I-other")])
    [notice] = outs[1].notices
    assert notice.first_touch == SPRING and not notice.confirmed


def test_no_inheritance_for_the_origin_a_known_key_or_a_key_with_its_own_first_touch() -> None:
    _, outs = run(
        [
            observed("KA", SPRING, install_id="I-A"),
            observed("KA"),  # the origin again
            observed("KB"),
            observed("KB"),  # already told
            observed("KC", RETARGET, install_id="I-C"),  # has its own install
        ]
    )
    assert [len(o.notices) for o in outs] == [0, 0, 1, 0, 0]


def test_key_seen_before_the_first_touch_gets_nothing_later() -> None:
    """The original install announces its own first touch; nothing is sent back to earlier keys."""
    _, outs = run([observed("KB"), observed("KA", SPRING, install_id="I-A")])
    assert all(o.notices == [] for o in outs)


def test_linked_record_tells_a_new_key_its_user_and_first_touch_in_one_notice() -> None:
    _, outs = run([observed("KA", SPRING, install_id="I-A"), link("u1"), observed("KB")])
    [notice] = outs[-1].notices
    assert (notice.device_key, notice.user_id, notice.first_touch) == ("KB", "u1", SPRING)


def test_link_notices_to_known_keys_carry_no_first_touch() -> None:
    _, outs = run([observed("KA", SPRING, install_id="I-A"), observed("KB"), link("u1")])
    assert [(n.device_key, n.first_touch) for n in outs[-1].notices] == [("KA", None), ("KB", None)]


def test_shared_id_passes_no_first_touch() -> None:
    s = settings(kseg_shared_device_threshold=1)
    record, outs = run(
        [observed("KA", SPRING, install_id="I-A"), link("alice"), link("bob"), observed("KB")], s
    )
    assert record.shared
    assert outs[-1].notices == []


def test_every_reinstall_observation_gets_exactly_one_answer() -> None:
    s = settings(kseg_shared_device_threshold=1)
    # With a first touch to inherit: one notice, carrying it and marked as the answer.
    _, outs = run([observed("KA", SPRING, install_id="I-A"), observed("KB", reprocess_for="I-A")])
    [answer] = outs[1].notices
    assert answer.answers_reinstall and answer.first_touch == SPRING and answer.device_key == "KB"
    # Nothing to inherit (unknown id, or a shared one): still one bare answer, so the device stops waiting.
    _, outs = run([observed("KB", reprocess_for="I-A")])
    [bare] = outs[0].notices
    assert bare.answers_reinstall and bare.first_touch is None and bare.user_id is None
    _, outs = run(
        [observed("KA", SPRING), link("alice"), link("bob"), observed("KB", reprocess_for="I-A")], s
    )
    [bare] = outs[-1].notices
    assert bare.answers_reinstall and bare.first_touch is None and not bare.shared
    # An ordinary observation (no reprocess_for) is not answered.
    _, outs = run([observed("KC")])
    assert outs[0].notices == []


def test_over_cap_key_inherits_only_when_reprocess_for_confirms() -> None:
    s = settings(kseg_max_ids_per_profile=1)
    _, outs = run(
        [observed("KA", SPRING, install_id="I-A"), observed("KB"), observed("KC", reprocess_for="I-A")], s
    )
    assert outs[1].notices == [] and outs[1].refused == ["cap"]
    [notice] = outs[2].notices
    assert (notice.device_key, notice.first_touch, notice.confirmed, notice.user_id) == (
        "KC",
        SPRING,
        True,
        None,
    )


# -- adoption rule -------------------------------------------------------------------------------


def inherit_notice(**kw: Any) -> DeviceLinked:
    return DeviceLinked(device_key="KB", via=DEV, first_touch=SPRING, install_id="I-A", **kw)


def test_device_without_first_touch_adopts_it() -> None:
    adopted = adopt_first_touch(AttributionProfile(), inherit_notice())
    assert adopted.first_touch == SPRING and adopted.install_id == "I-A"


def test_adoption_keeps_the_reinstalls_own_install_id() -> None:
    adopted = adopt_first_touch(AttributionProfile(install_id="I-reprocess"), inherit_notice())
    assert adopted.first_touch == SPRING and adopted.install_id == "I-reprocess"


def test_adoption_never_overwrites_a_first_touch() -> None:
    state = AttributionProfile(first_touch=RETARGET, install_id="I-B")
    assert adopt_first_touch(state, inherit_notice()) == state


def test_shared_device_or_shared_notice_adopts_nothing() -> None:
    assert adopt_first_touch(AttributionProfile(device_shared=True), inherit_notice()).first_touch is None
    assert adopt_first_touch(AttributionProfile(), inherit_notice(shared=True)).first_touch is None


def test_inheritance_only_notice_sends_nothing_but_adopts() -> None:
    state, messages = apply_link(AttributionProfile(anonymous_events=2), inherit_notice(), "KB", settings())
    assert messages == [] and state.first_touch == SPRING and state.user_id is None


def test_inherited_first_touch_is_on_the_first_link_identify() -> None:
    notice = inherit_notice(user_id="u1")
    state, messages = apply_link(AttributionProfile(anonymous_events=1), notice, "KB", settings())
    identify = next(m for m in messages if m["type"] == "identify")
    assert identify["traits"]["kochava_campaign"] == "spring"
    assert state.user_id == "u1"


# -- observed updates carry the first touch (through the processing agent's real steps) ---------------


def install_params(key: str, **kw: Any) -> dict[str, Any]:
    return {
        "event_name": "_install",
        "kochava_device_id": key,
        "idfv": "IDFV-1",
        "network_name": "Facebook",
        "campaign_name": "spring",
        "install_id": f"I-{key}",
        "timestamp": "1714557600",
        **kw,
    }


def index_updates(t: Tables) -> list[DeviceIndexUpdate]:
    return [DeviceIndexUpdate.model_validate(v) for v in t.take(topics.DEVICE_INDEX)]


def test_install_announces_its_ids_with_the_first_touch() -> None:
    t = Tables()
    t.run([("KA", raw(install_params("KA")))])
    assert sorted((u.device, u.first_touch is not None, u.install_id) for u in index_updates(t)) == [
        ("idfv:IDFV-1", True, "I-KA"),
        ("kochava_device_id:KA", True, "I-KA"),
    ]


def test_install_after_earlier_events_re_announces_known_ids() -> None:
    t = Tables()
    t.run(
        [
            (
                "KA",
                raw(
                    {
                        "event_name": "x",
                        "kochava_device_id": "KA",
                        "idfv": "IDFV-1",
                        "timestamp": "1714557500",
                    }
                ),
            )
        ]
    )
    updates = index_updates(t)
    assert all(u.first_touch is None for u in updates) and len(updates) == 2
    t.run([("KA", raw(install_params("KA")))])
    assert sorted(u.device for u in index_updates(t) if u.first_touch) == [DEV, "kochava_device_id:KA"]


def test_shared_device_announces_no_first_touch() -> None:
    t = Tables()
    t.profiles["KA"] = AttributionProfile(device_shared=True).model_dump(mode="json")
    t.run([("KA", raw(install_params("KA")))])
    updates = index_updates(t)
    assert updates and all(u.first_touch is None for u in updates)
