"""Property tests: for any params, map_postback never raises, and what it returns is either a dead
letter with a known reason or an event whose Segment calls pass a strict Segment-acceptance check."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.attribution import apply_event
from app.identity.resolver import IdentityRules, resolve
from app.ids import clean_id
from app.mapping import (
    DEAD_LETTER_REASONS,
    ProfileRegistry,
    build_segment_calls,
    build_warehouse_row,
    map_postback,
)
from app.mapping.profile import FieldKeys
from app.records import AttributionProfile, CanonicalEvent, DeadLetter, RawPostback, device_key_of

PROFILE = ProfileRegistry.load(None).get("kochava-default")
KNOWN_KEYS = sorted({k for name in FieldKeys.model_fields for k in getattr(PROFILE.fields, name)})
MACRO_RE = re.compile(r"^\{[A-Za-z0-9_.]+\}$")
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
MAX_MESSAGE_BYTES = 32 * 1024

JUNK = [
    "",
    " ",
    "0",
    "-1",
    "null",
    "NULL",
    "None",
    "undefined",
    "{idfa}",
    "{adid}",
    "{event_name}",
    "00000000-0000-0000-0000-000000000000",
    "0000-0000",
    "anonymous",
    "n/a",
]
PLAUSIBLE = [
    "_install",
    "Purchase",
    "Subscribe",
    "Start Trial",
    "Level Complete",
    "reengagement",
    "install",
    "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "38400000-8cf0-11bd-b23e-10b96e40000d",
    "KI1234",
    "1735689600",
    "1735689600123",
    "2025-01-01 12:00:00",
    "2025-01-01T12:00:00+02:00",
    "9.99",
    "usd",
    "EUR",
    "false",
    "true",
    "ios",
    "android",
    "203.0.113.7",
    '[{"content_id":"a","sum":"1.5"}]',
    '{"level":3}',
    "u_42",
    "a@b.co",
    "+44 20 7946 0958",
]

scalars = st.one_of(
    st.text(max_size=60),
    st.sampled_from(JUNK + PLAUSIBLE),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
keys = st.one_of(
    st.sampled_from(KNOWN_KEYS),
    st.text(min_size=1, max_size=20),
    st.sampled_from(["token", "Api_Key", "EVENT_NAME", "IDFA", "Idfv", "level", "score"]),
)
arbitrary_params = st.dictionaries(keys, values, max_size=25)
# Mostly-valid postbacks, so the CanonicalEvent branch is exercised as much as the dead-letter one:
# fields with a strict format draw from valid forms (or junk), everything else from anything.
F = PROFILE.fields
VALID_BY_FIELD: dict[str, list[Any]] = {
    **{
        key: [
            "1735689600",
            1735689600123,
            "2025-01-01 12:00:00",
            "2025-01-01T12:00:00Z",
            "2025-06-30T23:59:59.999-07:00",
        ]
        for key in F.timestamp
    },
    **{key: ["9.99", "0", 12, 0.5, "1e3", "1000000"] for key in F.revenue},
    **{key: ["usd", "EUR", " jpy "] for key in F.currency},
    **{key: ['[{"content_id":"a","sum":"1.5","quantity":2}]', [{"sku": "x"}], "[]"] for key in F.products},
    **{
        key: ["_install", "Purchase", "Subscribe", "Start Trial", "Level Complete", "Ünïcødé 🎉"]
        for key in F.event_name
    },
}
free_value = st.one_of(st.sampled_from(JUNK + PLAUSIBLE), st.text(max_size=40), st.integers(), st.booleans())


def _field_value(key: str) -> st.SearchStrategy[Any]:
    if key in VALID_BY_FIELD:
        return st.one_of(st.sampled_from(VALID_BY_FIELD[key]), st.sampled_from(JUNK))
    return free_value


extra_params = st.dictionaries(
    st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["token", "Api_Key", "level", "hero"])),
    values,
    max_size=10,
)
likely_params = st.fixed_dictionaries(
    {
        "event_name": st.sampled_from(VALID_BY_FIELD["event_name"]),
        "kochava_device_id": st.sampled_from(["KI1234", "{kochava_device_id}", "KIABCDEF0123"]),
    },
    optional={k: _field_value(k) for k in KNOWN_KEYS if k not in ("event_name", "kochava_device_id")},
).flatmap(lambda base: extra_params.map(lambda extra: {**extra, **base}))
params_strategy = st.one_of(arbitrary_params, likely_params)


def strict_problems(msg: dict[str, Any]) -> list[str]:
    """What Segment would drop after a 200 (docs/reference.md#segment-silent-200), checked independently."""
    found = []
    if msg.get("type") not in ("track", "identify"):
        found.append("type")
    mid = msg.get("messageId")
    if not (isinstance(mid, str) and 0 < len(mid) < 100):
        found.append("messageId")
    if not (isinstance(msg.get("timestamp"), str) and ISO_RE.match(msg["timestamp"])):
        found.append("timestamp")
    ids = [msg.get("userId"), msg.get("anonymousId")]
    if any(i is not None and not isinstance(i, str) for i in ids):
        found.append("id_not_string")
    if not any(isinstance(i, str) and i.strip() for i in ids):
        found.append("no_user_anon_id")
    if msg["type"] == "track":
        if not (isinstance(msg.get("event"), str) and msg["event"].strip()):
            found.append("event")
        if not isinstance(msg.get("properties"), dict):
            found.append("properties")
    if msg["type"] == "identify" and not isinstance(msg.get("traits"), dict):
        found.append("traits")
    device = msg.get("context", {}).get("device", {})
    if "advertisingId" in device and not (
        isinstance(device["advertisingId"], str) and device["advertisingId"]
    ):
        found.append("advertisingId")
    if "adTrackingEnabled" in device and not isinstance(device["adTrackingEnabled"], bool):
        found.append("adTrackingEnabled")
    try:
        encoded = json.dumps(msg, allow_nan=False, ensure_ascii=False).encode("utf-8")
        orjson.dumps(msg)
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        found.append(f"json: {exc}")
    else:
        if len(encoded) > MAX_MESSAGE_BYTES:
            found.append(f"size {len(encoded)}")
    return found


def _map(params: dict[str, Any], event_id: str = "evt") -> CanonicalEvent | DeadLetter:
    raw = RawPostback(event_id=event_id, received_at="2025-03-01T10:00:05.123Z", params=params)
    return map_postback(raw, PROFILE, "prop-ns")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=params_strategy, prior_params=params_strategy)
