"""`kseg digest run` and `kseg digest columns`: the campaign digest from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import date
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from app.config import Settings
from app.digest.client import ReportingClient, ReportingError
from app.digest.cohort import warehouse_connection
from app.digest.job import DigestError, DigestResult, default_day, run_digest
from app.digest.report import DEFAULT_COLUMNS, ColumnMapError, column_map
from app.kafka import group_lag, producer_config
from app.sinks.ratelimit import AdaptiveRateLimiter
from app.topics import OUTBOX

RUN_HELP = "fetch a day's Kochava campaign report; write spend and refresh campaign traits in Segment"
RUN_DESCRIPTION = """\
Fetch the Kochava summary report (network x campaign, daily) for --date and the days before it,
write one spend row per day and campaign to the campaign.spend topic (the warehouse upserts it:
a rerun replaces, never adds), and queue one Segment identify per cohort member (users whose first
touch is the campaign) plus one group call per campaign, through the Segment outbox.

Needs KOCHAVA_API_KEY, KOCHAVA_APP_GUID, KAFKA_BOOTSTRAP_SERVERS and the warehouse (KSEG_WAREHOUSE_URL
or `kseg run`'s embedded one). Exits 1 with the reason when Kochava refuses the key or the report
never completes; nothing is written then.
"""
COLUMNS_HELP = "print the summary report's column names (to fix KOCHAVA_COLUMN_MAP)"


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-30") from None


def _days(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError("--days must be a whole number from 1 to 100")
    return int(text)


def add_parser(
    sub: Any,
    with_kafka: Callable[[Callable[..., int], argparse.Namespace], int],
    settings: Callable[[], Settings],
) -> None:
    """`kseg digest ...`; `with_kafka(command, args)` runs a command that needs the Kafka settings,
    `settings()` gives the validated settings to one that does not."""
    digest = sub.add_parser(
        "digest",
        help="daily Kochava campaign digest: spend, CPI and ROAS, traits on the cohort",
        description="The campaign digest: Kochava Reporting API -> spend in the warehouse, CPI/ROAS traits "
        "in Segment. The worker runs it daily at KOCHAVA_DIGEST_HOUR; these commands run it by hand.",
    )
    dsub = digest.add_subparsers(dest="digest_command", required=True, metavar="{run,columns}")
    p = dsub.add_parser(
        "run",
        help=RUN_HELP,
        description=RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--date", type=_date, help="digest day, YYYY-MM-DD (default: yesterday in KOCHAVA_TIME_ZONE)"
    )
    p.add_argument(
        "--days", type=_days, help="days of spend refreshed, ending at --date (default KOCHAVA_DIGEST_DAYS)"
    )
    p.set_defaults(func=lambda args: with_kafka(cmd_run, args))
    p = dsub.add_parser("columns", help=COLUMNS_HELP, description=COLUMNS_HELP + ".")
    p.add_argument("--report", default="summary", help="report type to ask about (default: summary)")
    p.set_defaults(func=lambda args: cmd_columns(args, settings()))


def _fail(message: str) -> int:
    sys.stderr.write(f"kseg digest: {message}\n")
    return 1


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    day = args.date or default_day(settings)
    days = args.days or settings.kochava_digest_days
    try:
        result = asyncio.run(run_from_cli(settings, day, days))
    except DigestError as exc:
        return _fail(f"{exc} [{exc.code}]")
    except ReportingError as exc:
        return _fail(str(exc))
    print(result.summary())
    return 0


def cmd_columns(args: argparse.Namespace, settings: Settings) -> int:
    try:
        mapping = column_map(settings.kochava_column_map)
        names = asyncio.run(_columns(settings, args.report))
    except (ReportingError, ColumnMapError) as exc:
        return _fail(str(exc))
    print(f"Kochava {args.report} report columns ({len(names)}):")
    for name in names:
        print(f"  {name}")
    print("\nkseg reads them through this column map (override with KOCHAVA_COLUMN_MAP=installs=name,...):")
    available = set(names)
    for field, column in mapping.items():
        mark = "ok" if column in available else "MISSING"
        note = " (optional: else the sum of the three spend parts)" if field == "spend" else ""
        default = "" if DEFAULT_COLUMNS[field] == column else f" (default {DEFAULT_COLUMNS[field]})"
        print(f"  {field:<17} <- {column:<24} {mark}{default}{note}")
    return 0


async def _columns(settings: Settings, report: str) -> list[str]:
    async with ReportingClient.from_settings(settings) as client:
        return await client.report_columns(report)


async def run_from_cli(settings: Settings, day: date, days: int) -> DigestResult:
    """One run with its own Kafka producer (every record acked before the next)."""
    producer = AIOKafkaProducer(**producer_config(settings))
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise DigestError(f"cannot reach Kafka at {settings.bootstrap}: {exc!r}", "kafka") from exc

    async def send(topic: str, key: bytes, value: bytes) -> None:
        await producer.send_and_wait(topic, value=value, key=key)

    try:
        async with ReportingClient.from_settings(settings) as client:
            return await run_digest(
                settings,
                day=day,
                days=days,
                client=client,
                send=send,
                connect_warehouse=lambda: warehouse_connection(settings),
                pacer=AdaptiveRateLimiter(settings.kochava_digest_rate),
                backlog=lambda: group_lag(settings, settings.sink_group("segment"), settings.topic(OUTBOX)),
            )
    finally:
        await producer.stop()
