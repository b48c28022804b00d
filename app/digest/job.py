"""One digest run: Kochava summary report → spend rows → campaign figures → traits on every cohort member.

Order matters for "nothing written on failure": the report is fetched and read, and the warehouse's
revenue is read, before the first record is produced. Everything produced is idempotent: spend rows are
upserted by (date, network, campaign) and Segment calls carry deterministic messageIds, so running a day
again replaces its figures and sends nothing Segment has not deduplicated.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app import topics
from app.digest import cohort
from app.digest.client import ReportingClient, ReportingError
from app.digest.report import CampaignDay, ColumnMapError, column_map, parse_rows, summary_body, window
from app.digest.spend import spend_key, spend_row
from app.digest.traits import (
    CampaignFigures,
    campaign_figures,
    digest_timestamp,
    group_call,
    identify_call,
)
from app.dlq.writer import dead_letter_record
from app.lifecycle.config import load_config_rates
from app.lifecycle.currency import Rates, RatesError, to_reporting
from app.records import DeadLetter, SegmentCalls, dumps, utc_now_iso
from app.sections import DigestSettings
from app.sinks.ratelimit import AdaptiveRateLimiter
from app.sinks.segment.validation import problems, reason_for

#: The 30-day ROAS trait needs 30 days of spend, so at least that much is always fetched.
TRAIT_DAYS = 30

#: `send(topic, key, value)`: produce one record and wait for its ack (the worker's output producer or the
#: CLI's aiokafka producer).
Send = Callable[[str, bytes, bytes], Awaitable[None]]
#: Records the Segment sink has not delivered yet (the outbox lag); None: do not look.
Backlog = Callable[[], Awaitable[int]]
#: The fan-out asks for the backlog every this many queued calls, and pauses at most this long at once.
BACKLOG_EVERY = 500
BACKLOG_MAX_PAUSE = 600.0
#: Opens the warehouse connection (an async context manager yielding a psycopg AsyncConnection).
ConnectWarehouse = Callable[[], Any]


class DigestError(RuntimeError):
    """A digest run failed before or while writing; the message says what to do."""

    def __init__(self, message: str, code: str = "digest_error") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class DigestResult:
    """What one run did: the day, the figures per campaign, and every count the summary prints."""

    run_id: str
    digest_date: str
    refreshed: tuple[str, str]
    spend_rows: int = 0
    figures: list[CampaignFigures] = field(default_factory=list)
    identifies: Counter[tuple[str, str]] = field(default_factory=Counter)
    groups: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    api_calls: int = 0
    api_retries: dict[str, int] = field(default_factory=dict)
    backlog_pauses: int = 0

    def summary(self) -> str:
        """The per-campaign table people read after `kseg digest run`."""
        cur = self.figures[0].reporting_currency if self.figures else ""
        head = (
            f"Kochava digest {self.digest_date} (run {self.run_id}): {self.spend_rows} spend rows for "
            f"{self.refreshed[0]}..{self.refreshed[1]}, {len(self.figures)} campaigns, "
            f"{sum(self.identifies.values())} identifies and {self.groups} group calls queued for Segment."
        )
        cols = f"{'network':<16} {'campaign':<24} {'installs':>8} {'spend':>12} {'revenue':>12} "
        cols += f"{'CPI':>9} {'ROAS':>7} {'CPI 7d':>9} {'ROAS 7d':>8} {'ROAS 30d':>8} {'identifies':>10}"
        lines = [head, f"(figures of {self.digest_date}; money in {cur})", cols]
        for f in self.figures:
            lines.append(
                f"{f.network[:16]:<16} {f.campaign[:24]:<24} {f.installs:>8} {_fmt(f.spend, 2):>12} "
                f"{_fmt(f.revenue, 2):>12} {_fmt(f.day_cpi, 2):>9} {_fmt(f.day_roas, 2):>7} "
                f"{_fmt(f.cpi, 2):>9} {_fmt(f.roas_7d, 2):>8} {_fmt(f.roas_30d, 2):>8} "
                f"{self.identifies.get(f.key, 0):>10}"
            )
        if self.dead_letters:
            lines.append(f"dead letters: {dict(self.dead_letters)} (see `kseg dlq`)")
        if self.backlog_pauses:
            lines.append(f"paused {self.backlog_pauses} times for live traffic (Segment outbox backlog)")
        if self.api_retries:
            lines.append(f"Reporting API retries: {self.api_retries}")
        return "\n".join(lines)


def _fmt(value: float | None, places: int) -> str:
    return "-" if value is None else f"{value:,.{places}f}"


def default_day(settings: DigestSettings, now: datetime | None = None) -> date:
    """Yesterday in the app's reporting time zone (the last complete day)."""
    local = (now or datetime.now(UTC)).astimezone(ZoneInfo(settings.kochava_time_zone))
    return local.date() - timedelta(days=1)


def reporting_rates(settings: DigestSettings) -> Rates:
    """The rates of KSEG_REPORTING_CURRENCY; a rate file that does not load fails the run, saying why."""
    try:
        return load_config_rates(settings)
    except RatesError as exc:
        raise DigestError(str(exc), "rates") from exc


def revenue_window(day: date, zone: str) -> cohort.RevenueWindow:
    tz = ZoneInfo(zone)

    def start(d: date) -> datetime:
        return datetime.combine(d, time(0), tz)

    return cohort.RevenueWindow(
        day=start(day),
        d7=start(day - timedelta(days=6)),
        d30=start(day - timedelta(days=TRAIT_DAYS - 1)),
        end=start(day + timedelta(days=1)),
    )


