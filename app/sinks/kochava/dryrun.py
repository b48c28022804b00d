"""Dry run: with no KOCHAVA_APP_GUID, append the exact Kochava requests to KSEG_DATA_DIR/kochava-outbox.jsonl.

One JSON object per line: `{"method": "POST", "url": ..., "body": ...}`, the body exactly as the sink would
post it (`kochava_app_id` null until a GUID is configured). Same `deliver()` contract as `KochavaSender`:
when it returns, every line is flushed and fsync'd.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson

from app.records import DeliveryReceipt
from app.sinks.dryrun import OutboxFile
from app.sinks.kochava.requests import KochavaRequest

OUTBOX_NAME = "kochava-outbox.jsonl"


class KochavaDryRun:
    def __init__(
        self,
        data_dir: str | Path,
        tracking_url: str,
        *,
        on_result: Callable[[KochavaRequest, str], None] | None = None,
        fsync: bool = True,
    ) -> None:
        self.path = Path(data_dir) / OUTBOX_NAME
        self.base = tracking_url.rstrip("/")
        self._on_result = on_result
        self._outbox = OutboxFile(
            self.path, fsync=fsync, notice="Kochava DRY RUN (no KOCHAVA_APP_GUID): requests go to"
        )

    def lines(self, requests: list[KochavaRequest]) -> list[bytes]:
        return [
            orjson.dumps({"method": "POST", "url": self.base + r.path(), "body": r.with_app_id(None)}) + b"\n"
            for r in requests
        ]

    async def deliver(self, requests: list[KochavaRequest]) -> int:
        await self._outbox.append(self.lines(requests))
        if self._on_result is not None:
            for request in requests:
                self._on_result(request, "dry_run")
        return len(requests)

    def take_receipts(self) -> list[DeliveryReceipt]:
        """None: a dry run sends nothing, so there is no answer to record."""
        return []

    def stop(self) -> None:
        """Nothing to abort; present so the agent treats both alike."""

    async def close(self) -> None:
        await self._outbox.close()
