"""Spend rows for the `campaign.spend` topic (schema: topics/schemas/campaign-spend.schema.json).

The key `{date}|{network}|{campaign}` is the warehouse's upsert key, so a rerun or a restatement
replaces a day's figures instead of adding to them.
"""

from __future__ import annotations

from typing import Any

from app.digest.report import CampaignDay
from app.lifecycle.currency import Rates, to_reporting


def spend_key(row: CampaignDay) -> str:
    return f"{row.date}|{row.network}|{row.campaign}"


def spend_row(
    row: CampaignDay, *, currency: str, rates: Rates, run_id: str, fetched_at: str
) -> dict[str, Any]:
    """The contract's spend row for one report row; `spend_reporting` is None without a rate."""
    return {
        "date": row.date,
        "network": row.network,
        "campaign": row.campaign,
        "network_id": row.network_id,
        "campaign_id": row.campaign_id,
        "clicks": row.clicks,
        "impressions": row.impressions,
        "installs": row.installs,
        "spend": row.spend,
        "currency": currency.upper(),
        "spend_reporting": to_reporting(row.spend, currency, rates),
        "reporting_currency": rates.reporting_currency,
        "digest_run_id": run_id,
        "fetched_at": fetched_at,
    }
