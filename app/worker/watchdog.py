"""Stall watchdog: restart the worker when faust has read events that no agent will ever process.

faust can lose track of fetched events after a restart with table recovery (seen here with Tansu: the
fetcher starts before the seek to committed offsets). The events are then neither processed nor
acked, the partition's commit stops at the gap (fs#312/fs#606 describe the same symptom), and nothing
else happens. Nothing is lost — the offsets are not committed — but nothing moves either.

The watchdog notices a partition whose committed offset stays behind what was read while every kseg
agent is idle, and exits the process with EX_TEMPFAIL (75). The process supervisor (`kseg run`,
systemd, Kubernetes, docker `restart:`) starts it again, and it re-reads from the committed offset;
the dedupe table and deterministic messageIds absorb the repeats.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

EX_TEMPFAIL = 75


@dataclass
class AgentActivity:
    """How many events each agent is working on now, and when any agent last worked."""

    busy: dict[str, int] = field(default_factory=dict)
    last_active: float = field(default_factory=time.monotonic)

    @contextlib.contextmanager
    def working(self, agent: str) -> Iterator[None]:
        self.busy[agent] = self.busy.get(agent, 0) + 1
        try:
            yield
        finally:
            self.busy[agent] -= 1
            self.last_active = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since every agent became idle (0 while any is busy)."""
        if any(self.busy.values()):
            return 0.0
        return time.monotonic() - self.last_active


activity = AgentActivity()


@dataclass
class StallDetector:
    """Tracks, per partition, since when the committed offset has been stuck behind the read offset."""

    stall_seconds: float
    stuck_since: dict[Any, tuple[int | None, float]] = field(default_factory=dict)

    def stalled(self, offsets: dict[Any, tuple[int | None, int | None]], idle_for: float) -> list[Any]:
        """Partitions stalled longer than `stall_seconds`; `offsets` maps tp → (read, committed)."""
        now = time.monotonic()
        found = []
        for tp, (read, committed) in offsets.items():
            behind = read is not None and (committed is None or committed <= read)  # committed = next offset
            if not behind:
                self.stuck_since.pop(tp, None)
                continue
            previous = self.stuck_since.get(tp)
            if previous is None or previous[0] != committed:
                self.stuck_since[tp] = (committed, now)
                continue
            if now - previous[1] >= self.stall_seconds and idle_for >= self.stall_seconds:
                found.append(tp)
        return found


def read_and_committed(consumer: Any, prefix: str) -> dict[Any, tuple[int | None, int | None]]:
    """(last read, last committed) offset per assigned kseg stream partition (faust internals, read only)."""
    read = getattr(consumer, "_read_offset", {})
    committed = getattr(consumer, "_committed_offset", {})
    return {
        tp: (read.get(tp), committed.get(tp)) for tp in consumer.assignment() if tp.topic.startswith(prefix)
    }


def exit_for_restart(stalled: list[Any]) -> None:
    names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in stalled)
    log.error(
        "stalled partitions %s: events were read but never processed while every agent is idle. "
        "Exiting with code %s so the supervisor restarts the worker from the committed offsets "
        "(nothing is lost; repeats are deduplicated).",
        names,
        EX_TEMPFAIL,
    )
    logging.shutdown()
    os._exit(EX_TEMPFAIL)
