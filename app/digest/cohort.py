"""Cohorts and revenue for the digest, read from the warehouse (`kseg_events`, docs/warehouse.md).

Why the warehouse and not a worker table: it already holds every event with its resolved user and the
device's first touch (`install_network`/`install_campaign`), durably and indexed by campaign, so a
cohort is one streamed query; a faust table keyed by campaign would hold a million members in one value,
and scanning the device-profile tables would need every partition on one worker. The price: the cohort
is as fresh as the warehouse loader (seconds behind the stream).

Portable SQL only (no DISTINCT ON, no FILTER), like the warehouse's own DDL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.digest.report import NO_VALUE
from app.digest.traits import CampaignKey, Revenue
from app.sections import WarehouseSettings

EVENTS = "kseg_events"


class WarehouseError(RuntimeError):
    """The warehouse cannot be reached: the digest cannot read cohorts or revenue."""


#: One row per (campaign, device): the device's resolved user (when any), ordered by member.
COHORT_SQL = f"""
SELECT COALESCE(install_network, '{NO_VALUE}') AS network, install_campaign AS campaign,
       MAX(user_id) AS user_id, anonymous_id
FROM {EVENTS}
WHERE install_campaign IS NOT NULL AND anonymous_id IS NOT NULL
GROUP BY COALESCE(install_network, '{NO_VALUE}'), install_campaign, anonymous_id
ORDER BY 1, 2, COALESCE(MAX(user_id), anonymous_id), anonymous_id
"""


def revenue_sql(reporting_currency: str) -> str:
    """Purchase revenue credited to the install (first-touch) campaign on the day, 7 and 30 days."""
    code = reporting_currency.replace("'", "")
    rev = (
        "COALESCE(revenue_reporting, CASE WHEN currency = '" + code + "' "
        "OR (currency IS NULL AND revenue IS NOT NULL) THEN revenue END)"
    )
    return f"""
SELECT network, campaign,
       SUM(CASE WHEN event_time >= %(day)s THEN rev ELSE 0 END),
       SUM(CASE WHEN event_time >= %(d7)s THEN rev ELSE 0 END),
       SUM(rev)
FROM (
  SELECT COALESCE(install_network, '{NO_VALUE}') AS network, install_campaign AS campaign, event_time,
         {rev} AS rev
  FROM {EVENTS}
  WHERE event_type = 'purchase' AND install_campaign IS NOT NULL
    AND event_time >= %(d30)s AND event_time < %(end)s
) credited
GROUP BY network, campaign
"""


@dataclass(frozen=True)
class Member:
    """One cohort member: a user (with one of their devices' anonymousId) or an anonymous device."""

    key: CampaignKey
    user_id: str | None
    anonymous_id: str

    @property
    def member(self) -> str:
        return f"user:{self.user_id}" if self.user_id else f"anon:{self.anonymous_id}"


@dataclass(frozen=True)
class RevenueWindow:
    """Bounds (aware datetimes) of the digest day, its 7-day and 30-day windows, and their end."""

    day: datetime
    d7: datetime
    d30: datetime
    end: datetime


async def revenue(conn: Any, window: RevenueWindow, reporting_currency: str) -> dict[CampaignKey, Revenue]:
    """kseg's revenue per install campaign over the digest windows."""
    import psycopg

    params = {"day": window.day, "d7": window.d7, "d30": window.d30, "end": window.end}
    try:
        async with conn.cursor() as cur:
            await cur.execute(revenue_sql(reporting_currency), params)
            rows = await cur.fetchall()
    except psycopg.Error as exc:
        raise WarehouseError(f"cannot read revenue from {EVENTS}: {str(exc).strip()}") from exc
    return {
        (str(n), str(c)): Revenue(day=float(d or 0), d7=float(w or 0), d30=float(m or 0))
        for n, c, d, w, m in rows
    }


async def members(conn: Any, campaigns: Iterable[CampaignKey], batch: int = 2000) -> AsyncIterator[Member]:
    """Every member of the cohorts of `campaigns`, each user once per campaign, streamed (server-side
    cursor) so a million-user campaign is never held in memory."""
    import psycopg

    wanted = set(campaigns)
    last: tuple[CampaignKey, str] | None = None
    try:
        async with conn.transaction(), conn.cursor(name="kseg_digest_cohort") as cur:
            cur.itersize = batch
            await cur.execute(COHORT_SQL)
            async for network, campaign, user_id, anonymous_id in cur:
                key = (str(network), str(campaign))
                if key not in wanted:
                    continue
                member = Member(key, str(user_id) if user_id else None, str(anonymous_id))
                if last == (key, member.member):
                    continue  # the same user's second device in the same campaign
                last = (key, member.member)
                yield member
    except psycopg.Error as exc:
        raise WarehouseError(f"cannot read the cohorts from {EVENTS}: {str(exc).strip()}") from exc


@asynccontextmanager
async def warehouse_connection(settings: WarehouseSettings) -> AsyncIterator[Any]:
    """An async psycopg connection to the warehouse (`app.warehouse.db`)."""
    from app.warehouse import db

    try:
        target = db.url(settings)
    except db.WarehouseUnavailable as exc:
        raise WarehouseError(str(exc)) from exc
    try:
        conn = await db.connect_async(target)
    except Exception as exc:
        raise WarehouseError(
            f"cannot open the warehouse at {target}: {exc}. Start `kseg run` (or `kseg warehouse load`), "
            "or set KSEG_WAREHOUSE_URL."
        ) from exc
    try:
        yield conn
    finally:
        await conn.close()
