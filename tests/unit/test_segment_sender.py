"""The Segment sink's delivery core against the strict emulator over real HTTP on 127.0.0.1.

What matters is the offset-safety contract: `deliver()` returns only when each message was accepted
or dead-lettered, transient failures never lose or dead-letter anything, and a bad key stops
everything without dead-lettering data. Backoffs and timeouts are tiny so the suite stays fast.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.records import DeadLetter, DeliveryReceipt
from app.sinks.policy import retry_wait_from_headers
from app.sinks.segment import (
    AdaptiveRateLimiter,
    Backoff,
    DryRunWriter,
    Outcome,
    SegmentConfigError,
    SegmentHttpClient,
    SegmentSender,
    SinkStopped,
    chunk,
    classify_status,
    parse_retry_after,
    problems,
)
from app.sinks.segment.batching import ENVELOPE_BYTES
from app.sinks.segment.validation import reason_for
from tests.emulators.segment_api import SegmentEmulator

KEY = "sink-key"
FAST = Backoff(base=0.01, cap=0.05)


def message(i: int, **props: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Install Attributed",
        "anonymousId": f"anon-{i}",
        "messageId": f"kseg-{i:06d}",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {"provider": "Kochava", "n": i, **props},
        "context": {"device": {"advertisingId": "6D92078A-8246-4BA4-AE5B-76104861E7DC", "type": "ios"}},
    }


def messages(n: int) -> list[dict[str, Any]]:
    return [message(i) for i in range(n)]


class DeadLetters:
    """Collects what the sender dead-letters, and how many times it was called."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.calls = 0

    async def __call__(self, letters: list[DeadLetter]) -> None:
        self.calls += 1
        self.letters.extend(letters)


SenderFactory = Callable[..., Awaitable[SegmentSender]]


@pytest.fixture
async def emu() -> AsyncIterator[SegmentEmulator]:
    async with SegmentEmulator(KEY, poison=True) as server:
        yield server


@pytest.fixture
def dead() -> DeadLetters:
    return DeadLetters()


@pytest.fixture
async def make_sender(emu: SegmentEmulator, dead: DeadLetters) -> AsyncIterator[SenderFactory]:
    made: list[SegmentSender] = []

    async def factory(
        *,
        key: str = KEY,
        endpoint: str | None = None,
        timeout: float = 2.0,
        limiter: AdaptiveRateLimiter | None = None,
        **kw: Any,
    ) -> SegmentSender:
        client = SegmentHttpClient(key, endpoint or emu.url, timeout=timeout, gzip=True)
        sender = SegmentSender(
            client,
            limiter or AdaptiveRateLimiter(1000.0),
            dead_letter=dead,
            backoff=kw.pop("backoff", FAST),
            rng=random.Random(7),
            **kw,
        )
        made.append(sender)
        return sender

    yield factory
    for sender in made:
        await sender.close()


def ids(msgs: list[dict[str, Any]]) -> set[str]:
    return {m["messageId"] for m in msgs}


# ---- delivery over HTTP ------------------------------------------------------------------------


async def test_happy_path_batches_1200_messages_in_3_requests(
    emu: SegmentEmulator, make_sender: SenderFactory, dead: DeadLetters
) -> None:
    sender = await make_sender()
    batch = messages(1200)
    report = await sender.deliver(batch)
    assert (report.delivered, report.requests, report.retries, report.dead_lettered) == (1200, 3, 0, 0)
    assert [len(r.message_ids) for r in emu.requests] == [500, 500, 200]
    assert all(r.gzip and r.sent_at for r in emu.requests)
    assert [m["messageId"] for m in emu.messages] == [m["messageId"] for m in batch]  # order kept
    assert dead.calls == 0
    assert sender.stats.requests_by_status == {"200": 3} and sender.stats.delivered == 1200


