"""Identity agents: links fan out to the device index; the index tells device keys who they belong to.

links (keyed by link) → `links_agent` → device-index (keyed by typed id) → `device_index_agent`
(+ `devices` table, co-partitioned with device-index) → device-events (keyed by device key), which
the processing agent reads next to postbacks.

Every send is awaited until Kafka acked it before the next step (at-least-once: a replay re-sends,
and every consumer of these records is idempotent).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import orjson
from prometheus_client import Counter

from app.dlq.writer import dead_letter_record
from app.identity.index import IndexLimits, apply_update, link_updates
from app.identity.metrics import identity_metrics
from app.identity.records import DeviceIndexUpdate, DeviceRecord, LinkRequest, to_bytes
from app.metrics import DeadLetterMetrics
from app.records import DeadLetter, JSONDict, decode_or_dead_letter, unpack, validate_or_dead_letter
from app.runtime.batching import BATCH_MAX, BATCH_WITHIN, HeldSends, HeldWrites, acked_batches
from app.runtime.context import WorkerContext
from app.runtime.topics import Send, topic_sender
from app.sections import IdentitySettings
from app.topics import DEADLETTER, DEVICE_EVENTS, DEVICE_INDEX

log = logging.getLogger(__name__)


class TableView(Protocol):
    """What `handle_index_update` needs of the devices table (a dict in tests, `HeldWrites` in the agent)."""

    def get(self, key: bytes, default: Any = None) -> Any: ...
    def __setitem__(self, key: bytes, value: bytes) -> None: ...


async def send_dead_letter(send: Send, counted: Counter, letter: DeadLetter) -> None:
    _key, record = dead_letter_record(letter, counted)  # redacted, counted, logged like every stage's
    await send(letter.event_id.encode() if letter.event_id else None, record)


async def handle_link(
    value: bytes | None, send_index: Send, send_deadletter: Send, *, dead_letters: Counter
) -> int:
    """Validate one link and fan it out; returns the number of index updates sent."""
    link = decode_or_dead_letter(value, LinkRequest, stage="identity", reason="invalid_link")
    if isinstance(link, DeadLetter):
        identity_metrics.links_rejected.labels(reason="invalid_record").inc()
        await send_dead_letter(send_deadletter, dead_letters, link)
        return 0
    problem = link.problem()
    if problem:
        identity_metrics.links_rejected.labels(reason=problem).inc()
        as_received = orjson.loads(value or b"")  # the payload a dead letter keeps, not the cleaned link
        error, ref = f"link {link.link_id} has {problem}", link.link_id
        letter = DeadLetter(stage="identity", reason=problem, error=error, event_id=ref, payload=as_received)
        await send_dead_letter(send_deadletter, dead_letters, letter)
        return 0
    updates = link_updates(link)
    for update in updates:
        await send_index(update.device.encode(), to_bytes(update))
    identity_metrics.links_accepted.labels(source=link.source, stage="worker").inc()
    return len(updates)


def index_limits(settings: IdentitySettings) -> IndexLimits:
    """The device index's limits from KSEG_MAX_IDS_PER_PROFILE and KSEG_SHARED_DEVICE_THRESHOLD."""
    return IndexLimits(settings.kseg_max_ids_per_profile, settings.kseg_shared_device_threshold)


