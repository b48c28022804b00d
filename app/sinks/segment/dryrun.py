"""Dry run: with no SEGMENT_WRITE_KEY, write the exact batch bodies we would have POSTed to a file.

Lets a developer run the whole pipeline without a Segment workspace and inspect (or later replay)
what would have been sent. Same `deliver()` contract as `SegmentSender`, so the sink agent does
not care which one it has: when `deliver` returns, every line is flushed and fsync'd.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from app.records import DeadLetter, utc_now_iso
from app.sinks.dryrun import OutboxFile
from app.sinks.segment.batching import chunk
from app.sinks.segment.sender import DeliveryReport
from app.sinks.segment.validation import message_size, problems, reason_for

OUTBOX_NAME = "segment-outbox.jsonl"


class DryRunWriter:
    """Appends `{"batch": [...], "sentAt": ...}` lines to `segment-outbox.jsonl`.

    `path` is the file, or a directory to put `segment-outbox.jsonl` in. Invalid messages go to
    `dead_letter` when given, else to `segment-outbox.rejected.jsonl` next to the outbox (never dropped).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        dead_letter: Callable[[list[DeadLetter]], Awaitable[None]] | None = None,
        max_messages: int = 500,
        max_bytes: int = 450_000,
        fsync: bool = True,
    ) -> None:
        path = Path(path)
        self.path = path / OUTBOX_NAME if path.is_dir() or not path.suffix else path
        self.rejected_path = self.path.with_name(self.path.stem + ".rejected.jsonl")
        self._dead_letter = dead_letter
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._outbox = OutboxFile(
            self.path, fsync=fsync, notice="Segment DRY RUN (no SEGMENT_WRITE_KEY): batches go to"
        )
        self._rejected = OutboxFile(self.rejected_path, fsync=fsync)

    async def deliver(self, messages: list[dict[str, Any]]) -> DeliveryReport:
        """Validate and chunk like `SegmentSender`, then append one line per would-be request."""
        report = DeliveryReport()
        dead: list[DeadLetter] = []
        valid: list[dict[str, Any]] = []
        sizes: list[int] = []
        for message in messages:
            found = problems(message)
            if found:
                payload = message if isinstance(message, dict) else {"invalid_message": repr(message)[:2000]}
                dead.append(
                    DeadLetter(
                        stage="segment",
                        reason=reason_for(found),
                        error="; ".join(found),
                        attempts=0,
                        payload=payload,
                    )
                )
            else:
                valid.append(message)
                sizes.append(message_size(message))
        lines = [
            orjson.dumps({"batch": batch, "sentAt": utc_now_iso()}) + b"\n"
            for batch in chunk(valid, self.max_messages, self.max_bytes, sizes=sizes)
        ]
        await self._outbox.append(lines)
        if dead:
            if self._dead_letter is not None:
                await self._dead_letter(dead)
            else:
                await self._rejected.append([letter.model_dump_json().encode() + b"\n" for letter in dead])
        report.delivered = len(valid)
        report.requests = len(lines)
        report.dead_lettered = len(dead)
        report.status_counts["dry_run"] = len(lines)
        return report

    def stop(self) -> None:
        """Nothing to abort (writes are short); present so the sink agent can treat both alike."""

    async def close(self) -> None:
        await self._outbox.close()
        await self._rejected.close()
