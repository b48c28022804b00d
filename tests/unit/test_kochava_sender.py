"""The Kochava sink over real HTTP against the strict emulator: 2xx acks, retries through 5xx, timeouts and
Retry-After, 4xx dead letters, 401 stops; and the dry run writes the exact requests."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import orjson
import pytest

from app.records import DeadLetter
from app.sinks.kochava.client import KochavaHttpClient
from app.sinks.kochava.dryrun import KochavaDryRun
from app.sinks.kochava.requests import AudienceEvent, KochavaRequest, identity_link, s2s_event
from app.sinks.kochava.sender import KochavaConfigError, KochavaSender
from app.sinks.policy import Backoff
from app.sinks.ratelimit import AdaptiveRateLimiter
from tests.emulators.kochava_api import KochavaEmulator

GUID = "koapp-unit"
IDFV = "6D92078A-8246-4BA4-AE5B-76104861E7DC"


def entered(device: str = "KI1", **over: object) -> KochavaRequest:
    fields: dict[str, object] = {
        "device_key": device,
        "device_ids": {"idfv": IDFV, "idfa": "00000000-0000-0000-0000-000000000000"},
        "entered": True,
        "audience_key": "vip",
        "audience_id": "aud_1",
        "audience_source": "segment",
        "at": "2026-01-01T10:00:00Z",
    }
    fields.update(over)
    request = s2s_event(AudienceEvent.model_validate(fields), "Audience Entered", "Audience Exited")
    assert request is not None
    return request


@pytest.fixture
async def emu() -> AsyncIterator[KochavaEmulator]:
    async with KochavaEmulator(GUID) as server:
        yield server


def make_sender(
    emu: KochavaEmulator,
    letters: list[DeadLetter],
    results: list[str],
    timeout: float = 5.0,
    url: str | None = None,
) -> KochavaSender:
    async def dead(batch: list[DeadLetter]) -> None:
        letters.extend(batch)

    return KochavaSender(
        KochavaHttpClient(url or emu.url, timeout),
        AdaptiveRateLimiter(1000.0),
        app_guid=GUID,
        dead_letter=dead,
        on_result=lambda request, outcome: results.append(outcome),
        backoff=Backoff(base=0.01, cap=0.05),
        rng=random.Random(1),
    )


async def test_delivers_exact_bodies_and_never_sends_junk_ids(emu: KochavaEmulator) -> None:
    letters: list[DeadLetter] = []
    results: list[str] = []
    sender = make_sender(emu, letters, results)
    link = identity_link("KI1", {"idfv": IDFV}, "u1", "2026-01-01T10:00:00Z")
    assert link is not None
    assert await sender.deliver([entered(), link]) == 2
    await sender.close()
    assert emu.events[0]["kochava_app_id"] == GUID
    assert emu.events[0]["device_ids"] == {"idfv": IDFV}
    assert emu.events[0]["usertime"] == 1767261600
    assert emu.identity_links == [
        {
            "kochava_app_id": GUID,
            "device_id": {"kochava_device_id": "KI1", "idfv": IDFV},
            "data": {"app_userid": "u1"},
        }
    ]
    assert (letters, results) == ([], ["sent", "sent"])


async def test_retries_5xx_retry_after_and_timeouts_until_delivered(emu: KochavaEmulator) -> None:
    letters: list[DeadLetter] = []
    results: list[str] = []
    sender = make_sender(emu, letters, results, timeout=0.3)
    emu.fail_next(2, status=503)
    emu.fail_next(1, status=429, retry_after=0.1)
    emu.slow_next(1, delay=0.6)
    assert await sender.deliver([entered()]) == 1
    await sender.close()
    assert sender.stats.requests_by_status["503"] == 2
    assert sender.stats.requests_by_status["429"] == 1
    assert sender.stats.requests_by_status["timeout"] == 1
    assert sender.stats.retry_after_waits == 1
    assert letters == [] and results == ["sent"]
    assert len(emu.events) >= 1  # the timed-out attempt may have been kept too: at-least-once


async def test_a_400_is_a_typed_dead_letter_and_the_rest_is_delivered(emu: KochavaEmulator) -> None:
    letters: list[DeadLetter] = []
    results: list[str] = []
    sender = make_sender(emu, letters, results)
    bad = entered("KI2").model_copy(update={"body": {**entered("KI2").body, "usertime": 1767261600000}})
    assert await sender.deliver([bad, entered("KI3")]) == 1
    await sender.close()
    [letter] = letters
    assert (letter.stage, letter.reason, letter.http_status) == ("kochava", "kochava_rejected_400", 400)
    assert letter.payload["body"]["kochava_device_id"] == "KI2"
    assert sorted(results) == ["failed", "sent"]
    assert [e["kochava_device_id"] for e in emu.events] == ["KI3"]


async def test_401_stops_without_dead_letters(emu: KochavaEmulator) -> None:
    letters: list[DeadLetter] = []
    sender = make_sender(emu, letters, [])
    emu.fail_next(1, status=401)
    with pytest.raises(KochavaConfigError):
        await sender.deliver([entered()])
    await sender.close()
    assert letters == [] and emu.events == []


async def test_a_tracking_url_answering_404_stops_without_dead_letters(emu: KochavaEmulator) -> None:
    """A wrong KOCHAVA_TRACKING_URL is a configuration error, not a rejection of each request."""
    letters: list[DeadLetter] = []
    sender = make_sender(emu, letters, [], url=emu.url + "/not-kochava")
    with pytest.raises(KochavaConfigError, match="KOCHAVA_TRACKING_URL") as info:
        await sender.deliver([entered(), entered("KI2")])
    await sender.close()
    assert info.value.status == 404
    assert letters == [] and emu.events == [] and sender.stats.dead_letters_by_reason == {}


async def test_dry_run_writes_the_exact_requests(tmp_path: object) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    dry = KochavaDryRun(directory, "https://control.kochava.com")
    assert await dry.deliver([entered()]) == 1
    await dry.close()
    [line] = (directory / "kochava-outbox.jsonl").read_bytes().splitlines()
    record = orjson.loads(line)
    assert record["method"] == "POST" and record["url"] == "https://control.kochava.com/track/json"
    assert record["body"]["kochava_app_id"] is None
    assert record["body"]["data"]["event_name"] == "Audience Entered"


async def test_receipts_name_each_request_s_outcome_status_and_attempts(emu: KochavaEmulator) -> None:
    letters: list[DeadLetter] = []
    results: list[str] = []
    sender = make_sender(emu, letters, results)
    emu.fail_next(1, status=503)
    link = identity_link("KI9", {"idfv": IDFV}, "u9", "2026-01-01T10:00:00Z")
    assert link is not None
    bad = entered("KI2").model_copy(update={"body": {**entered("KI2").body, "usertime": 1767261600000}})
    await sender.deliver([entered(), bad, link])
    await sender.close()
    got = sorted(
        (r.messages[0].device_key, r.messages[0].event_name, r.outcome, r.http_status)
        for r in sender.take_receipts()
    )
    assert ("KI1", "Audience Entered", "delivered", 200) in got
    assert ("KI2", "Audience Entered", "rejected", 400) in got
    assert ("KI9", "IdentityLink", "delivered", 200) in got
    assert [g for g in got if g[2] == "retried"] and all(g[3] == 503 for g in got if g[2] == "retried")
    assert sender.take_receipts() == []  # taken once
