"""app.lifecycle: channel table, stages, win-back and ad suppression, LTV in the reporting currency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.identity.resolver import IdentityRules, resolve
from app.lifecycle.config import LifecycleConfig
from app.lifecycle.currency import RatesError, load_rates, parse_rates, to_reporting
from app.lifecycle.rules import LifecycleRules, channel_of
from app.lifecycle.traits import pending_traits
from app.mapping import ProfileRegistry, event_outputs, map_postback
from app.pipeline.steps import StepConfig
from app.records import AttributionProfile, CanonicalEvent, RawPostback
from app.sections import parse_tiers

PROFILE = ProfileRegistry.load(None).get("kochava-default")
RATES = load_rates(None, "USD")
CONFIG = LifecycleConfig(rates=RATES, rules=PROFILE.lifecycle)
IDFV = "8E1D2C3B-4A59-4687-9A1B-2C3D4E5F6071"


def config_from(**settings: Any) -> LifecycleConfig:
    """The default profile's lifecycle config as the worker builds it from these settings."""
    values = Settings(_env_file=None, **settings)  # type: ignore[call-arg]
    steps = StepConfig(values, ProfileRegistry.load(None), rates=RATES)
    return steps.profile_configs.configs["kochava-default"].lifecycle


def ev(event_id: str, **params: Any) -> CanonicalEvent:
    params.setdefault("kochava_device_id", "KI1")
    params.setdefault("idfv", IDFV)
    raw = RawPostback(event_id=event_id, received_at="2025-03-01T00:00:00.000Z", params=params)
    result = map_postback(raw, PROFILE, "ns")
    assert isinstance(result, CanonicalEvent), result
    return result


def run(
    events: list[CanonicalEvent], state: AttributionProfile | None = None, config: LifecycleConfig = CONFIG
):
    state = state or AttributionProfile()
    outputs = []
    for event in events:
        identity, _ = resolve(event, AttributionProfile(), "KI1", IdentityRules("ns"))
        out = event_outputs(event, identity, state, config)
        outputs.append(out)
        state = out.profile
    return state, outputs


def install(network: str | None = "Facebook", ts: str = "1735689600") -> CanonicalEvent:
    params = {"event_name": "_install", "install_id": "i1", "timestamp": ts}
    if network is not None:
        params["network_name"] = network
    return ev("install", **params)


# --- channel table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "channel", "paid"),
    [
        ("Facebook", "paid_social", True),
        ("Instagram", "paid_social", True),
        ("Meta Ads", "paid_social", True),
        ("TikTok", "paid_social", True),
        ("Snapchat", "paid_social", True),
        ("X", "paid_social", True),
        ("Twitter", "paid_social", True),
        ("Reddit Ads", "paid_social", True),
        ("Pinterest", "paid_social", True),
        ("Google Ads", "paid_search", True),
        ("Apple Search Ads", "paid_search", True),
        ("YouTube", "paid_video", True),
        ("Unity Ads", "ad_network", True),
        ("AppLovin", "ad_network", True),
        ("ironSource", "ad_network", True),
        ("Liftoff", "ad_network", True),
        ("Moloco", "ad_network", True),
        ("Digital Turbine", "ad_network", True),
        ("Email newsletter", "owned", False),
        ("Unattributed", "organic", False),
        ("organic", "organic", False),
        (None, "organic", False),
        ("", "organic", False),
        ("SomeNewNetwork", "unclassified", True),
    ],
)
def test_default_channel_table(network: str | None, channel: str, paid: bool) -> None:
    assert channel_of(network, PROFILE.lifecycle) == (channel, paid)


def test_channel_table_is_data_first_match_wins() -> None:
    rules = LifecycleRules.model_validate(
        {
            "channels": [
                {"channel": "owned", "paid": False, "networks": ["acme*"]},
                {"channel": "paid_social", "networks": ["ACME Social"]},
            ],
            "unmatched_channel": "other",
        }
    )
    assert channel_of("Acme Social", rules) == ("owned", False)
    assert channel_of("Zeta", rules) == ("other", True)
    with pytest.raises(ValueError, match="organic channel cannot be paid"):
        LifecycleRules.model_validate({"channels": [{"channel": "organic", "networks": ["x"]}]})


# --- stages ----------------------------------------------------------------------------------


