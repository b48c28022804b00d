"""The schedule's pure rules: which day is due, who owns it, when a failed day is retried."""

from __future__ import annotations

from datetime import UTC, date, datetime

from app.digest.schedule import MAX_ATTEMPTS, DayState, decide, due_day, retry_delay, winner

LEASE = 3600.0


def state(status: str, claim: str, at: float, **over: object) -> DayState:
    return DayState.model_validate(
        {"day": "2026-11-30", "status": status, "claim": claim, "worker": "w", "at": at, **over}
    )


def test_due_day_is_yesterday_after_the_run_hour_in_the_reporting_zone() -> None:
    # 06:30 UTC on Dec 1 is 01:30 in Toronto: before a 06:00 run, the due day is still Nov 29.
    now = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)
    assert due_day(now, "UTC", 6) == date(2026, 11, 30)
    assert due_day(now, "UTC", 7) == date(2026, 11, 29)
    assert due_day(now, "America/Toronto", 6) == date(2026, 11, 29)
    assert due_day(datetime(2026, 12, 1, 11, 0, tzinfo=UTC), "America/Toronto", 6) == date(2026, 11, 30)


def test_a_day_without_records_runs_and_a_done_day_never_runs_again() -> None:
    assert decide([], 100.0, LEASE) == "run"
    done = [state("running", "a", 10), state("done", "a", 20)]
    assert decide(done, 100.0, LEASE) == "skip"
    assert decide(done, 10**9, LEASE) == "skip"


def test_the_first_live_claim_wins_and_others_wait() -> None:
    history = [state("running", "a", 100), state("running", "b", 101)]
    assert winner(history, 150, LEASE) == "a"
    assert decide(history, 150, LEASE) == "wait"


def test_an_expired_claim_belongs_to_a_dead_worker() -> None:
    history = [state("running", "a", 100)]
    assert winner(history, 100 + LEASE + 1, LEASE) is None
    assert decide(history, 100 + LEASE + 1, LEASE) == "run"
    history.append(state("running", "b", 100 + LEASE + 2))
    assert winner(history, 100 + LEASE + 3, LEASE) == "b"


def test_a_failed_day_is_retried_after_its_backoff_up_to_the_limit() -> None:
    failed = [
        state("running", "a", 100),
        state("failed", "a", 200, attempts=1, retry_at=200 + retry_delay(1)),
    ]
    assert decide(failed, 300, LEASE) == "wait"
    assert decide(failed, 200 + retry_delay(1) + 1, LEASE) == "run"
    exhausted = [state("failed", "z", 200, attempts=MAX_ATTEMPTS, retry_at=None)]
    assert decide(exhausted, 10**9, LEASE) == "skip"
    # A claim after a failure is judged on its own: the old claim before the failure does not count.
    retried = [*failed, state("running", "b", 2000)]
    assert winner(retried, 2001, LEASE) == "b"


def test_retry_delay_backs_off_and_is_capped() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [900.0, 1800.0, 3600.0]
    assert retry_delay(20) == 6 * 3600.0
