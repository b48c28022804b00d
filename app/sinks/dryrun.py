"""The dry runs' file: an append-only JSON-lines outbox, flushed and fsync'd before `append` returns.

With no credentials a sink writes the exact requests it would have sent here instead (Segment's
`segment-outbox.jsonl`, Kochava's `kochava-outbox.jsonl`), so a developer can run the whole pipeline and
inspect or replay them; the sink acks only after `append` returns, as it would after a 2xx.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


class OutboxFile:
    """One JSON-lines file kept open for appends; `notice` is logged (once) on the first append."""

    def __init__(self, path: Path, *, fsync: bool = True, notice: str | None = None) -> None:
        self.path = path
        self.fsync = fsync
        self._notice = notice
        self._file: IO[bytes] | None = None
        self._lock = asyncio.Lock()

    def _write(self, lines: list[bytes]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        self._file.write(b"".join(lines))
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    async def append(self, lines: list[bytes]) -> None:
        """Append `lines` (each ending in a newline) durably; a no-op for none, apart from the notice."""
        if self._notice is not None:
            log.warning("%s: %s", self._notice, self.path.resolve())
            self._notice = None
        if not lines:
            return
        async with self._lock:
            await asyncio.to_thread(self._write, lines)

    async def close(self) -> None:
        async with self._lock:
            if self._file is not None:
                await asyncio.to_thread(self._file.close)
                self._file = None
