"""The digest's summary report: its request body, its time window, and its rows read through the column map.

Summary column names are undocumented (docs/reference.md#kochava-reporting-api), so every name is read
through a column map: kseg's assumed defaults, overridden by `KOCHAVA_COLUMN_MAP` once `kseg digest columns`
shows the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

#: Logical field -> report column (kseg's assumed names, docs/reference.md#kochava-reporting-api).
DEFAULT_COLUMNS: dict[str, str] = {
    "date": "date",
    "network": "network",
    "network_id": "network_id",
    "campaign": "campaign",
    "campaign_id": "campaign_id",
    "clicks": "clicks",
    "impressions": "impressions",
    "installs": "installs",
    "click_spend": "click_spend",
    "impression_spend": "impression_spend",
    "install_spend": "install_spend",
    "spend": "spend",
}
REQUIRED = ("date", "network", "campaign")
SPEND_PARTS = ("click_spend", "impression_spend", "install_spend")
TRAFFIC = ["click", "impression", "install", "event", "network_spend_restated"]
NO_VALUE = "(none)"


class ColumnMapError(ValueError):
    """The column map or a report row does not fit: says which names to fix."""


def column_map(spec: str) -> dict[str, str]:
    """Defaults overridden by `field=column,...` (KOCHAVA_COLUMN_MAP); unknown fields are refused."""
    mapping = dict(DEFAULT_COLUMNS)
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, column = part.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or not column:
            raise ColumnMapError(f"KOCHAVA_COLUMN_MAP entry {part!r} is not `field=column`")
        if name not in DEFAULT_COLUMNS:
            raise ColumnMapError(
                f"KOCHAVA_COLUMN_MAP names unknown field {name!r}; fields are {', '.join(DEFAULT_COLUMNS)}"
            )
        mapping[name] = column
    return mapping


@dataclass(frozen=True)
class Window:
    """Digest days `first`..`last` (inclusive, local dates) and the full-hour epoch bounds asked for."""

    first: date
    last: date
    time_start: int
    time_end: int

    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]


def window(last: date, days: int, zone: str) -> Window:
    """Local midnight of `last - days + 1` to local midnight after `last`, widened to full hours
    (Kochava refuses other bounds; zones like +05:30 have midnights off the hour, and rows outside the
    days are dropped by date afterwards)."""
    tz = ZoneInfo(zone)
    first = last - timedelta(days=days - 1)
    start = int(datetime.combine(first, datetime.min.time(), tz).timestamp())
    end = int(datetime.combine(last + timedelta(days=1), datetime.min.time(), tz).timestamp())
    return Window(first, last, start - start % 3600, end + (-end) % 3600)


def summary_body(win: Window, zone: str) -> dict[str, Any]:
    """The summary request (without auth): daily rows grouped by network and campaign, as JSON."""
    return {
        "time_start": str(win.time_start),
        "time_end": str(win.time_end),
        "traffic": list(TRAFFIC),
        "traffic_grouping": ["network", "campaign"],
        "time_series": "24",
        "time_zone": zone,
        "delivery_method": ["S3link"],
        "delivery_format": "json",
    }


@dataclass(frozen=True)
class CampaignDay:
    """One report row: a campaign's figures on one local day (spend in the report's currency)."""

    date: str
    network: str
    campaign: str
    network_id: str | None
    campaign_id: str | None
    clicks: int
    impressions: int
    installs: int
    spend: float

    @property
    def campaign_key(self) -> tuple[str, str]:
        return (self.network, self.campaign)


def _number(row: dict[str, Any], column: str, field: str) -> float:
    value = row.get(column)
    if value is None or value == "":
        return 0.0
    try:
        return float(str(value).replace(",", ""))
    except ValueError:
        raise ColumnMapError(f"column {column!r} ({field}) holds {value!r}, not a number") from None


def _text(row: dict[str, Any], column: str) -> str | None:
    value = row.get(column)
    return None if value is None or str(value).strip() == "" else str(value).strip()


def parse_rows(rows: list[dict[str, Any]], columns: dict[str, str], win: Window) -> list[CampaignDay]:
    """Report rows → campaign days within the window; refuses rows the column map cannot read."""
    if rows:
        present = set().union(*(r.keys() for r in rows))
        missing = [f"{f} (column {columns[f]!r})" for f in REQUIRED if columns[f] not in present]
        if missing:
            raise ColumnMapError(
                f"the report has no {', '.join(missing)}; its columns are {sorted(present)}. "
                "Set KOCHAVA_COLUMN_MAP (see `kseg digest columns`)."
            )
    wanted = {d.isoformat() for d in win.days()}
    out: dict[tuple[str, str, str], CampaignDay] = {}
    for row in rows:
        day = (_text(row, columns["date"]) or "")[:10]
        if day not in wanted:
            continue
        if columns["spend"] in row:
            spend = _number(row, columns["spend"], "spend")
        else:
            spend = sum(_number(row, columns[p], p) for p in SPEND_PARTS)
        item = CampaignDay(
            date=day,
            network=_text(row, columns["network"]) or NO_VALUE,
            campaign=_text(row, columns["campaign"]) or NO_VALUE,
            network_id=_text(row, columns["network_id"]),
            campaign_id=_text(row, columns["campaign_id"]),
            clicks=int(_number(row, columns["clicks"], "clicks")),
            impressions=int(_number(row, columns["impressions"], "impressions")),
            installs=int(_number(row, columns["installs"], "installs")),
            spend=round(spend, 6),
        )
        out[(item.date, item.network, item.campaign)] = item
    return [out[k] for k in sorted(out)]
