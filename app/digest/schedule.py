"""The daily digest schedule: which day is due, who runs it, and its durable state in Kafka.

Two guards make a day run once across a worker group. The timer runs on faust's leader only
(`on_leader=True`), and, because leadership can move in a rebalance mid-run, a worker must also win a
claim: it appends a `running` record keyed by the day to the `digest.days` topic and re-reads the log;
all records of one key sit in one partition in one order, so every worker agrees that the first claim
after the day's last `failed` record wins. A claim older than the lease (a worker that died mid-run)
no longer counts. A day ends `done`, or `failed` with a retry time; failed days are retried with
backoff up to `MAX_ATTEMPTS`, then left failed (and counted) until someone runs
`kseg digest run --date DAY`. Only the latest due day is scheduled: after an outage the skipped days'
spend is still refreshed by the trailing window, their traits are superseded by the newer ones.

The rules (`due_day`, `decide`, `winner`) are pure; `DayStateStore` does the Kafka reads and writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from app import topics
from app.kafka import read_to_end
from app.records import dumps, loads
from app.sections import DigestSettings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
RETRY_BASE_SECONDS = 15 * 60.0
RETRY_CAP_SECONDS = 6 * 3600.0

Status = Literal["running", "done", "failed"]


class DayState(BaseModel):
    """One record of the `digest.days` topic (key: the day)."""

    day: str
    status: Status
    claim: str
    worker: str
    at: float
    attempts: int = 1
    retry_at: float | None = None
    error: str | None = None
    summary: str | None = None


def due_day(now: datetime, zone: str, hour: int) -> date:
    """The latest day whose digest is due: yesterday once the local clock passed `hour`, else the day
    before (whose run time passed yesterday)."""
    local = now.astimezone(ZoneInfo(zone))
    return local.date() - timedelta(days=1 if local.hour >= hour else 2)


def retry_delay(attempts: int) -> float:
    """15 min, 30 min, 1 h, ... capped at 6 h."""
    return float(min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0)))


def winner(history: list[DayState], now: float, lease: float) -> str | None:
    """The claim id that owns the day: the first `running` record after the last terminal one whose
    lease has not expired (an expired claim belongs to a dead worker; the next live claim wins)."""
    last_end = max((i for i, s in enumerate(history) if s.status != "running"), default=-1)
    for state in history[last_end + 1 :]:
        if now - state.at < lease:
            return state.claim
    return None


def decide(history: list[DayState], now: float, lease: float) -> Literal["run", "wait", "skip"]:
    """What the leader does with a due day, given its records in log order."""
    last_end = max((i for i, s in enumerate(history) if s.status != "running"), default=-1)
    ended = history[last_end] if last_end >= 0 else None
    if ended is not None and ended.status == "done":
        return "skip"
    if winner(history, now, lease) is not None:
        return "wait"  # someone's live claim
    if ended is not None and ended.status == "failed":
        if ended.attempts >= MAX_ATTEMPTS:
            return "skip"
        if ended.retry_at is not None and now < ended.retry_at:
            return "wait"
    return "run"


def attempts_so_far(history: list[DayState]) -> int:
    ended = [s for s in history if s.status == "failed"]
    return ended[-1].attempts if ended else 0


class DayStateStore:
    """Reads the `digest.days` topic from the beginning; writes through `send` (acked)."""

    def __init__(
        self, settings: DigestSettings, send: Callable[[str, bytes, bytes], Awaitable[None]]
    ) -> None:
        self.settings = settings
        self.topic = settings.topic(topics.DIGEST_DAYS)
        self._send = send

    async def write(self, state: DayState) -> None:
        await self._send(self.topic, state.day.encode(), dumps(state))

    async def history(self, day: str) -> list[DayState]:
        """Every record of `day`, in log order (one key lives in one partition)."""
        return [s for s in await self.read_all() if s.day == day]

    async def read_all(self) -> list[DayState]:
        records = await read_to_end(self.settings, self.topic)
        return [DayState.model_validate(loads(r.value)) for r in records if r.value]


RunDay = Callable[[date], Awaitable[Any]]


class DigestScheduler:
    """One tick: is a day due, can this worker claim it, run it, record the outcome."""

    def __init__(
        self,
        settings: DigestSettings,
        store: DayStateStore,
        run_day: RunDay,
        *,
        clock: Callable[[], float] = time.time,
        lease: float | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.run_day = run_day
        self.clock = clock
        # A claim outlives the longest possible run: the report wait plus time to fan out.
        self.lease = lease if lease is not None else settings.kochava_report_timeout + 3 * 3600.0
        self.outcomes: dict[str, int] = {}
        #: Last terminal state seen per day: a done day (or one failed until its retry time) is skipped
        #: without reading Kafka on every check.
        self._ended: dict[str, DayState] = {}

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    async def _finish(self, state: DayState) -> None:
        await self.store.write(state)
        self._ended[state.day] = state

    async def tick(self) -> str:
        """Returns what happened: `ran`, `failed`, `waiting`, `skipped` or `lost_claim`."""
        now = self.clock()
        day = due_day(
            datetime.fromtimestamp(now, UTC),
            self.settings.kochava_time_zone,
            self.settings.kochava_digest_hour,
        )
        key = day.isoformat()
        known = self._ended.get(key)
        if known is not None and decide([known], now, self.lease) != "run":
            outcome = "skipped" if known.status == "done" or known.retry_at is None else "waiting"
            self._count(outcome)
            return outcome
        history = await self.store.history(key)
        ended = [s for s in history if s.status != "running"]
        if ended:
            self._ended[key] = ended[-1]
        choice = decide(history, now, self.lease)
        if choice != "run":
            outcome = "skipped" if choice == "skip" else "waiting"
            self._count(outcome)
            return outcome
        claim = uuid.uuid4().hex
        attempts = attempts_so_far(history) + 1
        worker = self.settings.kseg_worker_id
        await self.store.write(
            DayState(day=key, status="running", claim=claim, worker=worker, at=now, attempts=attempts)
        )
        if winner(await self.store.history(key), self.clock(), self.lease) != claim:
            self._count("lost_claim")
            return "lost_claim"
        log.info("digest: running %s (attempt %d) on %s", key, attempts, worker)
        try:
            result = await self.run_day(day)
        except asyncio.CancelledError:
            raise  # the claim expires with its lease; the next leader retries
        except Exception as exc:
            end = self.clock()
            retry_at = end + retry_delay(attempts) if attempts < MAX_ATTEMPTS else None
            await self._finish(
                DayState(day=key, status="failed", claim=claim, worker=worker, at=end, attempts=attempts,
                         retry_at=retry_at, error=f"{type(exc).__name__}: {exc}"[:2000])
            )  # fmt: skip
            log.error(
                "digest %s failed (attempt %d/%d): %s; %s",
                key,
                attempts,
                MAX_ATTEMPTS,
                exc,
                f"retrying after {datetime.fromtimestamp(retry_at, UTC).isoformat()}" if retry_at else
                "no more automatic retries: fix the cause and run `kseg digest run --date " + key + "`",
            )  # fmt: skip
            self._count("failed")
            return "failed"
        summary = result.summary() if hasattr(result, "summary") else str(result)
        await self._finish(
            DayState(day=key, status="done", claim=claim, worker=worker, at=self.clock(), attempts=attempts,
                     summary=summary[:4000])
        )  # fmt: skip
        log.info("digest %s done:\n%s", key, summary)
        self._count("ran")
        return "ran"
