"""The processing agent: postback → mapping → dedupe → identity → Segment outbox + warehouse row.

It consumes two co-partitioned topics keyed by device key: raw postbacks, and user-link notices from
the identity index. Its tables (profiles, dedupe) are keyed by that same device key or by ids derived
from it, so every write for a key comes from one partition.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from app.attribution import apply_event
from app.dlq.writer import send_dead_letters
from app.identity.late_auth import apply_link
from app.identity.records import DeviceLinked
from app.identity.resolver import observations, resolve
from app.mapping import (
    ProfileRegistry,
    UnknownProfile,
    build_segment_calls,
    build_warehouse_row,
    dead_letter_unknown_profile,
    map_postback,
)
from app.records import AttributionProfile, DeadLetter, RawPostback, dumps, loads
from app.worker import channels
from app.worker import metrics as m
from app.worker.faust_app import app, settings
from app.worker.watchdog import activity

log = logging.getLogger(__name__)

registry = ProfileRegistry.load(settings.kseg_mapping_dir)

#: Per-device attribution and identity state (AttributionProfile as JSON).
profiles = app.Table("profiles", default=None, partitions=settings.kseg_topic_partitions)

_ttl = timedelta(hours=settings.kseg_dedupe_ttl_hours)
_ttl_seconds = _ttl.total_seconds()
#: Event ids seen recently: tumbling windows one TTL wide, expiring after two, keyed by wall-clock time
#: (not record timestamps, which brokers may leave unset). A lookup checks this window and the previous.
dedupe: Any = app.Table("dedupe", default=int, partitions=settings.kseg_topic_partitions).tumbling(
    _ttl, expires=_ttl * 2
)
dedupe = dedupe.relative_to(lambda event=None: time.time())
dedupe_previous = dedupe.relative_to(lambda event=None: time.time() - _ttl_seconds)


def _profile(device_key: str) -> AttributionProfile:
    stored = profiles.get(device_key)
    return AttributionProfile.model_validate(stored) if stored else AttributionProfile()


def _seen(event_id: str) -> bool:
    return bool(dedupe[event_id].value() or dedupe_previous[event_id].value())


async def _send_all(sends: list[tuple[Any, bytes, bytes]]) -> None:
    """Produce to every (topic, key, value) and wait for all acks before the caller marks progress."""
    futures = [await topic.send(key=key, value=value) for topic, key, value in sends]
    for fut in futures:
        await fut


async def handle_postback(device_key: str, value: dict[str, Any]) -> None:
    try:
        raw = RawPostback.model_validate(value)
    except ValidationError as exc:
        letter = DeadLetter(stage="mapping", reason="invalid_raw_record", error=str(exc), payload=value)
        await send_dead_letters(channels.deadletter, [letter], m.dead_letters)
        return
    if raw.source != "replay" and _seen(raw.event_id):  # a replay is deliberate; messageIds still collapse
        m.deduplicated.inc()
        return
    profile_name = raw.profile or settings.kseg_default_profile
    try:
        profile = registry.get(profile_name)
    except UnknownProfile:
        await send_dead_letters(
            channels.deadletter, [dead_letter_unknown_profile(raw, profile_name)], m.dead_letters
        )
        dedupe[raw.event_id] = 1
        return
    mapped = map_postback(raw, profile, settings.kseg_namespace)
    if isinstance(mapped, DeadLetter):
        await send_dead_letters(channels.deadletter, [mapped], m.dead_letters)
        dedupe[raw.event_id] = 1
        return

    state = _profile(device_key)
    identity, state = resolve(mapped, state, device_key, settings)
    state, index_updates = observations(mapped, state, device_key, settings)
    state, first_install = apply_event(state, mapped)
    messages = build_segment_calls(mapped, identity, state, first_install=first_install)
    row = build_warehouse_row(mapped, identity, state)

    key = device_key.encode()
    sends: list[tuple[Any, bytes, bytes]] = [(channels.outbox, key, dumps(msg)) for msg in messages]
    sends.append((channels.warehouse, mapped.event_id.encode(), dumps(row)))
    sends += [(channels.device_index, u.device.encode(), dumps(u)) for u in index_updates]
    await _send_all(sends)

    profiles[device_key] = state.model_dump(mode="json")
    dedupe[raw.event_id] = 1
    m.processed.inc(kind=mapped.kind)
    for msg in messages:
        m.segment_messages.inc(type=msg["type"])
    m.warehouse_rows.inc()


async def handle_device_linked(device_key: str, value: dict[str, Any]) -> None:
    try:
        notice = DeviceLinked.model_validate(value)
    except ValidationError as exc:
        letter = DeadLetter(stage="identity", reason="invalid_link_notice", error=str(exc), payload=value)
        await send_dead_letters(channels.deadletter, [letter], m.dead_letters)
        return
    state, messages = apply_link(_profile(device_key), notice, device_key, settings)
    key = device_key.encode()
    await _send_all([(channels.outbox, key, dumps(msg)) for msg in messages])
    profiles[device_key] = state.model_dump(mode="json")
    for msg in messages:
        m.segment_messages.inc(type=msg["type"])


@app.agent(channels.device_stream, name="process")
async def process(stream: Any) -> None:
    """One event at a time, in partition order: table writes must follow their event's partition."""
    async for event in stream.events():
        with activity.working("process"):
            await handle_event(event)


async def handle_event(event: Any) -> None:
    """Decode one record of the device stream and hand it to its handler."""
    device_key = (event.key or b"").decode("utf-8", "replace")
    try:
        value = loads(event.value)
    except Exception as exc:  # a record no kseg process wrote: keep it, typed
        letter = DeadLetter(
            stage="mapping",
            reason="undecodable_record",
            error=repr(exc),
            payload={"raw": bytes(event.value or b"").decode("utf-8", "replace")},
        )
        await send_dead_letters(channels.deadletter, [letter], m.dead_letters)
        return
    kind = value.get("kind") if isinstance(value, dict) else None
    if kind == "device_linked":
        await handle_device_linked(device_key, value)
    else:
        await handle_postback(device_key, value if isinstance(value, dict) else {"value": value})
