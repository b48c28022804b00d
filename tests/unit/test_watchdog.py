"""The stall watchdog's decision, on offsets as faust reports them (committed = next offset to read)."""

from __future__ import annotations

import time

from app.runtime.watchdog import AgentActivity, PartitionOffsets, StallDetector


def at(read: int | None, committed: int | None, highwater: int | None = 10) -> PartitionOffsets:
    return PartitionOffsets(read=read, committed=committed, highwater=highwater, active=True)


def test_lag_counts_records_after_the_committed_offset() -> None:
    assert at(9, 10).lag == 0
    assert at(9, 4).lag == 6
    assert at(None, None, highwater=3).lag == 3
    assert at(None, None, highwater=None).lag is None


def test_a_caught_up_partition_never_stalls() -> None:
    detector = StallDetector(stall_seconds=0.0)
    assert detector.stalled({"p": at(9, 10)}, idle_for=100) == []
    assert detector.stalled({"p": at(9, 10)}, idle_for=100) == []


def test_a_gap_with_idle_agents_stalls_only_after_it_persists() -> None:
    detector = StallDetector(stall_seconds=0.05)
    assert detector.stalled({"p": at(9, 4)}, idle_for=100) == []  # first sighting starts the clock
    time.sleep(0.06)
    assert detector.stalled({"p": at(9, 4)}, idle_for=100) == ["p"]


def test_progress_or_busy_agents_reset_or_hold_the_verdict() -> None:
    detector = StallDetector(stall_seconds=0.05)
    detector.stalled({"p": at(9, 4)}, idle_for=100)
    time.sleep(0.06)
    assert detector.stalled({"p": at(9, 5)}, idle_for=100) == []  # the commit moved: clock restarts
    time.sleep(0.06)
    assert detector.stalled({"p": at(9, 5)}, idle_for=0.0) == []  # an agent is working: not a stall
    assert detector.stalled({"p": at(9, 5)}, idle_for=100) == ["p"]


def test_activity_is_idle_only_when_no_agent_works() -> None:
    activity = AgentActivity()
    with activity.working("process"):
        assert activity.idle_for() == 0.0
    time.sleep(0.01)
    assert activity.idle_for() > 0.0