def test_paid_social_install_then_event_then_conversion() -> None:
    state, outs = run(
        [
            install(),
            ev("e1", event_name="Level Complete", timestamp="1735690000"),
            ev("e2", event_name="Level Complete", timestamp="1735690100"),
            ev("e3", event_name="Subscribe", timestamp="1735690200"),
            ev("e4", event_name="Subscribe", timestamp="1735690300"),
        ]
    )
    changes = [(o.change.from_stage, o.change.to_stage, o.change.reason) if o.change else None for o in outs]
    assert changes == [
        (None, "installed", "install"),
        ("installed", "active", "first_event"),
        None,
        ("active", "converted", "conversion"),
        None,
    ]
    first_identify = outs[0].calls[0]
    assert first_identify["type"] == "identify"
    assert first_identify["traits"]["acquisition_channel"] == "paid_social"
    assert first_identify["traits"]["acquisition_paid"] is True
    # No identify storm: the second Level Complete and the repeated Subscribe send no identify.
    assert [c["type"] for c in outs[2].calls] == ["track"]
    assert not any(c["type"] == "identify" for c in outs[4].calls)
    suppressed = [c for o in outs for c in o.calls if c.get("traits", {}).get("ad_suppressed")]
    assert len(suppressed) == 1
    assert suppressed[0]["traits"]["ad_suppression_reason"] == "conversion:Subscription Started"
    assert state.lifecycle.ad_suppressed_at == "2025-01-01T00:10:00.000Z"


def test_organic_install() -> None:
    _, outs = run([install(network=None)])
    traits = outs[0].calls[0]["traits"]
    assert (traits["acquisition_channel"], traits["acquisition_paid"]) == ("organic", False)
    assert outs[0].row["acquisition_channel"] == "organic" and outs[0].row["acquisition_paid"] is False


@pytest.mark.parametrize("attribution_type", ["reengagement", "reattribution", "re-attribution"])
def test_reengagement_class_sets_winback_and_keeps_first_touch(attribution_type: str) -> None:
    reengage = ev(
        "r1",
        event_name="Level Complete",
        attribution_type=attribution_type,
        network_name="Google Ads",
        timestamp="1738368000",  # 2025-02-01
    )
    assert reengage.reengagement
    state, outs = run([install(), ev("e1", event_name="Level Complete", timestamp="1735690000"), reengage])
    out = outs[-1]
    assert out.change is not None and (out.change.from_stage, out.change.to_stage) == ("active", "reengaged")
    stage_tracks = [c for c in out.calls if c.get("event") == "Lifecycle Stage Changed"]
    assert len(stage_tracks) == 1
    identify = out.calls[0]
    assert identify["traits"]["winback_suppress_until"] == "2025-02-15T00:00:00.000Z"
    assert identify["traits"]["last_reengagement_channel"] == "paid_search"
    assert "acquisition_channel" not in identify["traits"]  # unchanged: not re-sent
    assert state.lifecycle.acquisition_channel == "paid_social"
    assert state.first_touch is not None and state.first_touch.network == "Facebook"


def test_winback_window_is_configurable_and_never_shrinks() -> None:
    config = config_from(kseg_winback_suppress_days=3)
    late = ev("r1", event_name="X", attribution_type="reengagement", network_name="N", timestamp="1738368000")
    early = ev(
        "r0", event_name="X", attribution_type="reengagement", network_name="N", timestamp="1738000000"
    )
    state, _ = run([install(), late, early], config=config)
    assert state.lifecycle.winback_suppress_until == "2025-02-04T00:00:00.000Z"


def test_reinstall_stage() -> None:
    reinstall = ev("ri", event_name="_install", reprocess_for="i1", timestamp="1738368000")
    _, outs = run([install(), ev("e1", event_name="Level Complete"), reinstall])
    assert outs[-1].change is not None and outs[-1].change.to_stage == "reinstalled"


# --- LTV -------------------------------------------------------------------------------------


def test_ltv_in_reporting_currency_and_without_rate_kept_apart() -> None:
    purchases = [
        ev("p1", event_name="Purchase", event_value="10", currency="USD", timestamp="1735690000"),
        ev("p2", event_name="Purchase", event_value="10", currency="EUR", timestamp="1735690100"),
        ev("p3", event_name="Purchase", event_value="1000", currency="ZWL", timestamp="1735690200"),
    ]
    state, outs = run([install(), *purchases])
    assert state.lifecycle.ltv_revenue == pytest.approx(10 + 10 * 1.08)
    assert state.lifecycle.revenue_without_rate == {"ZWL": 1000.0}
    assert outs[-1].unconverted_currency == "ZWL" and outs[-1].revenue_reporting is None
    assert outs[-1].row["revenue_reporting"] is None and outs[-1].row["ltv_revenue"] == pytest.approx(20.8)
    assert outs[2].row["revenue_reporting"] == pytest.approx(10.8)
    assert outs[-1].calls[0]["traits"]["ltv_revenue_without_rate"] == {"ZWL": 1000.0}
    assert state.lifecycle.ltv_tier == "medium"


