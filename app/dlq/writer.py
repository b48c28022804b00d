"""Writing dead letters: one typed record per event, awaited before the source offset may be acked."""

from __future__ import annotations

import logging

from prometheus_client import Counter

from app.dlq.redact import redact
from app.records import DeadLetter
from app.runtime.outputs import SendAll

log = logging.getLogger(__name__)


def dead_letter_record(letter: DeadLetter, counter: Counter | None = None) -> tuple[bytes, bytes]:
    """(key, value) of one dead letter for its topic, without raw emails or phones; counts it by stage
    and reason, and logs it."""
    letter = redact(letter)
    if counter is not None:
        counter.labels(stage=letter.stage, reason=letter.reason).inc()
    log.warning("dead letter (%s/%s) %s: %s", letter.stage, letter.reason, letter.event_id, letter.error)
    return (letter.event_id or letter.reason).encode(), letter.encode()


async def send_dead_letters(
    send_all: SendAll, topic: str, letters: list[DeadLetter], counter: Counter | None = None
) -> None:
    """Produce each dead letter to the full `topic` name through the output producer's `send_all`
    (`ctx.outputs.send_all`) and wait for every ack."""
    await send_all([(topic, *dead_letter_record(letter, counter)) for letter in letters])