async def test_429_with_retry_after_pauses_then_delivers_each_message_once(
    emu: SegmentEmulator, make_sender: SenderFactory
) -> None:
    emu.fail_next(2, status=429, retry_after=0.2)
    sender = await make_sender()
    batch = messages(20)
    start = time.monotonic()
    report = await sender.deliver(batch)
    assert time.monotonic() - start >= 0.4  # both Retry-After waits were honoured
    assert report.delivered == 20 and report.retries == 2 and report.dead_lettered == 0
    assert report.status_counts == {"429": 2, "200": 1}
    assert set(emu.by_message_id) == ids(batch) and set(emu.by_message_id.values()) == {1}
    assert sender.stats.retry_after_waits == 2
    # the same messageIds are re-sent (never new ones), each attempt under a fresh sentAt
    assert [r.status for r in emu.requests] == [429, 429, 200]
    assert all(r.message_ids == [m["messageId"] for m in batch] for r in emu.requests)
    assert len({r.sent_at for r in emu.requests}) == 3


async def test_retry_after_pauses_every_sender_sharing_the_limiter(
    emu: SegmentEmulator, make_sender: SenderFactory
) -> None:
    limiter = AdaptiveRateLimiter(1000.0)
    first, second = await make_sender(limiter=limiter), await make_sender(limiter=limiter)
    emu.fail_next(1, status=429, retry_after=0.4)
    task_a = asyncio.create_task(first.deliver([message(1)]))
    await asyncio.sleep(0.1)  # first got its 429 and paused the limiter
    start = time.monotonic()
    await second.deliver([message(2)])
    assert time.monotonic() - start >= 0.25  # the other sender waited for the pause too
    await task_a
    assert set(emu.by_message_id) == {"kseg-000001", "kseg-000002"}


async def test_500s_then_recovery(
    emu: SegmentEmulator, make_sender: SenderFactory, dead: DeadLetters
) -> None:
    emu.fail_next(3, status=500)
    sender = await make_sender()
    report = await sender.deliver(messages(10))
    assert report.delivered == 10 and report.retries == 3
    assert report.status_counts == {"500": 3, "200": 1}
    assert emu.stats()["messages"] == 10 and dead.letters == []
    assert sender.stats.failing_since is None  # healthy again


async def test_slow_response_past_timeout_then_recovery(
    emu: SegmentEmulator, make_sender: SenderFactory, dead: DeadLetters
) -> None:
    emu.slow_next(1, delay=0.6)
    sender = await make_sender(timeout=0.2)
    report = await sender.deliver(messages(5))
    assert report.status_counts == {"timeout": 1, "200": 1}
    assert report.delivered == 5 and dead.letters == []
    assert set(emu.by_message_id.values()) == {1} and len(emu.by_message_id) == 5


async def test_dropped_connection_then_recovery(
    emu: SegmentEmulator, make_sender: SenderFactory, dead: DeadLetters
) -> None:
    emu.drop_next(2)
    sender = await make_sender()
    report = await sender.deliver(messages(5))
    assert report.status_counts == {"connection_error": 2, "200": 1}
    assert report.delivered == 5 and emu.stats()["messages"] == 5 and dead.letters == []


async def test_retryable_503_with_retry_after_and_non_retryable_statuses_do_not_loop(
    emu: SegmentEmulator, make_sender: SenderFactory
) -> None:
    emu.fail_next(1, status=503, retry_after=0.1)
    sender = await make_sender()
    report = await sender.deliver(messages(3))
    assert report.status_counts == {"503": 1, "200": 1}
    assert sender.stats.retry_after_waits == 1


@pytest.mark.parametrize("status", [400, 413, 422, 501, 505])
async def test_non_retryable_statuses_are_answered_once_and_dead_lettered(
    emu: SegmentEmulator, make_sender: SenderFactory, dead: DeadLetters, status: int
) -> None:
    """Segment's non-retryable answers (4xx but 408/410/429/460 and the credentials' 401/403; 501, 505)
    are never retried in place: one POST, then the message is a typed dead letter."""
    emu.fail_next(1, status=status)
    sender = await make_sender()
    report = await sender.deliver(messages(1))
    assert report.status_counts == {str(status): 1}
    assert (report.retries, report.delivered, report.dead_lettered) == (0, 0, 1)
    assert [letter.reason for letter in dead.letters] == [f"segment_rejected_{status}"]
    assert emu.messages == []


