"""`kseg dlq list` and `kseg dlq replay`: read the dead-letter topic, put letters back into the pipeline.

Replay is idempotent: a replayed postback keeps its event id and so every Segment messageId; a replayed
Segment message keeps its messageId. Segment drops the repeats of anything that already arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from app.config import Settings
from app.kafka import producer_config, read_to_end
from app.records import DeadLetter, device_key_of, dumps, utc_now_iso
from app.topics import DEADLETTER, KOCHAVA_OUTBOX, OUTBOX, RAW


def parse_since(text: str | None) -> datetime | None:
    """`--since` as ISO-8601 or a relative `30m` / `2h` / `7d`."""
    if not text:
        return None
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(**{units[text[-1]]: float(text[:-1])})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SystemExit(f"--since: {text!r} is neither ISO-8601 nor like 30m, 2h, 7d") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def read_dead_letters(
    settings: Settings, reason: str | None, since: datetime | None
) -> list[DeadLetter]:
    """Every dead letter currently in the topic (from the beginning to the end offsets at start)."""
    letters = [DeadLetter.decode(r.value) for r in await read_to_end(settings, settings.topic(DEADLETTER))]
    return [
        letter
        for letter in letters
        if not (reason and letter.reason != reason)
        and not (since and datetime.fromisoformat(letter.last_seen.replace("Z", "+00:00")) < since)
    ]


def replay_target(letter: DeadLetter, settings: Settings) -> tuple[str, str, bytes] | None:
    """Where a dead letter goes back in: (topic, key, value), or None if it cannot be replayed."""
    payload = letter.payload
    if payload.get("kind") == "postback" and isinstance(payload.get("params"), dict):
        key = device_key_of(payload["params"])
        if key is None:
            return None
        record = {**payload, "source": "replay", "received_at": payload.get("received_at") or utc_now_iso()}
        return settings.topic(RAW), key, dumps(record)
    if "messageId" in payload and "type" in payload:
        key = str(payload.get("userId") or payload.get("anonymousId") or payload["messageId"])
        return settings.topic(OUTBOX), key, dumps(payload)
    if payload.get("kind") == "kochava_request":
        key = str(payload.get("device_key") or payload.get("request_id") or "kochava")
        return settings.topic(KOCHAVA_OUTBOX), key, dumps(payload)
    return None


async def replay(settings: Settings, letters: list[DeadLetter]) -> tuple[int, int]:
    producer = AIOKafkaProducer(**producer_config(settings))
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise SystemExit(
            f"kseg dlq replay: cannot start a producer ({exc!r}). On the embedded broker set "
            "KSEG_EMBEDDED_BROKER=true (it has no idempotent producer), as `kseg run` prints."
        ) from exc
    replayed = skipped = 0
    try:
        for letter in letters:
            target = replay_target(letter, settings)
            if target is None:
                skipped += 1
                continue
            topic, key, value = target
            await producer.send_and_wait(topic, value=value, key=key.encode())
            replayed += 1
    finally:
        await producer.stop()
    return replayed, skipped


def _row(letter: DeadLetter) -> str:
    status = str(letter.http_status or "")
    event_id = letter.event_id or "-"
    when, stage, reason, error = letter.last_seen, letter.stage, letter.reason, letter.error[:80]
    return f"{when:24} {stage:9} {reason:28} {status:4} {event_id:32} {error}"


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    letters = asyncio.run(read_dead_letters(settings, args.reason, parse_since(args.since)))
    if args.json:
        for letter in letters:
            sys.stdout.write(dumps(letter).decode() + "\n")
        return 0
    print(f"{'last seen':24} {'stage':9} {'reason':28} {'http':4} {'event id':32} error")
    for letter in letters[-args.limit :] if args.limit else letters:
        print(_row(letter))
    counts: dict[str, int] = {}
    for letter in letters:
        counts[letter.reason] = counts.get(letter.reason, 0) + 1
    summary = ", ".join(f"{r}: {n}" for r, n in sorted(counts.items())) or "none"
    print(f"\n{len(letters)} dead letter(s) in {settings.topic(DEADLETTER)} ({summary})")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    letters = asyncio.run(read_dead_letters(settings, args.reason, parse_since(args.since)))
    if not letters:
        print("no dead letters match; nothing replayed")
        return 0
    replayed, skipped = asyncio.run(replay(settings, letters))
    print(f"replayed {replayed} of {len(letters)} dead letter(s); {skipped} had no replayable payload")
    return 0


def add_parser(subparsers: Any, runner: Any) -> None:
    """Add `dlq list|replay`; `runner(command, args)` supplies the settings (and checks Kafka is set)."""
    dlq = subparsers.add_parser("dlq", help="list or replay dead letters", description=__doc__)
    dsub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="{list,replay}")
    for name, func, text in (
        ("list", cmd_list, "show dead letters with their reasons"),
        ("replay", cmd_replay, "put dead letters back through the pipeline (idempotent)"),
    ):
        p = dsub.add_parser(name, help=text, description=text)
        p.add_argument("--reason", help="only letters with this reason code, e.g. invalid_revenue")
        p.add_argument("--since", help="only letters last seen after this time (ISO-8601, or 30m / 2h / 7d)")
        if name == "list":
            p.add_argument("--limit", type=int, default=0, help="show only the newest N")
            p.add_argument("--json", action="store_true", help="one JSON dead letter per line")
        p.set_defaults(func=lambda args, command=func: runner(command, args))
