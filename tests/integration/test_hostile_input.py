"""Hostile input against a real receiver and worker: hypothesis-generated requests for every HTTP
endpoint (methods, paths, query strings, bodies, encodings, and headers: every header kseg reads, in any
case, with arbitrary bytes, plus arbitrary header names), then the books are checked.

Asserted: no 5xx except 503 with Retry-After; every error a JSON reason; the receiver stays ready;
every postback answered 200 is durable in `postbacks.raw` and ends at the strict Segment emulator or
as a typed dead letter; the worker serves no table or router view; and no token, secret, write key or
raw email appears in anything the run produced (logs, /metrics, dead letters, error bodies, data dir).

Bounded for `make test` (KSEG_FUZZ_EXAMPLES, default 250); `make fuzz` runs a longer one.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from hypothesis import HealthCheck, example, given, settings

from tests.emulators.segment_api import SegmentEmulator
from tests.harness import Pipeline, read_topic, wait_for
from tests.integration.hostile import (
    EMAILS,
    Answer,
    HostileRequest,
    Secrets,
    any_request,
    seed_postbacks,
    send,
)

EXAMPLES = int(os.environ.get("KSEG_FUZZ_EXAMPLES", "250"))
MAX_SECONDS = float(os.environ.get("KSEG_FUZZ_SECONDS", "45"))
SUCCESS = b'{"message":"success"}'

SECRETS = Secrets(
    postback_token="pbtok-Q7Zx9SECRETpostback",
    link_token="lntok-K2Vw4SECRETlinks",
    webhook_secret="whsig-P5Ty8SECRETsignature",
    header_secret="whhdr-M3Ru6SECRETheader",
    write_key="wkey-B9Nc1SECRETwritekey",
)


def check_answer(request: HostileRequest, answer: Answer) -> None:
    """Per-request rules: no 5xx but 503 + Retry-After, JSON reasons, nothing secret echoed back."""
    where = f"{request.note}: {request.method} {request.target[:200]!r}"
    if answer.status is None:
        # Closing without an answer is allowed only where the request lies about its own framing.
        framing = {n.lower() for n, _ in request.headers} & {b"content-length", b"transfer-encoding"}
        assert framing or request.body, f"connection closed without an answer: {where}"
        return
    assert answer.status < 500 or (answer.status == 503 and answer.headers.get("retry-after")), (
        f"{answer.status} {answer.body[:300]!r} for {where}"
    )
    if request.valid_postback:
        assert answer.status in (200, 503), f"valid postback refused: {answer.status} {answer.body!r} {where}"
    if answer.status >= 400 and answer.body:
        if answer.headers.get("content-type", "").startswith("application/json"):
            body = orjson.loads(answer.body)
            assert "error" in body and "message" in body, f"{answer.body!r} {where}"
        else:
            # Malformed HTTP framing is answered by aiohttp's parser before any kseg code runs:
            # always a plain-text 400 (docs/security.md). Everything from kseg itself is JSON.
            assert answer.status == 400, f"non-JSON {answer.status} {answer.body[:200]!r} {where}"
    leaked = [s for s in (*SECRETS.all, *EMAILS) if s.encode() in answer.body]
    assert not leaked, f"answer echoes {leaked}: {where}"


def run_fuzz(port: int, log: list[tuple[HostileRequest, Answer]]) -> None:
    """Hypothesis drives the requests (synchronously, on raw sockets) until EXAMPLES or MAX_SECONDS."""
    deadline = time.monotonic() + MAX_SECONDS

    def one(request: HostileRequest) -> None:
        if time.monotonic() > deadline:
            return
        answer = send(port, request)
        log.append((request, answer))
        check_answer(request, answer)

    test = given(request=any_request(SECRETS))(one)
    for seed in seed_postbacks(SECRETS):  # explicit examples run first, whatever the budget
        test = example(request=seed)(test)
    settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))(
        test
    )()


async def receiver_ready(p: Pipeline) -> bool:
    async with aiohttp.ClientSession() as s, s.get(f"{p.url}/readyz") as r:
        return r.status == 200


async def check_worker_serves_no_tables(p: Pipeline) -> None:
    base = f"http://127.0.0.1:{p.worker_ports['worker-1']}"
    async with aiohttp.ClientSession() as s:
        for path in (
            "/table/",
            "/table/profiles/",
            "/table/devices/",
            "/router/",
            "/router/profiles/k/",
            "/graph/",
        ):
            async with s.get(base + path) as r:
                body = await r.read()
                assert r.status in (401, 404), f"worker {path} answered {r.status}: {body[:200]!r}"
                assert b"kochava_device_id" not in body and b"email" not in body
        for path in ("/metrics", "/healthz", "/readyz"):
            async with s.get(base + path) as r:
                assert r.status == 200, f"worker {path} answered {r.status}"


def produced_files(data_dir: Path) -> list[Path]:
    """Process logs, the dry-run outbox, RocksDB state: every file the deployment wrote."""
    return [f for f in data_dir.rglob("*") if f.is_file()]


async def scraped(p: Pipeline, deadletters: list[Any]) -> dict[str, bytes]:
    """What the running processes expose: both /metrics pages, and the dead-letter topic."""
    async with aiohttp.ClientSession() as s, s.get(f"{p.url}/metrics") as r:
        out = {"receiver /metrics": await r.read()}
    out["worker /metrics"] = (await p.worker_metrics()).encode()
    out["deadletter topic"] = orjson.dumps(deadletters)
    return out


async def test_hostile_requests_never_5xx_lose_nothing_and_leak_no_secret(
    make_pipeline: Any, dump_logs: list[Pipeline]
) -> None:
    async with SegmentEmulator(write_key=SECRETS.write_key) as segment:
        p: Pipeline = make_pipeline(
            segment.url,
            KSEG_POSTBACK_TOKENS=SECRETS.postback_token,
            KSEG_LINK_TOKENS=SECRETS.link_token,
            SEGMENT_WEBHOOK_SECRET=SECRETS.webhook_secret,
            SEGMENT_WEBHOOK_HEADER_SECRET=SECRETS.header_secret,
            SEGMENT_WRITE_KEY=SECRETS.write_key,
            KSEG_HTTP_BODY_TIMEOUT="2",
            KSEG_HTTP_HEADER_TIMEOUT="5",
        )
        dump_logs.append(p)
        await p.start()

        log: list[tuple[HostileRequest, Answer]] = []
        started = time.monotonic()
        await asyncio.to_thread(run_fuzz, p.http_port, log)
        fuzz_seconds = time.monotonic() - started
        assert await receiver_ready(p), "the receiver is not ready after the fuzz run"
        statuses = Counter(a.status for _, a in log)
        reasons = Counter(_reason(a) for _, a in log if a.status != 200)
        accepted = sum(1 for _, a in log if a.status == 200 and a.body == SUCCESS)
        assert len(log) >= min(EXAMPLES, 100) and accepted >= len(seed_postbacks(SECRETS)), (
            len(log),
            statuses,
        )

        # Every 200 is one record in postbacks.raw: nothing acknowledged was dropped or invented.
        raw_topic = p.topic("postbacks.raw")
        raw = await wait_for(
            lambda: _at_least(read_topic(p.bootstrap, raw_topic), accepted), 30, f"{accepted} raw records"
        )
        assert len(raw) == accepted, (len(raw), accepted)
        event_ids = {value["event_id"] for _, value in raw}

        async def unresolved() -> set[str]:
            letters = [v for _, v in await read_topic(p.bootstrap, p.topic("deadletter"))]
            done = {m["context"]["kseg"]["event_id"] for m in segment.messages} | {
                d.get("event_id") for d in letters
            }
            return event_ids - done

        async def settled() -> bool:
            return not await unresolved()

        await wait_for(settled, 120, "every accepted postback at Segment or dead-lettered", interval=1)
        letters = [v for _, v in await read_topic(p.bootstrap, p.topic("deadletter"))]
        assert all(d["kind"] == "dead_letter" and d["stage"] and d["reason"] for d in letters), letters[:3]
        at_segment = {m["context"]["kseg"]["event_id"] for m in segment.messages} & event_ids
        lettered = {d["event_id"] for d in letters} & event_ids
        print(
            f"\nhostile-input: {len(log)} requests in {fuzz_seconds:.0f} s, "
            f"statuses {dict(sorted(statuses.items(), key=str))}; "
            f"{accepted} postbacks accepted = {len(event_ids)} distinct events: {len(at_segment)} at "
            f"Segment, {len(lettered - at_segment)} dead-lettered "
            f"({dict(Counter(d['reason'] for d in letters))}); refusals {dict(reasons.most_common())}"
        )
        assert segment.stats()["silently_dropped"] == 0, segment.dropped[:3]

        await check_worker_serves_no_tables(p)

        # Secrets never leak: grep everything the run produced (and what Segment got: hashed emails only).
        produced = await scraped(p, letters)
        produced["segment messages"] = orjson.dumps(segment.messages)
        await p.stop()
        produced.update({str(f.relative_to(p.data_dir)): f.read_bytes() for f in produced_files(p.data_dir)})
        assert any("receiver.log" in name for name in produced) and any(
            "worker-1.log" in name for name in produced
        )
        for name, content in produced.items():
            for secret in (*SECRETS.all, *EMAILS, EMAILS[1].lower()):
                assert secret.encode() not in content, f"{secret!r} found in {name}"


def _reason(answer: Answer) -> str:
    try:
        return str(orjson.loads(answer.body)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"{answer.status} (no JSON reason)"


async def _at_least(coro: Any, n: int) -> list[Any] | None:
    values: list[Any] = await coro
    return values if len(values) >= n else None
