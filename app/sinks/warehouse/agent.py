"""Warehouse export: appends each warehouse row to a daily JSONL file under KSEG_DATA_DIR/warehouse.

A separate agent with its own consumer progress, so a Segment outage never stops BI exports. Rows are
keyed by event_id; loaders dedupe on it (at-least-once delivery).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from app.records import loads
from app.worker import channels
from app.worker.faust_app import app, settings
from app.worker.watchdog import activity

EXPORT_DIR = (settings.kseg_data_dir / "warehouse").resolve()


def _append(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as out:
        out.write(b"".join(line + b"\n" for line in lines))
        out.flush()


@app.agent(channels.warehouse, name="warehouse-export")
async def warehouse_export(stream: Any) -> None:
    s = stream.noack()
    async for events in s.noack_take(500, within=0.5):
        with activity.working("warehouse-export"):
            await _export(s, events)


async def _export(s: Any, events: list[Any]) -> None:
    """Append a batch to the daily files, then ack it."""
    by_day: dict[str, list[bytes]] = {}
    for event in events:
        value = bytes(event.value or b"")
        try:
            day = str(loads(value).get("event_time", ""))[:10] or "unknown"
        except Exception:
            day = "undecodable"
        by_day.setdefault(day, []).append(value)
    for day, lines in by_day.items():
        await asyncio.to_thread(_append, EXPORT_DIR / f"events-{day}.jsonl", lines)
    for event in events:
        await s.ack(event)
