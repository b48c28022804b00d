"""Engage deliveries on the signed Segment webhook: membership changes made durable on `audiences.changes`.

Called by the webhook route after the signature check, before its 200: Segment retries a 5xx, so a
change is either in Kafka or the delivery is retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from app import topics
from app.audiences.engage import changes_from_payload
from app.records import dumps
from app.sections import SharedSettings


class _Publisher(Protocol):
    async def publish_all(self, topic: str, records: Sequence[tuple[str | None, bytes]]) -> None: ...


async def publish_membership_changes(
    publisher: _Publisher, settings: SharedSettings, payload: Any, received_at: str
) -> tuple[int, list[str]]:
    """Publish the delivery's membership changes (keyed by member); returns (published, unusable reasons)."""
    changes, reasons = changes_from_payload(payload, received_at)
    topic = settings.topic(topics.AUDIENCE_CHANGES)
    await publisher.publish_all(topic, [(change.member, dumps(change)) for change in changes])
    return len(changes), reasons