async def run_digest(
    settings: DigestSettings,
    *,
    day: date,
    days: int,
    client: ReportingClient,
    send: Send,
    connect_warehouse: ConnectWarehouse,
    pacer: AdaptiveRateLimiter | None = None,
    backlog: Backlog | None = None,
    run_id: str | None = None,
) -> DigestResult:
    """Digest `day`, refreshing the spend of `days` days ending on it; see the module docstring."""
    zone = settings.kochava_time_zone
    refresh_first = day - timedelta(days=days - 1)
    result = DigestResult(
        run_id=run_id or uuid.uuid4().hex[:12],
        digest_date=day.isoformat(),
        refreshed=(refresh_first.isoformat(), day.isoformat()),
    )
    rates = reporting_rates(settings)
    try:
        columns = column_map(settings.kochava_column_map)
        win = window(day, max(days, TRAIT_DAYS), zone)
        raw = await client.run_report("summary", summary_body(win, zone))
        rows = parse_rows(raw, columns, win)
    except ReportingError as exc:
        raise DigestError(str(exc), exc.code) from exc
    except ColumnMapError as exc:
        raise DigestError(str(exc), "column_map") from exc
    finally:
        result.api_calls, result.api_retries = client.stats.calls, dict(client.stats.retries)
    currency = settings.kochava_spend_currency.upper()
    paired = [(r, to_reporting(r.spend, currency, rates)) for r in rows]

    try:
        async with connect_warehouse() as conn:
            await _write(settings, result, conn, rows, paired, day, days, rates, send, pacer, backlog)
    except cohort.WarehouseError as exc:
        raise DigestError(str(exc), "warehouse") from exc
    return result


async def _write(
    settings: DigestSettings,
    result: DigestResult,
    conn: Any,
    rows: list[CampaignDay],
    paired: list[tuple[CampaignDay, float | None]],
    day: date,
    days: int,
    rates: Rates,
    send: Send,
    pacer: AdaptiveRateLimiter | None,
    backlog: Backlog | None,
) -> None:
    """Revenue first (a warehouse failure writes nothing), then spend rows, then the Segment fan-out."""
    zone = settings.kochava_time_zone
    refresh_first = day - timedelta(days=days - 1)
    currency = settings.kochava_spend_currency.upper()
    revenue = await cohort.revenue(conn, revenue_window(day, zone), rates.reporting_currency)
    result.figures = campaign_figures(paired, revenue, day, rates.reporting_currency)

    fetched_at = utc_now_iso()
    spend_topic = settings.topic(topics.SPEND)
    for row in rows:
        if row.date < refresh_first.isoformat():
            continue
        value = spend_row(row, currency=currency, rates=rates, run_id=result.run_id, fetched_at=fetched_at)
        await send(spend_topic, spend_key(row).encode(), dumps(value))
        result.spend_rows += 1

    await _fan_out(settings, result, conn, send, pacer, backlog, digest_timestamp(day, zone))


async def _fan_out(
    settings: DigestSettings,
    result: DigestResult,
    conn: Any,
    send: Send,
    pacer: AdaptiveRateLimiter | None,
    backlog: Backlog | None,
    timestamp: str,
) -> None:
    """One group call per campaign, then one identify per cohort member, paced by `pacer` and held
    back while the Segment outbox has a backlog (live traffic first)."""
    outbox = settings.topic(topics.OUTBOX)
    by_key = {f.key: f for f in result.figures}
    ns = settings.kseg_namespace
    queued = 0

    async def queue(message: dict[str, Any], key: str) -> bool:
        nonlocal queued
        found = problems(message)
        if found:
            letter = DeadLetter(
                stage="digest",
                reason=reason_for(found),
                error="; ".join(found),
                event_id=message.get("messageId"),
                payload=message,
            )
            await send(settings.topic(topics.DEADLETTER), *dead_letter_record(letter))  # counted by the agent
            result.dead_letters[letter.reason] += 1
            return False
        if backlog is not None and queued % BACKLOG_EVERY == 0:
            result.backlog_pauses += await wait_for_room(backlog, settings.kochava_digest_max_backlog)
        if pacer is not None:
            await pacer.acquire()
        await send(outbox, key.encode(), SegmentCalls(messages=[message]).encode())
        queued += 1
        return True

    for fig in result.figures:
        if await queue(group_call(fig, timestamp=timestamp, namespace=ns), fig.network + "|" + fig.campaign):
            result.groups += 1
    async for member in cohort.members(conn, by_key):
        fig = by_key[member.key]
        msg = identify_call(
            fig, user_id=member.user_id, anonymous_id=member.anonymous_id, timestamp=timestamp, namespace=ns
        )
        if await queue(msg, member.anonymous_id):
            result.identifies[member.key] += 1


async def wait_for_room(
    backlog: Backlog, limit: int, poll: float = 2.0, max_pause: float = BACKLOG_MAX_PAUSE
) -> int:
    """Wait while the outbox backlog is above `limit` (0: never wait), at most `max_pause` seconds:
    a sink stopped by a wrong write key must not hold the digest forever. Returns 1 if it paused."""
    if limit <= 0:
        return 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_pause
    paused = 0
    while await backlog() > limit and loop.time() < deadline:
        paused = 1
        await asyncio.sleep(poll)
    return paused