def test_purchases_inside_a_tier_tell_revenue_and_count_in_an_identify_of_their_own() -> None:
    """Lifetime revenue and purchase count go out whenever they change (they used to wait for a tier change,
    leaving Segment with stale values); an identify carrying only them is marked for the micro-batch to
    coalesce (`app.pipeline.steps`)."""
    state, outs = run(
        [install()]
        + [
            ev(f"p{n}", event_name="Purchase", event_value="1", currency="USD", timestamp=str(1735690000 + n))
            for n in range(5)
        ]
    )
    identifies = [o for o in outs[1:] if any(c["type"] == "identify" for c in o.calls)]
    assert len(identifies) == 5
    assert not outs[1].ride_along  # the first purchase: converted, ad suppression, tier low
    for count, out in enumerate(outs[2:], start=2):
        assert out.ride_along and out.calls[0]["type"] == "identify"
        assert out.calls[0]["traits"] == {"ltv_revenue": float(count), "purchase_count": count}
    assert state.purchase_count == 5 and state.lifecycle.ltv_revenue == 5.0


def test_tier_crossing_sends_ltv() -> None:
    config = config_from(kseg_ltv_tiers="low=0,vip=50")
    _, outs = run(
        [
            install(),
            ev("p1", event_name="Purchase", event_value="20", currency="USD", timestamp="1735690000"),
            ev("p2", event_name="Purchase", event_value="40", currency="USD", timestamp="1735690100"),
        ],
        config=config,
    )
    traits = outs[-1].calls[0]["traits"]
    assert traits == {"ltv_revenue": 60.0, "purchase_count": 2, "ltv_tier": "vip"}


def test_tiers_and_rates_validation(tmp_path: Path) -> None:
    assert parse_tiers("a=0, b=10") == [("a", 0.0), ("b", 10.0)]
    for bad in ("", "a", "a=x", "a=5,b=1", "a=1,a=2", "a=-1"):
        with pytest.raises(ValueError):
            parse_tiers(bad)
    with pytest.raises(ValueError):
        Settings(kseg_ltv_tiers="high=100,low=0")
    rates = parse_rates({"version": "t1", "base": "EUR", "rates": {"USD": "0.5", "GBP": 1.25}}, "USD")
    assert to_reporting(10, "EUR", rates) == 20.0 and to_reporting(1, "gbp", rates) == 2.5
    assert to_reporting(1, "JPY", rates) is None and to_reporting(7, None, rates) == 7.0
    with pytest.raises(RatesError, match="reporting currency JPY"):
        parse_rates({"version": "1", "base": "USD", "rates": {"EUR": 1.1}}, "JPY")
    with pytest.raises(RatesError, match="version"):
        parse_rates({"base": "USD", "rates": {"EUR": 1.1}}, "USD")
    with pytest.raises(RatesError, match="positive"):
        parse_rates({"version": "1", "base": "USD", "rates": {"EUR": 0}}, "USD")
    file = tmp_path / "rates.yaml"
    file.write_text("version: x\nbase: USD\nrates: {EUR: 2}\n")
    assert load_rates(file, "EUR").per_unit["USD"] == pytest.approx(0.5)
    with pytest.raises(RatesError, match="cannot read"):
        load_rates(tmp_path / "missing.yaml", "USD")


# --- properties ------------------------------------------------------------------------------

NETWORKS = st.sampled_from(["Facebook", "Google Ads", "TikTok", "Unattributed", "", "RetargetCo", "Moloco"])
KINDS = st.sampled_from(["reengagement", "reattribution", "install", ""])
NAMES = st.sampled_from(["_install", "Purchase", "Subscribe", "Level Complete", "Start Trial"])


@settings(max_examples=150, deadline=None)
@given(
    first=NETWORKS,
    later=st.lists(st.tuples(NAMES, NETWORKS, KINDS, st.integers(0, 10**7)), min_size=1, max_size=12),
)
def test_first_touch_never_overwritten_by_reengagements(
    first: str, later: list[tuple[str, str, str, int]]
) -> None:
    state, outs = run([install(network=first or None)])
    acquired = (state.lifecycle.acquisition_channel, state.lifecycle.acquisition_paid, state.first_touch)
    for n, (name, network, kind, offset) in enumerate(later):
        params: dict[str, Any] = {"event_name": name, "timestamp": str(1735690000 + offset), "n": str(n)}
        if network:
            params["network_name"] = network
        if kind:
            params["attribution_type"] = kind
        if name == "_install":
            params["install_id"] = f"other-{n}"
        state, more = run([ev(f"x{n}", **params)], state)
        outs += more
        assert (
            state.lifecycle.acquisition_channel,
            state.lifecycle.acquisition_paid,
            state.first_touch,
        ) == acquired
    sent_channels = [
        c["traits"]["acquisition_channel"]
        for o in outs
        for c in o.calls
        if "acquisition_channel" in c.get("traits", {})
    ]
    assert sent_channels == [acquired[0]]  # told once, never re-told differently
    assert pending_traits(state) == {}  # everything that changed was sent
