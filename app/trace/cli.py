"""`kseg trace ID [--json]`: one device's or user's timeline from the warehouse (registered in app/cli.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.config import Settings

HELP = """\
Follow a device or a user through kseg: each postback as received, what processing did with it (mapped with
the profile and version, a repeat, parked, dead-lettered and why), each Segment call with Segment's answer,
HTTP status and attempts, the warehouse row, the Kochava sends and the identity it resolved to.

ID is any of: a Kochava device id, IDFA, IDFV, GAID/adid, Android id, a userId, a kseg event id or a Segment
messageId. Reads the warehouse (KSEG_WAREHOUSE_URL, else the embedded one under KSEG_DATA_DIR), which the
loader fills within seconds of the postback.

examples:
  kseg trace KOC1234567890
  kseg trace 6D92078A-8246-4BA4-AE5B-76104861E7DC --json
"""


def cmd_trace(args: argparse.Namespace, settings: Settings) -> int:
    import orjson
    import psycopg

    from app.trace.render import render_text
    from app.trace.timeline import timeline
    from app.warehouse import db
    from app.warehouse.db import WarehouseUnavailable

    embedded = None
    if not settings.kseg_warehouse_url:
        from app.warehouse.embedded import EmbeddedWarehouse, pgdata_dir

        embedded = EmbeddedWarehouse(pgdata_dir(settings.kseg_data_dir)).start()
    try:
        with db.connect(settings) as conn:
            found = timeline(conn, args.id)
    except psycopg.errors.UndefinedTable as exc:
        raise SystemExit(
            "kseg trace: the warehouse has no trace tables yet. Start `kseg run` (or `kseg warehouse load`) "
            "so the loader creates them."
        ) from exc
    except (psycopg.OperationalError, WarehouseUnavailable) as exc:
        raise SystemExit(f"kseg trace: cannot reach the warehouse: {str(exc).strip()}") from exc
    finally:
        if embedded is not None and embedded.started_here:
            embedded.stop()
    if args.json:
        sys.stdout.write(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_text(found))
    return 0 if found["matched_as"] is not None else 1


def add_parsers(subparsers: Any, settings: Any) -> None:
    """Add `trace`; `settings()` supplies validated Settings."""
    p = subparsers.add_parser(
        "trace",
        help="follow a device, user, event or Segment messageId through kseg",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("id", help="device id (any type), userId, event id or Segment messageId")
    p.add_argument("--json", action="store_true", help="print the timeline as JSON")
    p.set_defaults(func=lambda a: cmd_trace(a, settings()))
