"""Dead letters for the console: read from the dead-letter topic, each named by its partition and offset,
filtered by stage, reason and time. Replaying them is `kseg dlq replay`'s own code (passed in)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.kafka import read_to_end
from app.records import DeadLetter
from app.sections import KafkaSettings
from app.topics import DEADLETTER


@dataclass(frozen=True)
class Letter:
    """One dead letter and where it sits in the topic (`id` is `partition-offset`)."""

    id: str
    letter: DeadLetter


async def read_letters(settings: KafkaSettings) -> list[Letter]:
    """Every dead letter now in the topic, oldest first; a record that is not a dead letter is skipped
    (the topic's own schema allows only dead letters, so none is expected)."""
    out = []
    for record in await read_to_end(settings, settings.topic(DEADLETTER)):
        try:
            letter = DeadLetter.decode(record.value)
        except ValueError:
            continue
        out.append(Letter(f"{record.partition}-{record.offset}", letter))
    return out


def _when(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def select(
    letters: list[Letter], stage: str = "", reason: str = "", since: datetime | None = None
) -> list[Letter]:
    """The letters matching every filter given (an empty filter matches all)."""
    out = []
    for item in letters:
        seen = _when(item.letter.last_seen)
        if stage and item.letter.stage != stage:
            continue
        if reason and item.letter.reason != reason:
            continue
        if since is not None and (seen is None or seen < since):
            continue
        out.append(item)
    return out


def summary(item: Letter) -> dict[str, Any]:
    letter = item.letter
    return {
        "id": item.id,
        "last_seen": letter.last_seen,
        "stage": letter.stage,
        "reason": letter.reason,
        "http_status": letter.http_status,
        "event_id": letter.event_id,
        "error": letter.error,
    }