async def handle_index_update(
    key: bytes | None,
    value: bytes | JSONDict | DeadLetter | None,
    table: TableView,
    send_event: Send,
    send_deadletter: Send,
    settings: IdentitySettings,
    send_index: Send | None = None,
    *,
    dead_letters: Counter,
) -> int:
    """Apply one index update to the table; notices (and forwarded index updates: an accepted SDK
    anonymousId claim's adopts, via `send_index`) are sent before the record is written back, so a crash in
    between re-sends them on replay instead of losing them. Returns the notices sent. `value` is a record's
    bytes or one item `unpack` decoded from a `Batched` record."""
    update: DeviceIndexUpdate | DeadLetter
    if isinstance(value, DeadLetter):
        update = value
    elif isinstance(value, dict):
        update = validate_or_dead_letter(
            value, DeviceIndexUpdate, stage="identity", reason="invalid_index_update"
        )
    else:
        update = decode_or_dead_letter(
            value, DeviceIndexUpdate, stage="identity", reason="invalid_index_update"
        )
    if isinstance(update, DeadLetter):
        await send_dead_letter(send_deadletter, dead_letters, update)
        return 0
    table_key = key or update.device.encode()
    stored = table.get(table_key)
    record = DeviceRecord.model_validate(orjson.loads(stored)) if stored else None
    outcome = apply_update(record, update, index_limits(settings))
    for reason in outcome.refused:
        identity_metrics.merges_refused.labels(reason=reason).inc()
    for notice in outcome.notices:
        await send_event(notice.device_key.encode(), to_bytes(notice))
    if outcome.forward and send_index is not None:
        for forwarded in outcome.forward:
            await send_index(forwarded.device.encode(), to_bytes(forwarded))
    if record is None or outcome.record != record:
        table[table_key] = to_bytes(outcome.record)  # assigned, never mutated in place: writes the changelog
    return len(outcome.notices)


def is_privacy_erase(value: bytes | None) -> bool:
    """Whether a device-index input record is the privacy agent's erase command for its key (the
    `privacy.erase-index` topic; docs/privacy.md). Suppression is the processing step's, so every action
    of the command erases the index entry only when it is an `erase`."""
    if not value or b'"privacy_erase"' not in value:
        return False
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("kind") == "privacy_erase" and data.get("action") == "erase"


def register(ctx: WorkerContext[IdentitySettings]) -> None:
    """Declare the device index table and the two identity agents on the worker."""
    faust_app, topics = ctx.faust_app, ctx.topics
    counted = DeadLetterMetrics.on(ctx.registry).total

    #: typed device id (bytes) → orjson of a DeviceRecord. Keyed exactly like identity.device-index.
    devices = faust_app.Table(
        "identity-devices",
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=ctx.settings.kseg_topic_partitions,
        help="Device index: device keys, users and shared flag per typed device id.",
    )

    @faust_app.agent(topics.links, name="identity-links")
    async def links_agent(stream: Any) -> None:
        """Fan each link out to the device index, one update per device id."""
        name, send_all = ctx.settings.topic, ctx.outputs.send_all
        send_index = topic_sender(send_all, name(DEVICE_INDEX))
        send_dlq = topic_sender(send_all, name(DEADLETTER))
        async for value in stream:
            with ctx.activity.working("identity-links"):
                await handle_link(value, send_index, send_dlq, dead_letters=counted)

    @faust_app.agent(topics.device_index, name="identity-device-index")
    async def device_index_agent(stream: Any) -> None:
        """Keep the device index and tell device keys when they are linked or found shared.

        Micro-batches, like the processing agent: a batch's notices, forwards and dead letters go out
        together and are acked before its table writes (`HeldWrites`), so a crash re-sends, never loses."""
        name = ctx.settings.topic
        async for events in acked_batches(stream, BATCH_MAX, BATCH_WITHIN):
            with ctx.activity.working("identity-device-index"):
                sends, table = HeldSends(), HeldWrites(devices, stream)
                send_event = sends.sender(name(DEVICE_EVENTS))
                send_dlq, send_index = sends.sender(name(DEADLETTER)), sends.sender(name(DEVICE_INDEX))
                erased = []
                for event in events:
                    if is_privacy_erase(event.value):
                        erased.append(event)  # applied after the batch's writes, below
                        continue
                    view = table.at(event)
                    items = unpack(event.key, event.value, stage="identity", reason="invalid_index_update")
                    for key, item in items:  # one update, or a partition's share of a batch's
                        await handle_index_update(
                            key,
                            item,
                            view,
                            send_event,
                            send_dlq,
                            ctx.settings,
                            send_index,
                            dead_letters=counted,
                        )
                await ctx.outputs.send_all(sends.records)
                table.flush()
                for event in erased:  # a privacy erasure: the entry goes, with a tombstone on the changelog
                    stream._set_current_event(event)
                    devices.pop(event.key, None)
