"""Reading privacy requests back from the compacted `privacy.requests` topic (the API, the CLI, the agent).

A request's current state is its record with the highest revision (a duplicate submission racing the
agent may land after a newer revision; it never wins)."""

from __future__ import annotations

from typing import Any

from app import topics
from app.kafka import consumer_config, read_records
from app.privacy.records import PrivacyRequest
from app.records import DeadLetter, decode_or_dead_letter
from app.sections import KafkaSettings


def fold(records: list[Any]) -> dict[str, PrivacyRequest]:
    """The newest revision of every request in `records` (aiokafka records of `privacy.requests`)."""
    out: dict[str, PrivacyRequest] = {}
    for record in records:
        if record.value is None:
            continue
        request = decode_or_dead_letter(
            record.value, PrivacyRequest, stage="identity", reason="invalid_privacy_request"
        )
        if isinstance(request, DeadLetter):
            continue
        old = out.get(request.request_id)
        if old is None or request.revision >= old.revision:
            out[request.request_id] = request
    return out


async def all_requests(settings: KafkaSettings) -> dict[str, PrivacyRequest]:
    records = await read_records(consumer_config(settings), settings.topic(topics.PRIVACY_REQUESTS))
    return fold(records)


async def get_request(settings: KafkaSettings, request_id: str) -> PrivacyRequest | None:
    return (await all_requests(settings)).get(request_id)
