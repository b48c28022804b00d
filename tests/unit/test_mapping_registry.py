"""The mapping registry's records and rules, drift detection and quarantine, with plain values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from app.config import Settings
from app.mapping.drift import DriftReport, DriftTracker, aggregate, observe
from app.mapping.mapper import map_postback
from app.mapping.profile import BUILTIN_PROFILE_DIR, MappingProfile, ProfileRegistry, parse_profile_text
from app.mapping.registry import (
    ProfilePointer,
    ProfileVersion,
    RegistryState,
    content_hash,
    decode_record,
    publish_problems,
    record_key,
)
from app.pipeline.registry import golden_samples, sample_problems
from app.pipeline.steps import StepConfig
from app.records import CanonicalEvent, DeadLetter, RawPostback, postback_event_id

TEXT = (BUILTIN_PROFILE_DIR / "kochava-default.yaml").read_text()
DEFAULT = ProfileRegistry.load(None).get("kochava-default")


def version(v: str, text: str = TEXT) -> ProfileVersion:
    return ProfileVersion(
        name="kochava-default", version=v, yaml=text, sha256=content_hash(text), published_at="t", author="a"
    )


def profile(text: str) -> MappingProfile:
    parsed, problems = parse_profile_text(text, "p.yaml")
    assert parsed is not None, problems
    return parsed


def test_keys_keep_every_version_and_the_newest_pointer_under_compaction() -> None:
    pointer = ProfilePointer(kind="active", name="kochava-default", version="2", at="t", author="a")
    assert record_key(version("2")) == b"version/kochava-default/2"
    assert record_key(version("3")) != record_key(version("2"))
    assert record_key(pointer) == b"active/kochava-default"
    assert record_key(pointer.model_copy(update={"version": "3"})) == record_key(pointer)
    assert decode_record(version("2").encode()) == version("2")
    assert decode_record(pointer.encode()) == pointer
    assert decode_record(b"not json") is None and decode_record(None) is None


def test_the_state_follows_the_newest_pointer() -> None:
    state = RegistryState()
    for record in (
        version("2"),
        version("3"),
        ProfilePointer(kind="active", name="kochava-default", version="3", at="t", author="a"),
    ):
        state.apply(record)
    assert state.active_version("kochava-default") == version("3")
    state.apply(ProfilePointer(kind="active", name="kochava-default", version="2", at="t2", author="a"))
    assert state.active_version("kochava-default") == version("2")
    assert state.active_version("other") is None


def test_a_published_version_cannot_change_its_content() -> None:
    state = RegistryState()
    state.apply(version("2"))
    assert publish_problems("p.yaml", TEXT, DEFAULT, state) == []  # the same text again: fine
    changed = TEXT.replace("Level Completed", "Level Done")
    [problem] = publish_problems("p.yaml", changed, profile(changed), state)
    assert problem.line == 6 and "already published with different content" in problem.message


def test_samples_are_the_golden_inputs() -> None:
    golden = Path(__file__).resolve().parents[1] / "golden"
    expected = {}
    for path in sorted(golden.glob("*.json")):
        case = json.loads(path.read_text())
        inp = case["input"]
        params = dict(parse_qsl(inp["query"], keep_blank_values=True)) if "query" in inp else inp["json"]
        expected[path.stem] = {k: v for k, v in params.items() if k != "token"}
    assert {s.name: s.params for s in golden_samples()} == expected


def test_a_candidate_that_dead_letters_what_the_active_version_maps_is_refused() -> None:
    config = StepConfig(Settings(), ProfileRegistry({}))
    assert sample_problems("p.yaml", TEXT, DEFAULT, DEFAULT, config) == []
    broken = TEXT.replace("event_name: [event_name]", "event_name: [evt]")
    problems = sample_problems("p.yaml", broken, profile(broken), DEFAULT, config)
    assert len(problems) == len(golden_samples())
    assert all("dead-letters it (missing_event_name" in p.message for p in problems)
    assert problems[0].line == broken.splitlines().index("  event_name: [evt]") + 1
    # A new name has no version to compare with: only a mapping crash would count.
    assert sample_problems("p.yaml", broken, profile(broken), None, config) == []


def _raw(**params: Any) -> RawPostback:
    return RawPostback(event_id=postback_event_id(params), received_at="2025-01-01T00:00:00Z", params=params)


def test_quarantine_dead_letters_only_events_the_profile_does_not_name() -> None:
    strict = profile(TEXT + "unknown_events: quarantine\n")
    letter = map_postback(_raw(event_name="Boss Defeated", kochava_device_id="KI1"), strict, "ns")
    assert isinstance(letter, DeadLetter) and letter.reason == "unknown_event"
    assert letter.payload["kind"] == "postback"  # replayable
    for name in ("Level Complete", "Purchase", "Subscribe", "_install"):
        assert isinstance(
            map_postback(_raw(event_name=name, kochava_device_id="KI1"), strict, "ns"), CanonicalEvent
        )
    sent = map_postback(_raw(event_name="Boss Defeated", kochava_device_id="KI1"), DEFAULT, "ns")
    assert isinstance(sent, CanonicalEvent) and sent.segment_event_name == "Boss Defeated"


def test_drift_names_unknown_keys_events_and_parse_failures_without_raw_ids() -> None:
    params = {
        "event_name": "Purchase",
        "kochava_device_id": "KI1",
        "event_value": "12,50",
        "promo": "X1",
        "contact": "jane@example.com",
        "ref_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
        "user_idfa_copy": "6D92078A",
    }
    result = map_postback(_raw(**params), DEFAULT, "ns")
    assert isinstance(result, DeadLetter)
    seen = {(kind, item): example for kind, item, example in observe(params, DEFAULT, result)}
    assert seen[("unknown_key", "promo")] == "X1"
    assert seen[("unknown_key", "contact")].startswith("sha256:")
    assert seen[("unknown_key", "ref_id")] == "<id-like, 36 chars>"
    assert ("unknown_key", "user_idfa_copy") not in seen  # drop_params name it
    assert seen[("parse_failure", "invalid_revenue:event_value")] == "12,50"
    assert not [k for k in seen if k[0] == "unknown_event"]
    other = {"event_name": "Boss Defeated", "kochava_device_id": "KI1"}
    event = map_postback(_raw(**other), DEFAULT, "ns")
    assert isinstance(event, CanonicalEvent)
    assert observe(other, DEFAULT, event) == [("unknown_event", "Boss Defeated", "Boss Defeated")]


def test_workers_reports_add_up() -> None:
    counted: list[tuple[str, str, str]] = []
    one, two = DriftTracker(lambda *labels: counted.append(labels)), DriftTracker()
    params = {"event_name": "Level Complete", "kochava_device_id": "KI1", "promo": "A"}
    event = map_postback(_raw(**params), DEFAULT, "ns")
    assert isinstance(event, CanonicalEvent)
    one.note(params, DEFAULT, event, "2025-01-01T00:00:02Z")
    one.note({**params, "promo": "B"}, DEFAULT, event, "2025-01-01T00:00:03Z")
    two.note({**params, "promo": "C"}, DEFAULT, event, "2025-01-01T00:00:01Z")
    assert counted == [("kochava-default", "2", "unknown_key")] * 2
    reports = [
        DriftReport(worker=w, run="r", at="t", entries=list(t.entries.values()))
        for w, t in (("w1", one), ("w2", two))
    ]
    [entry] = aggregate(reports, "kochava-default")
    assert (entry.item, entry.count, entry.first_seen, entry.last_seen, entry.example) == (
        "promo",
        3,
        "2025-01-01T00:00:01Z",
        "2025-01-01T00:00:03Z",
        "C",
    )
    assert aggregate(reports, "other") == []
