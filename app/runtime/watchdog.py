"""Stall watchdog: restart the worker when faust has read events that no agent will ever process.

faust can lose track of fetched events after a restart with table recovery (seen here with Tansu: the
fetcher starts before the seek to committed offsets). The events are then neither processed nor
acked, the partition's commit stops at the gap (fs#312/fs#606 describe the same symptom), and nothing
else happens. Nothing is lost — the offsets are not committed — but nothing moves either.

The watchdog notices a partition whose committed offset stays behind what was read while every kseg
agent is idle, and exits the process with EX_TEMPFAIL (75). The process supervisor (`kseg run`,
systemd, Kubernetes, docker `restart:`) starts it again, and it re-reads from the committed offset;
the dedupe marks in each device profile and deterministic messageIds absorb the repeats.
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


@dataclass
class StallDetector:
    """Tracks, per partition, since when the committed offset has been stuck behind the read offset."""

    stall_seconds: float
    stuck_since: dict[Any, tuple[int | None, float]] = field(default_factory=dict)

    def stalled(self, offsets: dict[Any, PartitionOffsets], idle_for: float) -> list[Any]:
        """Partitions stalled longer than `stall_seconds`."""
        now = time.monotonic()
        found = []
        for tp, where in offsets.items():
            read, committed = where.read, where.committed
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


@dataclass(frozen=True)
class PartitionOffsets:
    """Where one input partition stands. faust keeps no public position API, so this is the one place
    that reads its bookkeeping (`_read_offset`, `_committed_offset`: committed is the *next* offset)."""

    read: int | None
    committed: int | None
    highwater: int | None
    active: bool

    @property
    def lag(self) -> int | None:
        if self.highwater is None:
            return None
        return max(0, self.highwater - (self.committed or 0))


def partition_offsets(consumer: Any, prefix: str) -> dict[Any, PartitionOffsets]:
    """Offsets of every assigned kseg input partition (topics starting with `prefix`; not changelogs,
    which are read only during recovery)."""
    read = getattr(consumer, "_read_offset", {})
    committed = getattr(consumer, "_committed_offset", {})
    get_active = getattr(consumer, "_get_active_partitions", None)
    active = get_active() if get_active is not None else set()
    return {
        tp: PartitionOffsets(read.get(tp), committed.get(tp), consumer.highwater(tp), tp in active)
        for tp in consumer.assignment()
        if tp.topic.startswith(prefix)
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
