"""`kseg warehouse load` and `kseg report roas`: the warehouse's commands (added to `kseg` by app/cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from app.config import Settings

log = logging.getLogger(__name__)

LOAD_HELP = """\
Load the warehouse topic (one row per event) and the campaign.spend topic into the warehouse database,
with its own consumer group: batched COPY + insert-ignore by event_id (spend: upsert by date, network,
campaign), Kafka offsets committed only after the database commit, bad rows to the dead-letter topic.
Database: KSEG_WAREHOUSE_URL, else the embedded PostgreSQL under KSEG_DATA_DIR/postgres (started here
if `kseg run` has not started it). Pages: /metrics /healthz /readyz on KSEG_WAREHOUSE_WEB_PORT.
"""

ROAS_HELP = """\
Revenue, spend, CPI, CPA and ROAS from the warehouse's campaign_performance view. Revenue is credited
to the install campaign (first touch), or to the re-engagement campaign for events Kochava attributed to a
re-engagement. Works while `kseg run` is loading.

examples:
  kseg report roas --by campaign
  kseg report roas --from 2025-01-01 --to 2025-01-31 --by network --csv > roas.csv
  kseg report roas --html roas.html
"""


def _embedded(settings: Settings) -> Any:
    """The embedded server when no URL is configured (started if nobody runs it), else None."""
    if settings.kseg_warehouse_url:
        return None
    from app.warehouse.embedded import EmbeddedWarehouse, pgdata_dir

    return EmbeddedWarehouse(pgdata_dir(settings.kseg_data_dir)).start()


def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    from app.warehouse.db import url
    from app.warehouse.loader import serve

    embedded = _embedded(settings)
    try:
        asyncio.run(serve(settings, url(settings)))
    finally:
        if embedded is not None and embedded.started_here:
            embedded.stop()
    return 0


def _day(text: str) -> date:
    if text == "today":
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD or 'today'") from exc


def cmd_roas(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from app.warehouse import db
    from app.warehouse.report import query, render_csv, render_table

    start: date = args.start or date.min
    end: date = args.to or date.max
    if start > end:
        raise SystemExit(f"kseg report roas: --from {start} is after --to {end}")
    embedded = _embedded(settings)
    try:
        with db.connect(settings) as conn:
            report = query(conn, start, end, args.by)
    except psycopg.errors.UndefinedTable as exc:
        raise SystemExit(
            "kseg report roas: the warehouse has no tables yet. Start `kseg run` (or `kseg warehouse load`) "
            "so the loader creates them and loads the warehouse topic."
        ) from exc
    except psycopg.OperationalError as exc:
        raise SystemExit(f"kseg report roas: cannot reach the warehouse: {str(exc).strip()}") from exc
    finally:
        if embedded is not None and embedded.started_here:
            embedded.stop()
    if args.html:
        from app.warehouse.html import render_html

        Path(args.html).write_text(render_html(report), encoding="utf-8")
        print(
            f"wrote {args.html} ({len(report.rows)} row(s); open it in any browser, no network needed)",
            file=sys.stderr,
        )
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.csv:
        sys.stdout.write(render_csv(report))
    elif not args.html:
        print(render_table(report))
    return 0


def add_parsers(subparsers: Any, settings: Any) -> None:
    """Add `warehouse load` and `report roas`; `settings()` supplies validated Settings."""
    wh = subparsers.add_parser(
        "warehouse",
        help="load Kafka into the warehouse database",
        description="The warehouse loader; see docs/warehouse.md.",
    )
    wsub = wh.add_subparsers(dest="warehouse_command", required=True, metavar="{load}")
    p = wsub.add_parser(
        "load",
        help="run the warehouse loader (a Kafka sink process)",
        description=LOAD_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=lambda a: _with(cmd_load, a, settings, kafka=True))

    rep = subparsers.add_parser(
        "report",
        help="reports from the warehouse (ROAS by campaign)",
        description="Reports from the warehouse database; see docs/warehouse.md.",
    )
    rsub = rep.add_subparsers(dest="report_command", required=True, metavar="{roas}")
    p = rsub.add_parser(
        "roas",
        help="revenue, spend, CPI, CPA and ROAS by network, campaign or channel",
        description=ROAS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--from", dest="start", type=_day, help="first day, YYYY-MM-DD (default: the first with data)"
    )
    p.add_argument(
        "--to", type=_day, help="last day, inclusive, YYYY-MM-DD or today (default: the last with data)"
    )
    p.add_argument(
        "--by",
        choices=("network", "campaign", "channel"),
        default="campaign",
        help="group by network, campaign (network + campaign) or channel (default: campaign)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON instead of the table")
    out.add_argument("--csv", action="store_true", help="print CSV instead of the table")
    p.add_argument(
        "--html", metavar="FILE", help="also write a self-contained HTML page with a chart to FILE"
    )
    p.set_defaults(func=lambda a: _with(cmd_roas, a, settings, kafka=False))


def _with(command: Any, args: argparse.Namespace, settings: Any, kafka: bool) -> int:
    s = settings()
    level = getattr(logging, s.log_level.upper(), logging.INFO)
    logging.basicConfig(
        level=level if kafka else max(level, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if kafka and not s.kafka_bootstrap_servers:
        raise SystemExit(
            "kseg warehouse load: KAFKA_BOOTSTRAP_SERVERS is not set. Use `kseg run` (it starts the loader) "
            "or point it at your Kafka cluster."
        )
    result: int = command(args, s)
    return result
