"""Writing dead letters: one typed record per event, awaited before the source offset may be acked."""

from __future__ import annotations

import logging

from prometheus_client import Counter

from app.dlq.redact import redact
from app.records import DeadLetter

log = logging.getLogger(__name__)


def dead_letter_record(letter: DeadLetter, counter: Counter | None = None) -> tuple[bytes, bytes]:
    """(key, value) of one dead letter for its topic, without raw emails or phones; counts it by stage
    and reason, and logs it."""
    letter = redact(letter)
    if counter is not None:
        counter.labels(stage=letter.stage, reason=letter.reason).inc()
    log.warning("dead letter (%s/%s) %s: %s", letter.stage, letter.reason, letter.event_id, letter.error)
    return (letter.event_id or letter.reason).encode(), letter.encode()


async def send_dead_letters(topic: object, letters: list[DeadLetter], counter: Counter | None = None) -> None:
    """Produce each dead letter to the faust `topic` and wait for every ack."""
    futures = []
    for letter in letters:
        key, value = dead_letter_record(letter, counter)
        futures.append(await topic.send(key=key, value=value))  # type: ignore[attr-defined]
    for fut in futures:
        await fut
