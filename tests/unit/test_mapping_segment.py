"""Output builders: Segment calls per kind (spec details) and the warehouse row vs its JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from app.attribution import apply_event
from app.lifecycle.config import LifecycleConfig
from app.lifecycle.currency import load_rates
from app.mapping import ProfileRegistry, build_segment_calls, build_warehouse_row, event_outputs, map_postback
from app.mapping.segment import call_message_id
from app.records import Attribution, AttributionProfile, CanonicalEvent, RawPostback, ResolvedIdentity

PROFILE = ProfileRegistry.load(None).get("kochava-default")
LIFECYCLE = LifecycleConfig(rates=load_rates(None, "USD"), rules=PROFILE.lifecycle)
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
ZERO = "00000000-0000-0000-0000-000000000000"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "topics" / "schemas" / "warehouse-row.schema.json"
ANON = ResolvedIdentity(anonymous_id="anon-1")
FIRST = Attribution(
    network="N0",
    campaign="C0",
    ad_group="G0",
    creative="K0",
    site="S0",
    attributed_at="2025-01-01T00:00:00.000Z",
)


def ev(event_id: str = "e", **params: Any) -> CanonicalEvent:
    result = map_postback(
        RawPostback(event_id=event_id, received_at="2025-03-01T00:00:00.000Z", params=params), PROFILE, "ns"
    )
    assert isinstance(result, CanonicalEvent), result
    return result


def run(
    event: CanonicalEvent, prior: AttributionProfile | None = None, identity: ResolvedIdentity = ANON
) -> list[dict[str, Any]]:
    state, first = apply_event(prior or AttributionProfile(), event)
    return build_segment_calls(event, identity, state, first_install=first)


def run_all(
    event: CanonicalEvent, prior: AttributionProfile | None = None, identity: ResolvedIdentity = ANON
) -> list[dict[str, Any]]:
    """The calls the worker sends for `event`: mapping plus the lifecycle traits that changed."""
    return event_outputs(event, identity, prior or AttributionProfile(), LIFECYCLE).calls


def by_type(calls: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["event"] if c["type"] == "track" else c["type"]: c for c in calls}


def test_first_install_sets_first_touch_traits_later_install_does_not() -> None:
    install = ev(event_name="_install", idfa=IDFA, network_name="N1", campaign="C1", install_id="i1")
    calls = by_type(run(install))
    assert calls["identify"]["traits"]["kochava_network"] == "N1"
    props = calls["Install Attributed"]["properties"]
    assert props["provider"] == "Kochava" and props["campaign"] == {"source": "N1", "name": "C1"}
    assert "reinstall" not in props

    prior = AttributionProfile(first_touch=FIRST, install_id="i0")
    later = by_type(
        run(ev("e2", event_name="_install", idfa=IDFA, network_name="N2", install_id="i9"), prior)
    )
    traits = later["identify"]["traits"]
    assert not any(k.startswith("kochava_") for k in traits)
    assert traits["last_reinstall_network"] == "N2"
    assert later["Install Attributed"]["properties"]["reinstall"] is True
    assert later["Install Attributed"]["properties"]["original_install_id"] == "i0"


def test_reengagement_adds_track_and_traits() -> None:
    calls = by_type(
        run(
            ev(
                event_name="Purchase",
                idfa=IDFA,
                attribution_type="reengagement",
                network_name="R",
                campaign="W",
                event_value="1",
            )
        )
    )
    assert set(calls) == {"identify", "Order Completed", "Re-engagement Attributed"}
    assert calls["Re-engagement Attributed"]["properties"]["campaign"] == {"source": "R", "name": "W"}
    traits = calls["identify"]["traits"]
    assert traits["last_reengagement_network"] == "R" and traits["last_reengagement_campaign"] == "W"


def test_purchase_is_enriched_with_first_touch() -> None:
    calls = by_type(
        run(
            ev(event_name="Purchase", idfa=IDFA, event_value="5", currency="USD", order_id="o1"),
            AttributionProfile(first_touch=FIRST),
        )
    )
    props = calls["Order Completed"]["properties"]
    assert props["revenue"] == 5.0 and isinstance(props["revenue"], float)
    assert props["campaign"] == {
        "source": "N0",
        "name": "C0",
        "content": "S0",
        "ad_creative": "K0",
        "ad_group": "G0",
    }
    assert (props["install_network"], props["install_campaign"]) == ("N0", "C0")
    assert "identify" not in calls


def test_conversion_sets_converted_traits() -> None:
    prior = AttributionProfile()
    calls = by_type(run_all(ev(event_name="Subscribe", idfa=IDFA, timestamp="1736000000"), prior))
    assert calls["identify"]["traits"] == {
        "converted_at": "2025-01-04T14:13:20.000Z",
        "conversion_name": "Subscription Started",
        "lifecycle_stage": "converted",
        "ad_suppressed": True,
        "ad_suppressed_at": "2025-01-04T14:13:20.000Z",
        "ad_suppression_reason": "conversion:Subscription Started",
    }


def test_generic_event_keeps_data_and_drops_credentials() -> None:
    calls = run(ev(event_name="Tutorial Complete", idfa=IDFA, step="4", token="secret"))
    assert [c["type"] for c in calls] == ["track"]
    assert calls[0]["event"] == "Tutorial Completed" and calls[0]["properties"] == {"step": "4"}


def test_zeroed_ad_id_is_omitted_and_tracking_disabled() -> None:
    device = run(ev(event_name="X", idfa=ZERO, idfv=IDFA))[0]["context"]["device"]
    assert device == {"id": IDFA, "adTrackingEnabled": False, "type": "ios"}


def test_user_id_and_hashed_email_only() -> None:
    ident = ResolvedIdentity(user_id="u1", anonymous_id="a1", via="user_id", email_hash="h" * 64)
    calls = run_all(ev(event_name="Subscribe", idfa=IDFA), identity=ident)
    identify = by_type(calls)["identify"]
    assert identify["userId"] == "u1" and identify["anonymousId"] == "a1"
    assert identify["traits"]["email_sha256"] == "h" * 64 and "email" not in identify["traits"]
    raw_ok = ResolvedIdentity(anonymous_id="a1", email_hash="h" * 64, email="a@b.co")
    assert (
        by_type(run_all(ev(event_name="Subscribe", idfa=IDFA), identity=raw_ok))["identify"]["traits"][
            "email"
        ]
        == "a@b.co"
    )


def test_message_ids_deterministic_distinct_and_derived() -> None:
    event = ev(event_name="_install", idfa=IDFA, attribution_type="reengagement", network_name="R")
    calls = run(event)
    ids = [c["messageId"] for c in calls]
    assert len(set(ids)) == len(ids) == 3
    assert ids == [c["messageId"] for c in run(event)]
    assert call_message_id(event, "track") == event.message_id in ids
    assert call_message_id(event, "identify") in ids


def test_context_is_fresh_per_call() -> None:
    calls = run_all(ev(event_name="Subscribe", idfa=IDFA))
    calls[0]["context"]["library"]["name"] = "mutated"
    assert calls[1]["context"]["library"]["name"] == "kseg"


def test_context_carries_kseg_metadata() -> None:
    ctx = run(ev(event_name="X", idfa=IDFA, kochava_device_id="KI1", device_ua="UA", ip="203.0.113.1"))[0][
        "context"
    ]
    assert ctx["kseg"] == {
        "profile": "kochava-default",
        "profile_version": PROFILE.version,
        "event_id": "e",
        "kochava_device_id": "KI1",
    }
    assert (ctx["ip"], ctx["userAgent"], ctx["library"]) == ("203.0.113.1", "UA", {"name": "kseg"})


# --- warehouse ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize(
    "params",
    [
        {"event_name": "_install", "idfa": IDFA, "network_name": "N", "install_id": "i"},
        {"event_name": "_install", "adid": "38400000-8cf0-11bd-b23e-10b96e40000d", "reprocess_for": "o"},
        {
            "event_name": "Purchase",
            "idfa": IDFA,
            "event_value": "3",
            "currency": "usd",
            "products": '[{"content_id": "a"}]',
            "attribution_type": "reengagement",
        },
        {"event_name": "Subscribe", "user_id": "u"},
        {"event_name": "Level Complete", "kochava_device_id": "KI1", "level": "3"},
    ],
)
def test_rows_validate_against_schema(
    validator: jsonschema.Draft202012Validator, params: dict[str, Any]
) -> None:
    event = ev(**params)
    ident = ResolvedIdentity(anonymous_id="a", email_hash="0" * 64)
    state, _ = apply_event(AttributionProfile(first_touch=FIRST), event)
    row = build_warehouse_row(event, ident, state)
    errors = sorted(validator.iter_errors(row), key=str)
    assert not errors, errors


def test_schema_rejects_a_broken_row(validator: jsonschema.Draft202012Validator) -> None:
    """Guards against a schema so loose that the test above could never fail."""
    event = ev(event_name="Purchase", idfa=IDFA, event_value="3")
    row = build_warehouse_row(event, ANON, AttributionProfile())
    for broken in (
        {**row, "revenue": "3"},
        {**row, "extra": 1},
        {**row, "event_time": "yesterday"},
        {k: v for k, v in row.items() if k != "profile"},
        {**row, "event_type": "other"},
    ):
        assert list(validator.iter_errors(broken))


def test_schema_columns_match_builder() -> None:
    from app.mapping import WAREHOUSE_COLUMNS

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert tuple(schema["properties"]) == WAREHOUSE_COLUMNS
    assert schema["required"] == list(WAREHOUSE_COLUMNS)


def test_a_row_has_exactly_the_columns_in_their_order() -> None:
    """`build_warehouse_row` writes its columns in `WAREHOUSE_COLUMNS` order, with no reordering pass."""
    from app.mapping import WAREHOUSE_COLUMNS

    for event in (
        ev(event_name="Purchase", idfa=IDFA, event_value="3"),
        ev(event_name="_install", idfa=IDFA),
    ):
        assert tuple(build_warehouse_row(event, ANON, AttributionProfile())) == WAREHOUSE_COLUMNS