async def test_poison_message_isolated_by_bisection(
    emu: SegmentEmulator, make_sender: SenderFactory, dead: DeadLetters
) -> None:
    batch = messages(100)
    batch[37] = message(37, poison=True)
    sender = await make_sender()
    report = await sender.deliver(batch)
    assert report.delivered == 99 and report.dead_lettered == 1 and report.bisections >= 6
    assert dead.calls == 1
    [letter] = dead.letters
    assert letter.stage == "segment" and letter.reason == "segment_rejected_400" and letter.http_status == 400
    assert letter.payload == batch[37] and "poison" in letter.error
    assert letter.attempts >= 7  # every POST that carried it, from the full chunk down to itself
    expected = [m["messageId"] for m in batch if m is not batch[37]]
    assert [m["messageId"] for m in emu.messages] == expected  # each once, in the original order
    assert sender.stats.dead_letters_by_reason == {"segment_rejected_400": 1}


async def test_two_poison_messages_in_different_chunks(
    emu: SegmentEmulator, make_sender: SenderFactory, dead: DeadLetters
) -> None:
    batch = messages(12)
    batch[0], batch[11] = message(0, poison=True), message(11, poison=True)
    sender = await make_sender(max_messages=5)
    report = await sender.deliver(batch)
    assert report.delivered == 10
    assert sorted(d.payload["messageId"] for d in dead.letters) == ["kseg-000000", "kseg-000011"]


async def test_transient_400_costs_one_bisection_not_a_dead_letter(
    emu: SegmentEmulator, make_sender: SenderFactory, dead: DeadLetters
) -> None:
    emu.fail_next(1, status=400)
    sender = await make_sender()
    report = await sender.deliver(messages(4))
    assert report.delivered == 4 and report.bisections == 1 and dead.letters == []


async def test_401_raises_auth_error_without_dead_letters_or_retries(
    emu: SegmentEmulator, make_sender: SenderFactory, dead: DeadLetters
) -> None:
    sender = await make_sender(key="wrong-key")
    batch = [*messages(5), {"type": "track", "messageId": "no-event", "userId": "u"}]
    with pytest.raises(SegmentConfigError, match="SEGMENT_WRITE_KEY") as info:
        await sender.deliver(batch)
    assert info.value.status == 401
    assert dead.calls == 0 and dead.letters == []
    assert emu.requests_by_status == {401: 1}  # no retry of a refused key
    assert sender.stats.auth_failures == 1


async def test_403_is_an_auth_error_too(emu: SegmentEmulator, make_sender: SenderFactory) -> None:
    emu.fail_next(1, status=403)
    sender = await make_sender()
    with pytest.raises(SegmentConfigError):
        await sender.deliver(messages(2))


async def test_an_endpoint_answering_404_is_a_configuration_error_not_a_rejection(
    emu: SegmentEmulator, make_sender: SenderFactory, dead: DeadLetters
) -> None:
    """A wrong SEGMENT_ENDPOINT (404 for every batch) pauses the sink as a refused key does: no bisection
    and no dead letter, since no message is at fault and the batch must be redelivered once it is fixed."""
    sender = await make_sender(endpoint=emu.url + "/not-segment")
    with pytest.raises(SegmentConfigError, match="SEGMENT_ENDPOINT") as info:
        await sender.deliver(messages(8))
    assert info.value.status == 404 and "/not-segment/v1/batch" in info.value.hint
    assert dead.calls == 0 and dead.letters == []
    assert sender.stats.bisections == 0 and sender.stats.requests_by_status == {"404": 1}
    assert sender.stats.auth_failures == 1 and emu.messages == []


