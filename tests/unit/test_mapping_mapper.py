"""map_postback: normalisation, event kinds, junk ids, and every dead-letter reason."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.ids import message_id_for
from app.mapping import (
    DEAD_LETTER_REASONS,
    ProfileRegistry,
    dead_letter_unknown_profile,
    map_postback,
    parse_revenue,
    parse_timestamp,
)
from app.records import CanonicalEvent, DeadLetter, RawPostback

PROFILE = ProfileRegistry.load(None).get("kochava-default")
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
ADID = "38400000-8cf0-11bd-b23e-10b96e40000d"
ZERO = "00000000-0000-0000-0000-000000000000"
RECEIVED = "2025-03-01T10:00:05.123Z"


def raw(**params: Any) -> RawPostback:
    return RawPostback(event_id="evt-1", received_at=RECEIVED, params=params)


def ok(**params: Any) -> CanonicalEvent:
    result = map_postback(raw(**params), PROFILE, "ns")
    assert isinstance(result, CanonicalEvent), result
    return result


def dead(**params: Any) -> DeadLetter:
    result = map_postback(raw(**params), PROFILE, "ns")
    assert isinstance(result, DeadLetter), result
    return result


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1735689600", "2025-01-01T00:00:00.000Z"),
        (1735689600, "2025-01-01T00:00:00.000Z"),
        ("1735689600.5", "2025-01-01T00:00:00.500Z"),
        ("1735689600123", "2025-01-01T00:00:00.123Z"),
        (1735689600123, "2025-01-01T00:00:00.123Z"),
        ("2025-01-01 12:30:00", "2025-01-01T12:30:00.000Z"),
        ("2025-01-01T12:30:00", "2025-01-01T12:30:00.000Z"),
        ("2025-01-01T12:30:00Z", "2025-01-01T12:30:00.000Z"),
        ("2025-01-01T12:30:00.25+02:00", "2025-01-01T10:30:00.250Z"),
        ("2025-01-01T12:30:00 02:00", "2025-01-01T10:30:00.000Z"),  # '+' decoded to a space
        ("2025-01-01 12:30:00 UTC", "2025-01-01T12:30:00.000Z"),
        (" 2025-01-01T12:30:00-05:00 ", "2025-01-01T17:30:00.000Z"),
    ],
)
def test_timestamp_forms(value: Any, expected: str) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "",
        "0",
        "-5",
        "1e30",
        "99999999999999999",
        "2025-13-01",
        True,
        None,
        {"a": 1},
        float("nan"),
        "1899-01-01T00:00:00Z",
        "2025/01/01",
    ],
)
def test_bad_timestamps_raise(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(value)


def test_missing_timestamp_falls_back_to_received_at() -> None:
    assert ok(event_name="X", idfa=IDFA).timestamp == RECEIVED
    assert ok(event_name="X", idfa=IDFA, timestamp="{timestamp}").timestamp == RECEIVED


def test_timestamp_aliases() -> None:
    assert ok(event_name="X", idfa=IDFA, event_time="1735689600").timestamp == "2025-01-01T00:00:00.000Z"
    assert ok(event_name="X", idfa=IDFA, event_datetime="2025-01-01 00:00:01").timestamp.endswith("01.000Z")


# --- kinds and names --------------------------------------------------------------------------


def test_install() -> None:
    ev = ok(event_name="_install", idfa=IDFA, install_id="i1")
    assert (ev.kind, ev.segment_event_name, ev.install_id) == ("install", "Install Attributed", "i1")
    assert ev.original_install_id is None


@pytest.mark.parametrize(
    "extra",
    [
        {"reprocess_for": "orig-1"},
        {"is_first_install": "false"},
        {"is_first_install": "0"},
        {"is_first_install": False},
    ],
)
def test_reinstall(extra: dict[str, Any]) -> None:
    ev = ok(event_name="_install", idfa=IDFA, **extra)
    assert ev.kind == "reinstall"
    assert ev.segment_event_name == "Install Attributed"
    assert ev.original_install_id == extra.get("reprocess_for")


def test_first_install_flag_true_stays_install() -> None:
    assert ok(event_name="_install", idfa=IDFA, is_first_install="true").kind == "install"


def test_reengagement_flag_on_any_event() -> None:
    for name in ("_install", "Purchase", "Level Complete"):
        ev = ok(event_name=name, idfa=IDFA, attribution_type="ReEngagement")
        assert ev.reengagement and ev.attribution.attribution_type == "reengagement"
    assert not ok(event_name="Purchase", idfa=IDFA, attribution_type="install").reengagement


def test_purchase_conversion_and_generic() -> None:
    p = ok(event_name="Purchase", idfa=IDFA, event_value="19.99", currency="eur", order_id="o-1")
    assert (p.kind, p.segment_event_name, p.revenue, p.currency, p.order_id) == (
        "purchase",
        "Order Completed",
        19.99,
        "EUR",
        "o-1",
    )
    c = ok(event_name="Start Trial", idfa=IDFA)
    assert (c.kind, c.segment_event_name, c.conversion_name) == (
        "conversion",
        "Trial Started",
        "Trial Started",
    )
    s = ok(event_name="subscribe", idfa=IDFA)  # names match ignoring case
    assert (s.kind, s.segment_event_name) == ("conversion", "Subscription Started")
    g = ok(event_name="Registration Complete", idfa=IDFA)
    assert (g.kind, g.segment_event_name) == ("event", "Signed Up")
    u = ok(event_name="Boss Defeated", idfa=IDFA)
    assert (u.kind, u.segment_event_name) == ("event", "Boss Defeated")


@pytest.mark.parametrize("key", ["event_value", "revenue", "sum", "price"])
def test_revenue_aliases(key: str) -> None:
    assert ok(event_name="Purchase", idfa=IDFA, **{key: "4.5"}).revenue == 4.5


def test_revenue_alias_priority_skips_unfilled_macro() -> None:
    ev = ok(event_name="Purchase", idfa=IDFA, event_value="{event_value}", revenue="3")
    assert ev.revenue == 3.0
    assert "revenue" not in ev.properties and "event_value" not in ev.properties


def test_message_id_is_namespaced_and_deterministic() -> None:
    a = ok(event_name="X", idfa=IDFA)
    assert a.message_id == message_id_for("ns", "evt-1", "track")
    other = map_postback(raw(event_name="X", idfa=IDFA), PROFILE, "other-ns")
    assert isinstance(other, CanonicalEvent) and other.message_id != a.message_id


# --- devices ------------------------------------------------------------------------------------


def test_device_type_inference() -> None:
    assert ok(event_name="X", idfa=IDFA).device_type == "ios"
    assert ok(event_name="X", idfv=IDFA).device_type == "ios"
    assert ok(event_name="X", adid=ADID).device_type == "android"
    assert ok(event_name="X", gaid=ADID).device_type == "android"
    assert ok(event_name="X", android_id="9774d56d682e549c").device_type == "android"
    assert ok(event_name="X", kochava_device_id="KI1", platform="iOS").device_type == "ios"
    assert ok(event_name="X", kochava_device_id="KI1", device_type="Android").device_type == "android"
    assert ok(event_name="X", kochava_device_id="KI1").device_type is None


def test_ad_tracking() -> None:
    assert ok(event_name="X", idfa=IDFA).ad_tracking_enabled is True
    zeroed = ok(event_name="X", idfa=ZERO, idfv=IDFA)
    assert zeroed.ad_tracking_enabled is False and zeroed.devices.idfa is None and zeroed.device_type == "ios"
    assert ok(event_name="X", adid=ZERO, android_id="abc123").ad_tracking_enabled is False
    assert ok(event_name="X", kochava_device_id="KI1").ad_tracking_enabled is None


@pytest.mark.parametrize("junk", ["{idfa}", "", "0", "-1", "null", "NULL", ZERO, "undefined", " ", "x" * 200])
def test_junk_ids_are_never_used(junk: str) -> None:
    ev = ok(event_name="X", idfa=junk, kochava_device_id="KI1")
    assert ev.devices.idfa is None
    assert ev.devices.typed() == ["kochava_device_id:KI1"]


def test_ip_and_user_agent() -> None:
    ev = ok(event_name="X", idfa=IDFA, device_ip="2001:db8::1", user_agent="UA/1")
    assert (ev.ip, ev.user_agent) == ("2001:db8::1", "UA/1")
    assert ok(event_name="X", idfa=IDFA, ip="not-an-ip").ip is None
    assert ok(event_name="X", idfa=IDFA, origination_ip="203.0.113.9").ip == "203.0.113.9"


def test_attribution_aliases() -> None:
    ev = ok(
        event_name="X",
        idfa=IDFA,
        network="N",
        campaign_name="C",
        ad_group="AG",
        creative="CR",
        site="S",
        tracker_id="T",
        user_country="de",
    )
    a = ev.attribution
    assert (a.network, a.campaign, a.ad_group, a.creative, a.site, a.tracker, a.country) == (
        "N",
        "C",
        "AG",
        "CR",
        "S",
        "T",
        "DE",
    )
    ks = ok(event_name="X", idfa=IDFA, segment="kochava-segment").attribution
    assert ks.ad_group == "kochava-segment"


def test_properties_drop_identifiers_credentials_and_macros() -> None:
    ev = ok(
        event_name="Level Complete",
        idfa=IDFA,
        token="t0k",
        api_key="k",
        Auth="x",
        session_token="s",
        level="3",
        hero="ü-🦄",
        sub="{sub}",
        empty="",
        oaid="o",
        user_email="a@b.co",
        email="a@b.co",
        ip="203.0.113.1",
    )
    assert ev.properties == {"level": "3", "hero": "ü-🦄"}
    assert ev.email == "a@b.co"


def test_event_data_json_is_merged_into_properties() -> None:
    ev = ok(event_name="X", idfa=IDFA, event_data='{"level": 4, "token": "nope"}', mode="pvp")
    assert ev.properties == {"level": 4, "mode": "pvp"}
    ev = ok(event_name="X", idfa=IDFA, event_data="not json")
    assert ev.properties == {"event_data": "not json"}


def test_products_from_json_string_and_from_json_body() -> None:
    items = '[{"content_id":"a","sum":"1.5","quantity":"2","color":"red"}]'
    ev = ok(event_name="Purchase", idfa=IDFA, products=items)
    assert ev.products == [{"product_id": "a", "price": 1.5, "quantity": 2, "color": "red"}]
    body = ok(event_name="Purchase", idfa=IDFA, items=[{"sku": "s1", "price": 2}])
    assert body.products == [{"sku": "s1", "price": 2.0}]
    single = ok(event_name="Purchase", idfa=IDFA, products='{"product_id": "z"}')
    assert single.products == [{"product_id": "z"}]


def test_user_id_alone_is_an_identifier() -> None:
    ev = ok(event_name="X", user_id="u-1")
    assert ev.user_id == "u-1" and ev.devices.typed() == []


def test_keys_match_ignoring_case() -> None:
    ev = ok(EVENT_NAME="Purchase", IDFA=IDFA, Event_Value="2")
    assert (ev.kind, ev.devices.idfa, ev.revenue) == ("purchase", IDFA, 2.0)


# --- dead letters -------------------------------------------------------------------------------


def _assert_dead_letter(letter: DeadLetter, reason: str) -> None:
    assert letter.reason == reason
    assert reason in DEAD_LETTER_REASONS
    assert letter.stage == "mapping"
    assert letter.profile == "kochava-default" and letter.profile_version == PROFILE.version
    assert letter.event_id == "evt-1"
    assert letter.payload["params"]  # the raw payload travels with it
    assert letter.error


@pytest.mark.parametrize("value", ["yesterday", "1e30", "2025-02-30 00:00:00", "0"])
def test_dead_letter_unparseable_timestamp(value: str) -> None:
    _assert_dead_letter(dead(event_name="X", idfa=IDFA, timestamp=value), "unparseable_timestamp")


@pytest.mark.parametrize("value", ["abc", "-1", "NaN", "inf", "-inf", "1e400", "4,99", "1e13", True])
def test_dead_letter_invalid_revenue(value: Any) -> None:
    _assert_dead_letter(dead(event_name="Purchase", idfa=IDFA, event_value=value), "invalid_revenue")


@pytest.mark.parametrize("value", ["US", "EURO", "€", "12A", "us d"])
def test_dead_letter_invalid_currency(value: str) -> None:
    _assert_dead_letter(dead(event_name="Purchase", idfa=IDFA, currency=value), "invalid_currency")


def test_currency_is_upper_cased() -> None:
    assert ok(event_name="Purchase", idfa=IDFA, currency=" usd ").currency == "USD"


@pytest.mark.parametrize(
    "params",
    [
        {"event_name": "X"},
        {"event_name": "X", "idfa": ZERO, "adid": "{adid}", "kochava_device_id": "null"},
        {"event_name": "X", "user_id": "-1"},
        {"event_name": "X", "email": "a@b.co"},
    ],
)
def test_dead_letter_no_identifier(params: dict[str, Any]) -> None:
    _assert_dead_letter(dead(**params), "no_identifier")


@pytest.mark.parametrize(
    "params", [{"idfa": IDFA}, {"event_name": "", "idfa": IDFA}, {"event_name": "{event_name}", "idfa": IDFA}]
)
def test_dead_letter_missing_event_name(params: dict[str, Any]) -> None:
    _assert_dead_letter(dead(**params), "missing_event_name")


@pytest.mark.parametrize(
    "value",
    ["not json", "[1, 2]", '"a string"', "42", '[{"price": "free"}]', '[{"quantity": -1}]'],
)
def test_dead_letter_invalid_products(value: str) -> None:
    _assert_dead_letter(dead(event_name="Purchase", idfa=IDFA, products=value), "invalid_products")


def test_dead_letter_oversize() -> None:
    _assert_dead_letter(dead(event_name="X", idfa=IDFA, campaign="c" * 5000), "oversize")
    many = {f"k{i}": "v" * 100 for i in range(300)}
    _assert_dead_letter(dead(event_name="X", idfa=IDFA, **many), "oversize")


def test_dead_letter_unknown_profile() -> None:
    letter = dead_letter_unknown_profile(raw(event_name="X", idfa=IDFA), "no-such-profile")
    assert (letter.reason, letter.stage, letter.profile) == ("unknown_profile", "mapping", "no-such-profile")
    assert letter.payload["params"]["event_name"] == "X"


def test_revenue_parser_bounds() -> None:
    assert parse_revenue("0") == 0.0 and parse_revenue("-0") == 0.0 and parse_revenue(".5") == 0.5
    assert parse_revenue(12) == 12.0


@pytest.mark.parametrize("word", ["null", "NULL", "undefined", "n/a", "None"])
def test_placeholder_words_count_as_absent(word: str) -> None:
    ev = ok(
        event_name="Purchase",
        idfa=IDFA,
        products=word,
        event_value=word,
        timestamp=word,
        campaign=word,
        currency=word,
    )
    assert (ev.products, ev.revenue, ev.currency, ev.attribution.campaign) == (None, None, None, None)
    assert ev.timestamp == RECEIVED
    assert ok(event_name="X", idfa=IDFA, country="na").attribution.country == "NA"


def _parsed(value: Any) -> str | None:
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


@given(st.integers(min_value=0, max_value=10**18))
def test_whole_epoch_digits_parse_as_their_decimal_form(number: int) -> None:
    """Whole seconds or milliseconds take an integer shortcut: the same time (or refusal) as the same
    number written with a fraction, which takes the Decimal path."""
    assert _parsed(str(number)) == _parsed(f"{number}.0")


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2110, 1, 1)))
def test_a_time_already_in_the_output_form_comes_back_unchanged(when: datetime) -> None:
    """The receiver's `received_at` (ISO UTC, milliseconds, `Z`) takes a shortcut: the same result as the
    same time written with an explicit offset."""
    text = when.isoformat(timespec="milliseconds") + "Z"
    assert _parsed(text) == _parsed(text[:-1] + "+00:00")
    if _parsed(text) is not None:
        assert _parsed(text) == text


def test_an_impossible_date_in_the_output_form_is_refused() -> None:
    with pytest.raises(ValueError, match="not an ISO-8601"):
        parse_timestamp("2025-02-30T00:00:00.000Z")


def _ip_reference(text: str) -> str | None:
    import ipaddress

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


@given(st.lists(st.from_regex(r"[0-9]{1,4}", fullmatch=True), min_size=3, max_size=5))
def test_a_dotted_quad_shortcut_keeps_what_ipaddress_prints(octets: list[str]) -> None:
    """Plain IPv4 text skips `ipaddress`: the same result for every dotted form, leading zeros and
    out-of-range octets included (those are refused, as `ipaddress` refuses them)."""
    from app.mapping.mapper import _valid_ip

    text = ".".join(octets)
    assert _valid_ip(text) == _ip_reference(text)


def _json_safe_reference(value: Any, depth: int = 0) -> Any:
    """json_safe written plainly (every value through the one recursive function)."""
    import math

    def utf8(text: str) -> str:
        return text.encode("utf-8", "replace").decode("utf-8")

    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return utf8(value)
    if isinstance(value, int):
        return value if abs(value) <= 2**53 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= 16:
        return utf8(str(value))[:1024]
    if isinstance(value, dict):
        return {utf8(str(k)): _json_safe_reference(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe_reference(v, depth + 1) for v in value]
    return utf8(str(value))


_TEXT = st.text(alphabet=st.characters(codec=None), max_size=8)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT | st.integers(), inner, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(_TEXT, _VALUES, max_size=6))
def test_json_safe_keeps_every_value_it_kept_before(params: dict[str, Any]) -> None:
    from app.mapping.mapper import json_safe

    assert orjson.dumps(json_safe(params)) == orjson.dumps(_json_safe_reference(params))
