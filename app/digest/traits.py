"""Per-campaign digest figures (CPI, ROAS over 7 and 30 days) and the Segment calls that carry them.

Pure functions over plain values: the job gives them the report's campaign days and kseg's revenue.
Every call gets a deterministic messageId per (member, campaign, digest day), so a rerun of a day is
deduplicated by Segment instead of counted twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.digest.report import CampaignDay
from app.ids import KSEG_UUID_NAMESPACE

CampaignKey = tuple[str, str]

TRAIT_NAMES = (
    "kochava_campaign_cpi",
    "kochava_campaign_roas_7d",
    "kochava_campaign_roas_30d",
    "kochava_campaign_installs_7d",
    "kochava_campaign_spend_7d",
    "kochava_digest_date",
)


@dataclass(frozen=True)
class Revenue:
    """kseg's revenue (reporting currency) credited to one campaign: on the digest day, 7 and 30 days."""

    day: float = 0.0
    d7: float = 0.0
    d30: float = 0.0


@dataclass(frozen=True)
class CampaignFigures:
    """One campaign's digest: the day's Kochava figures plus 7/30-day sums, spend in reporting currency."""

    network: str
    campaign: str
    digest_date: str
    installs: int
    spend: float | None
    installs_7d: int
    spend_7d: float | None
    spend_30d: float | None
    revenue: float
    revenue_7d: float
    revenue_30d: float
    reporting_currency: str

    @property
    def key(self) -> CampaignKey:
        return (self.network, self.campaign)

    @property
    def cpi(self) -> float | None:
        """Spend ÷ Kochava installs over the 7-day window (a single day's CPI is mostly noise)."""
        return _ratio(self.spend_7d, self.installs_7d)

    @property
    def roas_7d(self) -> float | None:
        return _ratio(self.revenue_7d, self.spend_7d)

    @property
    def roas_30d(self) -> float | None:
        return _ratio(self.revenue_30d, self.spend_30d)

    @property
    def day_cpi(self) -> float | None:
        return _ratio(self.spend, self.installs)

    @property
    def day_roas(self) -> float | None:
        return _ratio(self.revenue, self.spend)

    def traits(self) -> dict[str, Any]:
        """The computed traits (null when undefined, e.g. no spend), rounded for people to read."""
        return {
            "kochava_campaign_cpi": _round(self.cpi),
            "kochava_campaign_roas_7d": _round(self.roas_7d),
            "kochava_campaign_roas_30d": _round(self.roas_30d),
            "kochava_campaign_installs_7d": self.installs_7d,
            "kochava_campaign_spend_7d": _round(self.spend_7d),
            "kochava_digest_date": self.digest_date,
        }


def _ratio(num: float | None, den: float | int | None) -> float | None:
    if num is None or not den:
        return None
    return num / den


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def campaign_figures(
    days: Sequence[tuple[CampaignDay, float | None]],
    revenue: dict[CampaignKey, Revenue],
    digest_day: date,
    reporting_currency: str,
) -> list[CampaignFigures]:
    """Figures of every campaign that has report rows in the 30 days up to `digest_day`.

    `days` pairs each report row with its spend in the reporting currency (None: no rate, so the
    campaign's spend sums are None rather than a sum of mixed currencies)."""
    first7 = digest_day - timedelta(days=6)
    first30 = digest_day - timedelta(days=29)
    acc: dict[CampaignKey, dict[str, Any]] = {}
    for row, spend in days:
        when = date.fromisoformat(row.date)
        if not first30 <= when <= digest_day:
            continue
        a = acc.setdefault(
            row.campaign_key,
            {"installs": 0, "spend": 0.0, "installs_7d": 0, "spend_7d": 0.0, "spend_30d": 0.0},
        )
        windows = {"": when == digest_day, "_7d": when >= first7, "_30d": True}
        for suffix in (w for w, inside in windows.items() if inside):
            if suffix != "_30d":
                a[f"installs{suffix}"] += row.installs
            a[f"spend{suffix}"] = _add(a[f"spend{suffix}"], spend)
    out = []
    for key in sorted(acc):
        a, rev = acc[key], revenue.get(key, Revenue())
        out.append(
            CampaignFigures(
                network=key[0],
                campaign=key[1],
                digest_date=digest_day.isoformat(),
                installs=a["installs"],
                spend=_money(a["spend"]),
                installs_7d=a["installs_7d"],
                spend_7d=_money(a["spend_7d"]),
                spend_30d=_money(a["spend_30d"]),
                revenue=rev.day,
                revenue_7d=rev.d7,
                revenue_30d=rev.d30,
                reporting_currency=reporting_currency,
            )
        )
    return out


def _add(total: float | None, value: float | None) -> float | None:
    """Sum that turns None (a spend without a rate) once any part is None: never mixes currencies."""
    return None if total is None or value is None else total + value


def _money(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def group_id(key: CampaignKey) -> str:
    """A stable campaign key for `group` calls: network and campaign names as Kochava reports them."""
    return f"kochava:{key[0]}/{key[1]}"


def digest_timestamp(digest_day: date, zone: str) -> str:
    """The last second of the digest day in the reporting time zone, as UTC ISO-8601 (deterministic)."""
    end = datetime.combine(digest_day + timedelta(days=1), time(0), ZoneInfo(zone)) - timedelta(seconds=1)
    return end.astimezone(ZoneInfo("UTC")).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def digest_message_id(namespace: str, member: str, key: CampaignKey, digest_date: str, part: str) -> str:
    """uuid5 of (namespace, call part, member, campaign, digest day): same inputs, same id, every run."""
    name = f"{namespace}:digest:{part}:{member}:{key[0]}|{key[1]}:{digest_date}"
    return str(uuid.uuid5(KSEG_UUID_NAMESPACE, name))


def _context(fig: CampaignFigures) -> dict[str, Any]:
    return {
        "library": {"name": "kseg"},
        "kseg": {"source": "digest", "network": fig.network, "campaign": fig.campaign},
    }


def identify_call(
    fig: CampaignFigures,
    *,
    user_id: str | None,
    anonymous_id: str | None,
    timestamp: str,
    namespace: str,
) -> dict[str, Any]:
    """The identify that refreshes one cohort member's campaign traits (userId when known)."""
    member = f"user:{user_id}" if user_id else f"anon:{anonymous_id}"
    msg: dict[str, Any] = {
        "type": "identify",
        "messageId": digest_message_id(namespace, member, fig.key, fig.digest_date, "identify"),
        "timestamp": timestamp,
    }
    if anonymous_id:
        msg["anonymousId"] = anonymous_id
    if user_id:
        msg["userId"] = user_id
    msg["traits"] = fig.traits()
    msg["context"] = _context(fig)
    return msg


def group_call(fig: CampaignFigures, *, timestamp: str, namespace: str) -> dict[str, Any]:
    """One `group` per campaign (groupId = the campaign key) for tools that model campaigns as accounts.

    A group call needs a user; the campaign's own synthetic anonymousId stands in."""
    gid = group_id(fig.key)
    return {
        "type": "group",
        "messageId": digest_message_id(namespace, gid, fig.key, fig.digest_date, "group"),
        "timestamp": timestamp,
        "anonymousId": gid,
        "groupId": gid,
        "traits": {
            "name": fig.campaign,
            "network": fig.network,
            "kochava_campaign": fig.campaign,
            "kochava_network": fig.network,
            **fig.traits(),
        },
        "context": _context(fig),
    }