async def test_oversize_message_dead_lettered_without_a_request(
    emu: SegmentEmulator, make_sender: SenderFactory, dead: DeadLetters
) -> None:
    huge = message(1, blob="x" * 40_000)
    sender = await make_sender()
    report = await sender.deliver([huge])
    assert report.requests == 0 and emu.stats()["requests"] == 0
    [letter] = dead.letters
    assert letter.reason == "message_too_large" and letter.payload == huge and letter.http_status is None


async def test_invalid_messages_dead_lettered_and_the_rest_delivered(
    emu: SegmentEmulator, make_sender: SenderFactory, dead: DeadLetters
) -> None:
    bad_id = message(2)
    bad_id["context"]["device"]["advertisingId"] = 42
    no_user = message(3)
    del no_user["anonymousId"]
    batch = [message(1), bad_id, no_user, message(4, blob="y" * 40_000), message(5)]
    sender = await make_sender()
    report = await sender.deliver(batch)
    assert report.delivered == 2 and report.requests == 1
    assert ids(emu.messages) == {"kseg-000001", "kseg-000005"}
    reasons = {d.payload["messageId"]: d.reason for d in dead.letters}
    assert reasons == {
        "kseg-000002": "invalid_message",
        "kseg-000003": "invalid_message",
        "kseg-000004": "message_too_large",
    }


async def test_limiter_halves_on_429_and_recovers_additively(
    emu: SegmentEmulator, make_sender: SenderFactory
) -> None:
    limiter = AdaptiveRateLimiter(100.0, increase=1.0, decrease_cooldown=0.0)
    emu.fail_next(2, status=429)  # no Retry-After: own backoff
    sender = await make_sender(limiter=limiter)
    report = await sender.deliver(messages(3))
    assert report.status_counts == {"429": 2, "200": 1} and sender.stats.retry_after_waits == 0
    assert limiter.rate == pytest.approx(26.0)  # 100 → 50 → 25, then +1 on the success
    assert sender.stats.rate == pytest.approx(26.0)


async def test_stop_aborts_a_retry_wait_promptly(emu: SegmentEmulator, make_sender: SenderFactory) -> None:
    emu.fail_for(10, status=503, retry_after=30)
    sender = await make_sender()
    task = asyncio.create_task(sender.deliver(messages(3)))
    await asyncio.sleep(0.2)
    assert not task.done()  # still waiting: a transient failure never gives up on its own
    start = time.monotonic()
    sender.stop()
    with pytest.raises(SinkStopped):
        await task
    assert time.monotonic() - start < 0.5


async def test_stop_aborts_an_in_flight_request(emu: SegmentEmulator, make_sender: SenderFactory) -> None:
    emu.slow_next(1, delay=5)
    sender = await make_sender(timeout=10)
    task = asyncio.create_task(sender.deliver(messages(1)))
    await asyncio.sleep(0.2)
    sender.stop()
    with pytest.raises(SinkStopped):
        await asyncio.wait_for(task, timeout=1)


async def test_cancellation_aborts_promptly(emu: SegmentEmulator, make_sender: SenderFactory) -> None:
    emu.fail_for(10, status=500)
    sender = await make_sender(backoff=Backoff(base=20, cap=30))
    task = asyncio.create_task(sender.deliver(messages(1)))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=1)


# ---- dry run -----------------------------------------------------------------------------------


