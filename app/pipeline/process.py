"""The processing agent: postback → mapping → dedupe → identity → Segment outbox + warehouse row.

It consumes two co-partitioned topics keyed by device key: raw postbacks, and user-link notices from
the identity index. Its tables (profiles, dedupe) are keyed by that same device key or by ids derived
from it, so every write for a key comes from one partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from app.attribution import apply_event
from app.audiences.devices import device_facts, with_att
from app.dlq.writer import dead_letter_record
from app.identity.late_auth import apply_link
from app.identity.records import DeviceLinked
from app.identity.resolver import observations, resolve, with_first_touch
from app.mapping import (
    ProfileRegistry,
    UnknownProfile,
    build_segment_calls,
    build_warehouse_row,
    dead_letter_unknown_profile,
    map_postback,
)
from app.records import AttributionProfile, DeadLetter, RawPostback, dumps, loads, utc_now_iso
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


def _seen(event_id: str) -> bool:
    return bool(dedupe[event_id].value() or dedupe_previous[event_id].value())


#: Postbacks a reinstalled device parks at most while it waits for the index's answers.
MAX_PARKED = 200

#: Events per micro-batch, and how long to wait for a batch to fill.
BATCH_MAX = 250
BATCH_WITHIN = 0.01

Send = tuple[Any, bytes, bytes]


@dataclass
class Step:
    """What one event produces: records to send, then (once they are durable) table writes."""

    event: Any
    sends: list[Send] = field(default_factory=list)
    profile: tuple[str, AttributionProfile] | None = None
    dedupe_id: str | None = None


@dataclass
class Batch:
    """One micro-batch. Its outputs go to Kafka together and are awaited once; only then are profile
    states and dedupe marks written, in event order, so a crash before that replays the whole batch."""

    steps: list[Step] = field(default_factory=list)
    states: dict[str, AttributionProfile] = field(default_factory=dict)
    seen_ids: set[str] = field(default_factory=set)

    def profile(self, device_key: str) -> AttributionProfile:
        if device_key in self.states:
            return self.states[device_key]
        stored = profiles.get(device_key)
        return AttributionProfile.model_validate(stored) if stored else AttributionProfile()

    def seen(self, event_id: str) -> bool:
        return event_id in self.seen_ids or _seen(event_id)

    def add(self, step: Step, device_key: str | None = None, state: AttributionProfile | None = None) -> None:
        if device_key is not None and state is not None:
            facts = device_facts(self.profile(device_key), state, device_key, utc_now_iso())
            step.sends += [(channels.audience_changes, f.member.encode(), dumps(f)) for f in facts]
            self.states[device_key] = state
            step.profile = (device_key, state)
        if step.dedupe_id:
            self.seen_ids.add(step.dedupe_id)
        self.steps.append(step)


async def send_in_key_order(sends: list[Send]) -> None:
    """Produce everything and wait for every ack. Records with the same topic and key keep their order
    (one chain each); chains run side by side, so one slow partition does not hold the others."""
    chains: dict[tuple[int, bytes], list[Send]] = {}
    for send in sends:
        chains.setdefault((id(send[0]), send[1]), []).append(send)

    async def chain(items: list[Send]) -> None:
        futures = [await topic.send(key=key, value=value) for topic, key, value in items]
        for fut in futures:
            await fut

    await asyncio.gather(*(chain(items) for items in chains.values()))


def dead_letter_send(letter: DeadLetter) -> Send:
    return (channels.deadletter, *dead_letter_record(letter, m.dead_letters))


def handle_postback(batch: Batch, event: Any, device_key: str, value: dict[str, Any]) -> None:
    try:
        raw = RawPostback.model_validate(value)
    except ValidationError as exc:
        letter = DeadLetter(stage="mapping", reason="invalid_raw_record", error=str(exc), payload=value)
        batch.add(Step(event, [dead_letter_send(letter)]))
        return
    if raw.source != "replay" and batch.seen(raw.event_id):  # a replay is deliberate; messageIds collapse
        m.deduplicated.inc()
        batch.add(Step(event))
        return
    parked = batch.profile(device_key)
    if parked.awaiting_index_answers > 0:
        if len(parked.parked) < MAX_PARKED:
            batch.add(Step(event), device_key, parked.model_copy(update={"parked": [*parked.parked, value]}))
            m.parked.inc()
            return
        release_parked(batch, event, device_key, parked)  # stop waiting rather than grow without bound
    profile_name = raw.profile or settings.kseg_default_profile
    try:
        profile = registry.get(profile_name)
    except UnknownProfile:
        letter = dead_letter_unknown_profile(raw, profile_name)
        batch.add(Step(event, [dead_letter_send(letter)], dedupe_id=raw.event_id))
        return
    mapped = map_postback(raw, profile, settings.kseg_namespace)
    if isinstance(mapped, DeadLetter):
        batch.add(Step(event, [dead_letter_send(mapped)], dedupe_id=raw.event_id))
        return

    state = batch.profile(device_key)
    identity, state = resolve(mapped, state, device_key, settings)
    state, index_updates = observations(mapped, state, device_key, settings)
    observed_state = state
    state, first_install = apply_event(state, mapped)
    state = with_att(state, mapped)
    index_updates = with_first_touch(mapped, observed_state, state, index_updates, device_key)
    answers = sum(1 for u in index_updates if u.kind == "observed" and u.reprocess_for)
    if mapped.kind == "reinstall" and state.first_touch is None and answers:
        # Wait for the index to say whether this reinstall inherits its original install's first touch,
        # so the device's next purchases carry the install campaign (see docs/identity.md).
        state = state.model_copy(update={"awaiting_index_answers": answers})
    messages = build_segment_calls(mapped, identity, state, first_install=first_install)
    row = build_warehouse_row(mapped, identity, state)

    key = device_key.encode()
    sends: list[Send] = [(channels.outbox, key, dumps(msg)) for msg in messages]
    sends.append((channels.warehouse, mapped.event_id.encode(), dumps(row)))
    sends += [(channels.device_index, u.device.encode(), dumps(u)) for u in index_updates]
    batch.add(Step(event, sends, dedupe_id=raw.event_id), device_key, state)
    m.processed.inc(kind=mapped.kind)
    for msg in messages:
        m.segment_messages.inc(type=msg["type"])
    m.warehouse_rows.inc()


def handle_device_linked(batch: Batch, event: Any, device_key: str, value: dict[str, Any]) -> None:
    try:
        notice = DeviceLinked.model_validate(value)
    except ValidationError as exc:
        letter = DeadLetter(stage="identity", reason="invalid_link_notice", error=str(exc), payload=value)
        batch.add(Step(event, [dead_letter_send(letter)]))
        return
    state, messages = apply_link(batch.profile(device_key), notice, device_key, settings)
    key = device_key.encode()
    batch.add(Step(event, [(channels.outbox, key, dumps(msg)) for msg in messages]), device_key, state)
    for msg in messages:
        m.segment_messages.inc(type=msg["type"])
    if notice.answers_reinstall and state.awaiting_index_answers > 0:
        if state.first_touch is not None or state.awaiting_index_answers == 1:
            release_parked(batch, event, device_key, state)
        else:
            remaining = state.awaiting_index_answers - 1
            batch.add(Step(event), device_key, state.model_copy(update={"awaiting_index_answers": remaining}))


def release_parked(batch: Batch, event: Any, device_key: str, state: AttributionProfile) -> None:
    """Stop waiting for the index and process the parked postbacks, in the order they arrived."""
    parked = state.parked
    batch.add(Step(event), device_key, state.model_copy(update={"awaiting_index_answers": 0, "parked": []}))
    for value in parked:
        handle_postback(batch, event, device_key, value)


def handle_event(batch: Batch, event: Any) -> None:
    """Decode one record of the device stream and hand it to its handler."""
    device_key = (event.key or b"").decode("utf-8", "replace")
    try:
        value = loads(event.value)
    except Exception as exc:  # a record no kseg process wrote: keep it, typed
        raw = bytes(event.value or b"").decode("utf-8", "replace")
        letter = DeadLetter(
            stage="mapping", reason="undecodable_record", error=repr(exc), payload={"raw": raw}
        )
        batch.add(Step(event, [dead_letter_send(letter)]))
        return
    kind = value.get("kind") if isinstance(value, dict) else None
    if kind == "device_linked":
        handle_device_linked(batch, event, device_key, value)
    else:
        handle_postback(batch, event, device_key, value if isinstance(value, dict) else {"value": value})


async def process_batch(stream: Any, context: Any, events: list[Any]) -> None:
    """`stream` is the one being iterated and acked; `context` is the agent's parent stream, used only to
    point faust's current-event context at each event, so table reads and writes use its partition.
    (Setting it on `stream` itself would overwrite the event noack_take is about to buffer.)"""
    batch = Batch()
    for event in events:
        context._set_current_event(event)
        handle_event(batch, event)
    futures = [
        await topic.send(key=key, value=value) for step in batch.steps for topic, key, value in step.sends
    ]
    for fut in futures:
        await fut
    for step in batch.steps:
        context._set_current_event(step.event)
        if step.profile is not None:
            device_key, state = step.profile
            profiles[device_key] = state.model_dump(mode="json")
        if step.dedupe_id:
            dedupe[step.dedupe_id] = 1
    for event in events:
        await stream.ack(event)


@app.agent(channels.device_stream, name="process")
async def process(stream: Any) -> None:
    """Micro-batches in partition order; see `Batch` for why table writes come last."""
    s = stream.noack()
    async for events in s.noack_take(BATCH_MAX, within=BATCH_WITHIN):
        with activity.working("process"):
            await process_batch(s, stream, events)
