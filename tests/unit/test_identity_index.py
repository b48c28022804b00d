"""Device index transitions: observed keys, links, shared-device threshold, reassignment, caps."""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.identity.agents import index_limits
from app.identity.index import apply_update, link_updates
from app.identity.records import DeviceIndexUpdate, DeviceRecord, LinkRequest
from app.records import DeviceIds

DEV = "idfa:IDFA-1"


def settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[call-arg]


def observed(key: str, at: str = "2024-05-01T10:00:00.000Z") -> DeviceIndexUpdate:
    return DeviceIndexUpdate(kind="observed", device=DEV, device_key=key, at=at)


def link(user: str | None, at: str = "2024-05-01T11:00:00.000Z", **kw: Any) -> DeviceIndexUpdate:
    return DeviceIndexUpdate(kind="link", device=DEV, user_id=user, at=at, source="api", **kw)


def run(updates: list[DeviceIndexUpdate], s: Settings | None = None) -> tuple[DeviceRecord | None, list[Any]]:
    record: DeviceRecord | None = None
    notices: list[Any] = []
    for update in updates:
        out = apply_update(record, update, index_limits(s or settings()))
        record = out.record
        notices.append(out)
    return record, notices


def test_observed_keys_are_recorded_without_notices_while_unlinked() -> None:
    record, outs = run([observed("K1"), observed("K2"), observed("K1")])
    assert record is not None and record.device_keys == ["K1", "K2"]
    assert all(o.notices == [] for o in outs)


def test_link_notifies_every_known_key() -> None:
    record, outs = run([observed("K1"), observed("K2"), link("u1", email_hash="h1")])
    notices = outs[-1].notices
    assert [(n.device_key, n.user_id, n.email_hash, n.shared, n.via) for n in notices] == [
        ("K1", "u1", "h1", False, DEV),
        ("K2", "u1", "h1", False, DEV),
    ]
    assert record is not None and record.user_id == "u1"


def test_new_key_of_a_linked_device_is_told() -> None:
    _, outs = run([link("u1"), observed("K1"), observed("K1")])
    assert [(n.device_key, n.user_id) for n in outs[1].notices] == [("K1", "u1")]
    assert outs[2].notices == []  # a known key is not told again


def test_same_link_again_sends_nothing() -> None:
    later = "2024-05-01T12:00:00.000Z"
    _, outs = run([observed("K1"), link("u1"), link("u1"), link("u1", at=later)])
    assert len(outs[1].notices) == 1
    assert outs[2].notices == []  # the same link again (an exact re-delivery)
    # The same person's newer link only tells the device the newer time, so an older link of someone else
    # arriving through another of its ids loses (the processing agent sends nothing to Segment for it).
    assert [(n.user_id, n.linked_at) for n in outs[3].notices] == [("u1", later)]


def test_reassigned_device_new_link_wins() -> None:
    record, outs = run([observed("K1"), link("u1"), link("u2", at="2024-05-02T00:00:00.000Z")])
    assert record is not None
    assert (record.user_id, record.user_ids, record.shared) == ("u2", ["u1", "u2"], False)
    assert [(n.device_key, n.user_id) for n in outs[-1].notices] == [("K1", "u2")]


def test_stale_replayed_link_does_not_take_the_device_back() -> None:
    record, outs = run(
        [observed("K1"), link("u2", at="2024-05-02T00:00:00.000Z"), link("u1", at="2024-05-01T00:00:00.000Z")]
    )
    assert record is not None and record.user_id == "u2"
    assert outs[-1].notices == []


def test_shared_device_never_merges_two_users() -> None:
    s = settings(kseg_shared_device_threshold=2)
    record, outs = run(
        [
            observed("K1"),
            observed("K2"),
            link("u1", at="2024-05-01T01:00:00.000Z"),
            link("u2", at="2024-05-01T02:00:00.000Z"),
            link("u3", at="2024-05-01T03:00:00.000Z"),
        ],
        s,
    )
    assert record is not None and record.shared and record.user_id is None
    shared = outs[-1].notices
    assert [(n.device_key, n.user_id, n.shared) for n in shared] == [("K1", None, True), ("K2", None, True)]
    assert outs[-1].refused == ["shared_device"]
    # After that: no link and no new key ever gets a user again.
    out = apply_update(record, link("u4", at="2024-06-01T00:00:00.000Z"), index_limits(s))
    assert out.notices == [] and out.refused == ["shared_device"] and out.record.user_id is None
    out = apply_update(record, observed("K3"), index_limits(s))
    assert out.notices == []
    assert out.record.conflicts == record.conflicts


def test_threshold_one_makes_any_second_user_shared() -> None:
    record, outs = run(
        [observed("K1"), link("u1"), link("u2", at="2024-05-03T00:00:00.000Z")],
        settings(kseg_shared_device_threshold=1),
    )
    assert record is not None and record.shared
    assert [n.shared for n in outs[-1].notices] == [True]


def test_device_keys_per_id_are_capped() -> None:
    s = settings(kseg_max_ids_per_profile=2)
    record, outs = run([observed("K1"), observed("K2"), observed("K3"), link("u1")], s)
    assert record is not None and record.device_keys == ["K1", "K2"]
    assert outs[2].refused == ["cap"]
    assert {n.device_key for n in outs[-1].notices} == {"K1", "K2"}


def test_email_only_link_is_passed_on_without_user() -> None:
    _, outs = run([observed("K1"), link(None, email_hash="h")])
    assert [(n.user_id, n.email_hash) for n in outs[-1].notices] == [(None, "h")]


def test_link_request_fans_out_one_update_per_device_id() -> None:
    req = LinkRequest(
        link_id="L1",
        source="api",
        user_id="u1",
        email_hash="h",
        devices=DeviceIds(kochava_device_id="KD", idfa="A", idfv="V", adid=None, android_id="0000"),
    )
    updates = link_updates(req)
    assert [(u.device, u.device_key, u.user_id, u.email_hash, u.ref) for u in updates] == [
        ("kochava_device_id:KD", "KD", "u1", "h", "L1"),
        ("idfa:A", None, "u1", "h", "L1"),
        ("idfv:V", None, "u1", "h", "L1"),
    ]


def test_link_request_validation() -> None:
    assert LinkRequest(
        link_id="x", source="api", user_id="anonymous", devices=DeviceIds(idfa="A")
    ).problem() == ("no_person_id")
    assert LinkRequest(
        link_id="x", source="api", user_id="u", devices=DeviceIds(idfa="0000-00")
    ).problem() == ("no_device_id")
    assert (
        LinkRequest(link_id="x", source="api", phone_hash="p", devices=DeviceIds(idfv="V")).problem() is None
    )