def test_any_params_map_to_valid_calls_or_a_known_dead_letter(
    params: dict[str, Any], prior_params: dict[str, Any]
) -> None:
    result = _map(params)
    if isinstance(result, DeadLetter):
        assert result.reason in DEAD_LETTER_REASONS
        assert result.reason != "mapping_error", result.error  # an internal bug, never expected
        assert result.stage == "mapping" and result.error
        orjson.dumps(result.model_dump(mode="json"))  # the dead letter itself must serialise
        return
    prior = AttributionProfile()
    earlier = _map(prior_params, "earlier")
    if isinstance(earlier, CanonicalEvent):
        prior, _ = apply_event(prior, earlier)
    state, first = apply_event(prior, result)
    key = device_key_of(params) or "prop-device"
    identity, _ = resolve(result, prior, key, IdentityRules("prop-ns"))
    calls = build_segment_calls(result, identity, state, first_install=first)
    assert calls and any(c["type"] == "track" for c in calls)
    for call in calls:
        assert strict_problems(call) == [], call
    assert len({c["messageId"] for c in calls}) == len(calls)
    row = build_warehouse_row(result, identity, state)
    orjson.dumps(row)


@settings(max_examples=200, deadline=None)
@given(params=params_strategy)
def test_mapping_is_deterministic(params: dict[str, Any]) -> None:
    first, second = _map(params), _map(params)
    if isinstance(first, CanonicalEvent):
        assert first == second
    else:
        assert isinstance(second, DeadLetter) and (first.reason, first.error) == (second.reason, second.error)


@settings(max_examples=200, deadline=None)
@given(params=params_strategy)
def test_mapped_ids_are_never_junk(params: dict[str, Any]) -> None:
    result = _map(params)
    if isinstance(result, CanonicalEvent):
        for value in result.devices.model_dump().values():
            assert value is None or (clean_id(value) == value and not MACRO_RE.match(value))


def test_strict_check_catches_bad_messages() -> None:
    """The checker above must be able to fail, or the property proves nothing."""
    good = {
        "type": "track",
        "messageId": "m",
        "timestamp": "2025-01-01T00:00:00.000Z",
        "anonymousId": "a",
        "event": "E",
        "properties": {},
        "context": {"device": {"advertisingId": "x"}},
    }
    assert strict_problems(good) == []
    for broken in (
        {**good, "messageId": "m" * 100},
        {**good, "anonymousId": ""},
        {**good, "event": " "},
        {**good, "timestamp": "2025-01-01"},
        {**good, "context": {"device": {"advertisingId": 5}}},
        {**good, "properties": {"x": "y" * 40_000}},
        {**good, "properties": {"n": float("nan")}},
    ):
        assert strict_problems(broken), broken
