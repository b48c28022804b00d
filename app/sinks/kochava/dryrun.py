"""Dry run: with no KOCHAVA_APP_GUID, append the exact Kochava requests to KSEG_DATA_DIR/kochava-outbox.jsonl.

One JSON object per line: `{"method": "POST", "url": ..., "body": ...}`, the body exactly as the sink would
post it (`kochava_app_id` null until a GUID is configured). Same `deliver()` contract as `KochavaSender`:
when it returns, every line is flushed and fsync'd.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

import orjson

from app.sinks.kochava.requests import KochavaRequest

log = logging.getLogger(__name__)

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
        self.fsync = fsync
        self._file: IO[bytes] | None = None
        self._lock = asyncio.Lock()
        self._announced = False

    def lines(self, requests: list[KochavaRequest]) -> list[bytes]:
        return [
            orjson.dumps({"method": "POST", "url": self.base + r.path(), "body": r.with_app_id(None)}) + b"\n"
            for r in requests
        ]

    def _append(self, lines: list[bytes]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        self._file.write(b"".join(lines))
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    async def deliver(self, requests: list[KochavaRequest]) -> int:
        if not self._announced:
            self._announced = True
            log.warning("Kochava DRY RUN (no KOCHAVA_APP_GUID): requests go to %s", self.path.resolve())
        if requests:
            async with self._lock:
                await asyncio.to_thread(self._append, self.lines(requests))
        if self._on_result is not None:
            for request in requests:
                self._on_result(request, "dry_run")
        return len(requests)

    def stop(self) -> None:
        """Nothing to abort; present so the agent treats both alike."""

    async def close(self) -> None:
        async with self._lock:
            if self._file is not None:
                await asyncio.to_thread(self._file.close)
                self._file = None
