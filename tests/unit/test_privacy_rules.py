"""The privacy rules with plain values: the API body, resolution through the index, targets, backoff."""

from __future__ import annotations

import pytest

from app.privacy.records import Covered, Subject, SubjectDevices, Target
from app.privacy.rules import (
    BodyError,
    Configured,
    IndexEntry,
    backoff,
    due,
    gone_by,
    initial_targets,
    new_request,
    parse_body,
    request_id,
    resolve,
    set_target,
    suppression_keys,
)

INDEX = [
    IndexEntry("kochava_device_id:K1", ["K1"], ["u1"]),
    IndexEntry("idfv:V1", ["K1"], ["u1"], anonymous_id="sdk-a1", email_hash="e" * 64),
    IndexEntry("kochava_device_id:K2", ["K2"], ["u1"]),
    IndexEntry("adid:A2", ["K2"], ["u1"]),
    IndexEntry("kochava_device_id:K9", ["K9"], ["u9"]),
]


def test_a_user_id_covers_every_device_and_all_their_ids() -> None:
    covered = resolve(Subject(user_id="u1"), INDEX)
    assert covered.device_keys == ["K1", "K2"]
    assert covered.typed_ids == ["adid:A2", "idfv:V1", "kochava_device_id:K1", "kochava_device_id:K2"]
    assert covered.anonymous_ids == ["sdk-a1"]
    assert covered.user_ids == ["u1"] and covered.email_hashes == ["e" * 64]
    assert covered.members == ["user:u1", f"email:{'e' * 64}", "device:K1", "device:K2"]
    assert suppression_keys(covered) == ["K1", "K2", "adid:A2", "gaid:A2", "idfv:V1"]


def test_a_device_id_covers_that_device_only() -> None:
    covered = resolve(Subject(devices=SubjectDevices(idfv="V1")), INDEX)
    assert covered.device_keys == ["K1"]
    assert covered.typed_ids == ["idfv:V1", "kochava_device_id:K1"]
    assert covered.user_ids == [] and "user:u1" not in covered.members


def test_an_unknown_device_is_still_covered_as_named() -> None:
    covered = resolve(Subject(devices=SubjectDevices(kochava_device_id="KNEW")), INDEX)
    assert covered.device_keys == ["KNEW"] and covered.typed_ids == ["kochava_device_id:KNEW"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"type": "erase", "user_id": "u"}, "invalid_type"),
        ({"type": "delete"}, "no_subject"),
        ({"type": "delete", "email": "a@b.example"}, "no_subject"),
        ({"type": "delete", "user_id": "u", "x": 1}, "unknown_fields"),
        ({"type": "delete", "devices": {"idfa": 5}}, "invalid_field"),
        ({"type": "delete", "devices": []}, "invalid_field"),
        ({"type": "delete", "user_id": "undefined"}, "invalid_user_id"),
    ],
)
def test_bad_bodies_name_their_problem(body: dict[str, object], code: str) -> None:
    with pytest.raises(BodyError) as err:
        parse_body(body)
    assert err.value.code == code


def test_the_email_is_kept_only_as_its_hash_and_ids_are_deterministic() -> None:
    kind, subject, reference = parse_body({"type": "delete", "user_id": "u1", "email": " Ada@Example.com "})
    assert subject.email_hash is not None and len(subject.email_hash) == 64
    assert "ada" not in subject.model_dump_json().lower()
    assert request_id(kind, subject, reference, "api") == request_id(kind, subject, reference, "api")
    assert request_id(kind, subject, "other", "api") != request_id(kind, subject, reference, "api")


def test_targets_say_why_they_are_skipped() -> None:
    anonymous = initial_targets("delete", Covered(typed_ids=["idfv:V"]), Configured(True, True))
    assert anonymous["segment"].status == "not_applicable" and "anonymousId" in (
        anonymous["segment"].reason or ""
    )
    unconfigured = initial_targets(
        "delete", Covered(user_ids=["u"], typed_ids=["idfv:V"]), Configured(False, False, False)
    )
    assert {k: t.status for k, t in unconfigured.items()} == {
        "suppression": "pending",
        "kseg_state": "pending",
        "warehouse": "not_configured",
        "segment": "not_configured",
        "kochava": "not_configured",
        "kafka_logs": "pending",
    }
    suppress = initial_targets("suppress", Covered(user_ids=["u"]), Configured(True, True))
    assert suppress["segment"].status == "pending" and suppress["kochava"].status == "not_applicable"


def test_backoff_doubles_to_its_cap_and_due_follows_it() -> None:
    assert [backoff(n, 30, 100) for n in (1, 2, 3, 4)] == [30, 60, 100, 100]
    assert due(Target(), 0) and not due(Target(status="done"), 0)
    assert not due(Target(status="failed", next_attempt_at=10), 5) and due(
        Target(status="failed", next_attempt_at=10), 10
    )
    assert not due(Target(status="failed", next_attempt_at=None), 1e12)  # gave up: a person must look


def test_history_and_completion_are_recorded() -> None:
    request = new_request("suppress", Subject(user_id="u"), None, "api", "2026-01-01T00:00:00.000Z")
    request = request.model_copy(update={"resolved": True})
    request = set_target(request, "segment", Target(status="failed", reason="503", next_attempt_at=5), "t1")
    request = set_target(request, "segment", Target(status="failed", reason="503", next_attempt_at=9), "t2")
    assert [(h.at, h.status) for h in request.history] == [("t1", "failed")]  # same status: no new line
    request = set_target(request, "segment", Target(status="done"), "t3")
    assert request.status == "done" and request.completed_at == "t3"


def test_kafka_gone_by_is_received_plus_the_longest_retention() -> None:
    assert gone_by("2026-01-01T00:00:00.000Z", [3_600_000, 86_400_000]) == "2026-01-02T00:00:00Z"
    assert gone_by("2026-01-01T00:00:00Z", []) is None
