"""The digest's pure parts: report window, column map, row parsing, figures, spend rows, Segment calls."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import jsonschema
import pytest

from app.digest.report import ColumnMapError, column_map, parse_rows, summary_body, window
from app.digest.spend import spend_key, spend_row
from app.digest.traits import (
    Revenue,
    campaign_figures,
    digest_message_id,
    digest_timestamp,
    group_call,
    identify_call,
)
from app.lifecycle.currency import parse_rates
from app.sinks.segment.validation import problems

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 30)
RATES = parse_rates({"version": "t1", "base": "USD", "rates": {"USD": 1, "EUR": 1.25}}, "USD")


def row(day: str, campaign: str = "spring", **over: str) -> dict[str, str]:
    base = {
        "date": day,
        "network": "Meta",
        "network_id": "7",
        "campaign": campaign,
        "campaign_id": "71",
        "clicks": "100",
        "impressions": "1000",
        "installs": "10",
        "click_spend": "5",
        "impression_spend": "2.5",
        "install_spend": "12.5",
    }
    base.update(over)
    return base


@pytest.mark.parametrize(
    ("zone", "start", "end"),
    [
        ("UTC", "2026-11-30T00:00:00+00:00", "2026-12-01T00:00:00+00:00"),
        ("America/Toronto", "2026-11-30T05:00:00+00:00", "2026-12-01T05:00:00+00:00"),
        # Midnight in Kolkata is 18:30Z: widened to full hours, the extra half hours are dropped by date.
        ("Asia/Kolkata", "2026-11-29T18:00:00+00:00", "2026-11-30T19:00:00+00:00"),
    ],
)
def test_window_is_on_full_hours_in_the_reporting_zone(zone: str, start: str, end: str) -> None:
    win = window(DAY, 1, zone)
    assert win.time_start % 3600 == 0 and win.time_end % 3600 == 0
    assert datetime.fromtimestamp(win.time_start, UTC).isoformat() == start
    assert datetime.fromtimestamp(win.time_end, UTC).isoformat() == end
    body = summary_body(win, zone)
    assert body["time_start"] == str(win.time_start) and body["time_zone"] == zone
    assert body["traffic_grouping"] == ["network", "campaign"] and body["time_series"] == "24"


def test_window_of_n_days_ends_on_the_digest_day() -> None:
    win = window(DAY, 7, "UTC")
    assert win.days()[0] == date(2026, 11, 24) and win.days()[-1] == DAY and len(win.days()) == 7


def test_column_map_overrides_and_refuses_unknown_fields() -> None:
    mapping = column_map("installs = install_count, campaign=campaign_name")
    assert mapping["installs"] == "install_count" and mapping["campaign"] == "campaign_name"
    assert mapping["network"] == "network"
    with pytest.raises(ColumnMapError, match="unknown field 'instals'"):
        column_map("instals=x")
    with pytest.raises(ColumnMapError, match="field=column"):
        column_map("installs")


def test_rows_are_read_through_the_map_and_spend_is_the_sum_of_its_parts() -> None:
    renamed = {("install_count" if k == "installs" else k): v for k, v in row("2026-11-30").items()}
    parsed = parse_rows([renamed], column_map("installs=install_count"), window(DAY, 1, "UTC"))
    assert len(parsed) == 1
    assert (parsed[0].installs, parsed[0].spend, parsed[0].clicks) == (10, 20.0, 100)
    total = parse_rows([row("2026-11-30", spend="33.3")], column_map(""), window(DAY, 1, "UTC"))
    assert total[0].spend == 33.3


def test_rows_outside_the_window_are_dropped_and_missing_names_get_a_default() -> None:
    rows = [row("2026-11-29"), row("2026-11-30", network="", campaign="")]
    parsed = parse_rows(rows, column_map(""), window(DAY, 1, "UTC"))
    assert [(p.date, p.network, p.campaign) for p in parsed] == [("2026-11-30", "(none)", "(none)")]


def test_a_report_without_the_mapped_columns_says_how_to_fix_it() -> None:
    bad = [{k if k != "campaign" else "campaign_name": v for k, v in row("2026-11-30").items()}]
    with pytest.raises(ColumnMapError, match=r"no campaign \(column 'campaign'\).*kseg digest columns"):
        parse_rows(bad, column_map(""), window(DAY, 1, "UTC"))
    with pytest.raises(ColumnMapError, match="not a number"):
        parse_rows([row("2026-11-30", installs="ten")], column_map(""), window(DAY, 1, "UTC"))


def test_campaign_figures_by_hand() -> None:
    # spring: digest day 10 installs / 20 spend; 3 days before 5 / 10; 20 days before 1 / 30 (outside 7d).
    rows = [
        row("2026-11-30"),
        row("2026-11-27", installs="5", click_spend="0", impression_spend="0", install_spend="10"),
        row("2026-11-10", installs="1", click_spend="0", impression_spend="0", install_spend="30"),
        row("2026-10-01", installs="99", install_spend="999"),  # outside 30 days: ignored
    ]
    parsed = parse_rows(rows, column_map(""), window(DAY, 61, "UTC"))
    paired = [(r, r.spend) for r in parsed]
    figs = campaign_figures(paired, {("Meta", "spring"): Revenue(day=5, d7=45, d30=120)}, DAY, "USD")
    assert len(figs) == 1
    f = figs[0]
    assert (f.installs, f.spend, f.installs_7d, f.spend_7d, f.spend_30d) == (10, 20.0, 15, 30.0, 60.0)
    assert f.cpi == pytest.approx(2.0)  # 30 / 15
    assert f.roas_7d == pytest.approx(1.5)  # 45 / 30
    assert f.roas_30d == pytest.approx(2.0)  # 120 / 60
    assert f.day_cpi == pytest.approx(2.0) and f.day_roas == pytest.approx(0.25)
    assert f.traits() == {
        "kochava_campaign_cpi": 2.0,
        "kochava_campaign_roas_7d": 1.5,
        "kochava_campaign_roas_30d": 2.0,
        "kochava_campaign_installs_7d": 15,
        "kochava_campaign_spend_7d": 30.0,
        "kochava_digest_date": "2026-11-30",
    }


def test_spend_without_a_rate_is_never_summed_as_reporting_currency() -> None:
    parsed = parse_rows([row("2026-11-30")], column_map(""), window(DAY, 1, "UTC"))
    figs = campaign_figures([(parsed[0], None)], {}, DAY, "USD")
    assert figs[0].spend_7d is None and figs[0].roas_7d is None and figs[0].cpi is None
    assert figs[0].traits()["kochava_campaign_spend_7d"] is None


def test_spend_row_matches_the_contract_schema() -> None:
    schema = json.loads((ROOT / "topics/schemas/campaign-spend.schema.json").read_text())
    parsed = parse_rows([row("2026-11-30")], column_map(""), window(DAY, 1, "UTC"))[0]
    value = spend_row(parsed, currency="EUR", rates=RATES, run_id="r1", fetched_at="2026-12-01T06:00:00.000Z")
    jsonschema.validate(value, schema)
    assert spend_key(parsed) == "2026-11-30|Meta|spring"
    assert (value["spend"], value["currency"], value["spend_reporting"]) == (20.0, "EUR", 25.0)
    unknown = spend_row(parsed, currency="XYZ", rates=RATES, run_id="r1", fetched_at="2026-12-01T06:00:00Z")
    jsonschema.validate(unknown, schema)
    assert unknown["spend_reporting"] is None


def test_segment_calls_are_valid_and_their_ids_deterministic() -> None:
    parsed = parse_rows([row("2026-11-30")], column_map(""), window(DAY, 1, "UTC"))
    fig = campaign_figures([(parsed[0], 20.0)], {}, DAY, "USD")[0]
    ts = digest_timestamp(DAY, "America/Toronto")
    assert ts == "2026-12-01T04:59:59.000Z"
    user = identify_call(fig, user_id="u1", anonymous_id="a1", timestamp=ts, namespace="kseg")
    anon = identify_call(fig, user_id=None, anonymous_id="a2", timestamp=ts, namespace="kseg")
    group = group_call(fig, timestamp=ts, namespace="kseg")
    for msg in (user, anon, group):
        assert problems(msg) == []
    assert user["userId"] == "u1" and user["traits"]["kochava_campaign_installs_7d"] == 10
    assert "userId" not in anon and anon["anonymousId"] == "a2"
    assert group["groupId"] == "kochava:Meta/spring" and group["traits"]["name"] == "spring"
    again = identify_call(fig, user_id="u1", anonymous_id="other-device", timestamp=ts, namespace="kseg")
    assert again["messageId"] == user["messageId"]  # one id per user, campaign and day
    ids = {
        digest_message_id("kseg", "user:u1", ("Meta", "spring"), "2026-11-30", "identify"),
        digest_message_id("kseg", "user:u1", ("Meta", "spring"), "2026-11-29", "identify"),
        digest_message_id("kseg", "user:u1", ("Meta", "summer"), "2026-11-30", "identify"),
        digest_message_id("kseg", "user:u2", ("Meta", "spring"), "2026-11-30", "identify"),
        digest_message_id("other", "user:u1", ("Meta", "spring"), "2026-11-30", "identify"),
    }
    assert len(ids) == 5 and user["messageId"] in ids


def test_default_day_is_yesterday_in_the_reporting_zone() -> None:
    from app.config import Settings
    from app.digest.job import default_day

    now = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)  # still Nov 30 in Toronto
    assert default_day(Settings(kochava_time_zone="UTC"), now) == date(2026, 11, 30)
    assert default_day(Settings(kochava_time_zone="America/Toronto"), now) == date(2026, 11, 29)


def test_an_unknown_time_zone_is_refused_with_an_example() -> None:
    from pydantic import ValidationError

    from app.config import Settings

    with pytest.raises(ValidationError, match="America/Toronto"):
        Settings(kochava_time_zone="Mars/Olympus")


def test_summary_lists_every_campaign_with_its_figures() -> None:
    from app.digest.job import DigestResult

    parsed = parse_rows(
        [row("2026-11-30"), row("2026-11-30", "summer")], column_map(""), window(DAY, 1, "UTC")
    )
    figs = campaign_figures([(r, r.spend) for r in parsed], {("Meta", "spring"): Revenue(day=30)}, DAY, "USD")
    result = DigestResult(
        "r1", "2026-11-30", ("2026-11-24", "2026-11-30"), spend_rows=2, figures=figs, groups=2
    )
    result.identifies[("Meta", "spring")] = 3
    text = result.summary()
    assert "2 spend rows for 2026-11-24..2026-11-30, 2 campaigns, 3 identifies and 2 group calls" in text
    spring = next(line.split() for line in text.splitlines() if line.startswith("Meta") and "spring" in line)
    assert spring[2:7] == ["10", "20.00", "30.00", "2.00", "1.50"] and spring[-1] == "3"
    summer = next(line.split() for line in text.splitlines() if "summer" in line)
    assert summer[4] == "0.00" and summer[-1] == "0"