async def test_dry_run_writes_the_bodies_it_would_send(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = DryRunWriter(tmp_path, max_messages=2)
    caplog.set_level(logging.WARNING)
    report = await writer.deliver(messages(5))
    await writer.deliver(messages(1))
    await writer.close()
    lines = [orjson.loads(x) for x in (tmp_path / "segment-outbox.jsonl").read_bytes().splitlines()]
    assert [len(x["batch"]) for x in lines] == [2, 2, 1, 1]
    assert all(set(x) == {"batch", "sentAt"} for x in lines)
    assert lines[0]["batch"][0] == message(0)
    assert report.delivered == 5 and report.requests == 3
    assert sum("DRY RUN" in r.getMessage() for r in caplog.records) == 1  # logged once, not per call


async def test_dry_run_dead_letters_invalid_messages(tmp_path: Path) -> None:
    dead = DeadLetters()
    writer = DryRunWriter(tmp_path / "out.jsonl", dead_letter=dead)
    bad = message(1)
    bad["event"] = ""
    report = await writer.deliver([bad, message(2)])
    await writer.close()
    assert report.dead_lettered == 1 and dead.letters[0].reason == "invalid_message"
    [line] = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert [m["messageId"] for m in orjson.loads(line)["batch"]] == ["kseg-000002"]


async def test_dry_run_without_callback_keeps_rejects_in_a_side_file(tmp_path: Path) -> None:
    writer = DryRunWriter(tmp_path)
    await writer.deliver([{"type": "track"}])
    await writer.close()
    rejected = (tmp_path / "segment-outbox.rejected.jsonl").read_bytes().splitlines()
    assert orjson.loads(rejected[0])["reason"] == "invalid_message"


# ---- pure parts: policy, batching, validation, limiter ------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SUCCESS),
        (204, Outcome.SUCCESS),
        (408, Outcome.RETRY),
        (410, Outcome.RETRY),
        (429, Outcome.RETRY),
        (460, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
        (504, Outcome.RETRY),
        (511, Outcome.RETRY),
        (501, Outcome.REJECT),
        (505, Outcome.REJECT),
        (401, Outcome.CONFIG),
        (403, Outcome.CONFIG),
        (400, Outcome.REJECT),
        (404, Outcome.CONFIG),
        (413, Outcome.REJECT),
        (422, Outcome.REJECT),
        (301, Outcome.REJECT),
        (302, Outcome.REJECT),
    ],
)
def test_classify_status(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("86400") == 300.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=42), usegmt=True)
    assert parse_retry_after(date, now=now.timestamp()) == pytest.approx(42.0)


def test_retry_wait_falls_back_to_rate_limit_reset() -> None:
    assert retry_wait_from_headers({"Retry-After": "2", "X-RateLimit-Reset": "9"}) == 2.0
    assert retry_wait_from_headers({"X-RateLimit-Reset": "9"}) == 9.0
    assert retry_wait_from_headers({"X-RateLimit-Reset": str(time.time() + 30)}) == pytest.approx(30, abs=1)
    assert retry_wait_from_headers({}) is None


@pytest.mark.parametrize("reset", ["nan", "NaN", "-nan"])
def test_a_nan_rate_limit_reset_falls_back_to_the_backoff(reset: str) -> None:
    """NaN is not a wait: None makes the sender back off (a NaN pause holds nobody and would spin)."""
    assert retry_wait_from_headers({"X-RateLimit-Reset": reset}) is None
    assert retry_wait_from_headers({"Retry-After": reset, "X-RateLimit-Reset": reset}) is None


def test_backoff_full_jitter_bounds() -> None:
    backoff, rng = Backoff(), random.Random(1)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (4, 4.0), (7, 30.0), (60, 30.0)]:
        delays = [backoff.delay(failures, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # really spread over the whole range
    assert Backoff(base=10, cap=500).delay(20, rng) <= 60.0  # single sleeps ≤ 60 s


def test_chunk_respects_count_and_bytes() -> None:
    small = messages(1200)
    assert [len(c) for c in chunk(small)] == [500, 500, 200]
    fat = [message(i, blob="z" * 10_000) for i in range(100)]
    chunks = chunk(fat, max_messages=500, max_bytes=450_000)
    assert sum(len(c) for c in chunks) == 100 and len(chunks) == 3
    for c in chunks:
        body = orjson.dumps({"batch": c, "sentAt": "2024-05-01T12:00:00.000Z"})
        assert len(body) <= 450_000
    assert [m["messageId"] for c in chunks for m in c] == [m["messageId"] for m in fat]


def test_chunk_byte_budget_is_exact() -> None:
    one = message(1)
    size = len(orjson.dumps(one))
    budget = ENVELOPE_BYTES + 2 * size + 1  # exactly two messages and one comma
    assert [len(c) for c in chunk([one] * 3, max_bytes=budget)] == [2, 1]
    assert [len(c) for c in chunk([one] * 3, max_bytes=budget - 1)] == [1, 1, 1]
    assert chunk([], max_bytes=budget) == []
    assert [len(c) for c in chunk([message(2, blob="q" * 5000)], max_bytes=1024)] == [1]


def test_validation_accepts_a_good_message_and_lists_every_problem() -> None:
    assert problems(message(1)) == []
    assert problems({"type": "alias", "userId": "u", "previousId": "p", "messageId": "m"}) == []
    bad = {"type": "track", "messageId": "m" * 100, "userId": 5, "properties": [], "timestamp": "nope"}
    found = problems(bad)
    assert len(found) == 6, found
    assert reason_for(found) == "invalid_message"
    assert reason_for(problems(message(1, blob="x" * 33_000))) == "message_too_large"
    assert problems({**message(1), "properties": {"when": datetime.now(UTC).date()}}) == []
    assert any("JSON" in p for p in problems({**message(1), "properties": {"obj": object()}}))


async def test_rate_limiter_paces_requests() -> None:
    limiter = AdaptiveRateLimiter(20.0, burst=1.0)
    start = time.monotonic()
    for _ in range(6):
        await limiter.acquire()
    assert time.monotonic() - start >= 0.2  # 5 waits of 1/20 s after the first token


async def test_rate_limiter_pause_holds_acquire() -> None:
    limiter = AdaptiveRateLimiter(1000.0)
    limiter.pause_for(0.2)
    start = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - start >= 0.19


def test_rate_limiter_floor_and_ceiling() -> None:
    limiter = AdaptiveRateLimiter(8.0, min_rate=1.0, increase=4.0, decrease_cooldown=0.0)
    for _ in range(10):
        limiter.on_rate_limited()
    assert limiter.rate == 1.0
    for _ in range(10):
        limiter.on_success()
    assert limiter.rate == 8.0
    cooled = AdaptiveRateLimiter(8.0, decrease_cooldown=60.0)
    cooled.on_rate_limited()
    cooled.on_rate_limited()  # same burst of 429s: halves once
    assert cooled.rate == 4.0


async def test_receipts_one_per_request_with_each_message_s_outcome(
    emu: SegmentEmulator, make_sender: SenderFactory
) -> None:
    """A receipt per answered request (and per logged retry), naming the messages it carried."""
    emu.fail_next(1, status=503)
    batch = messages(10)
    batch[3] = message(3, poison=True)
    batch[4] = {**message(4), "type": "nonsense"}  # invalid: dead-lettered before any request
    batch[5]["context"]["kseg"] = {"event_id": "ev-5"}
    sender = await make_sender()
    report = await sender.deliver(batch)
    by_outcome: dict[str, list[Any]] = {}
    for r in report.receipts:
        by_outcome.setdefault(r.outcome, []).append(r)
    assert [r.http_status for r in by_outcome["retried"]] == [503]
    assert len(by_outcome["retried"][0].messages) == 9  # the whole valid chunk, once
    [refused] = by_outcome["dead_lettered"]
    assert [m.message_id for m in refused.messages] == ["kseg-000004"] and refused.request_id is None
    [rejected] = by_outcome["rejected"]
    assert [m.message_id for m in rejected.messages] == ["kseg-000003"] and rejected.http_status == 400
    delivered = [m for r in by_outcome["delivered"] for m in r.messages]
    assert sorted(m.message_id for m in delivered) == sorted(
        m["messageId"] for m in batch if m["messageId"] not in ("kseg-000003", "kseg-000004")
    )
    assert all(r.http_status == 200 and r.attempts >= 2 and r.request_id for r in by_outcome["delivered"])
    five = next(m for m in delivered if m.message_id == "kseg-000005")
    assert (five.event_id, five.call_type, five.event_name) == ("ev-5", "track", "Install Attributed")
    for r in report.receipts:  # each is a valid record of the published schema
        assert DeliveryReceipt.decode(r.encode()) == DeliveryReceipt.model_validate(r.model_dump())
