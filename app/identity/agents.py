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
from pydantic import ValidationError

from app.config import Settings
from app.dlq.redact import redact
from app.identity.index import IndexLimits, apply_update, link_updates
from app.identity.metrics import identity_metrics
from app.identity.records import DeviceIndexUpdate, DeviceRecord, LinkRequest, to_bytes
from app.records import DeadLetter
from app.runtime.batching import BATCH_MAX, BATCH_WITHIN, HeldSends, HeldWrites, acked_batches
from app.runtime.context import WorkerContext
from app.runtime.topics import Send, topic_sender
from app.topics import DEADLETTER, DEVICE_EVENTS, DEVICE_INDEX

log = logging.getLogger(__name__)


class TableView(Protocol):
    """What `handle_index_update` needs of the devices table (a dict in tests, `HeldWrites` in the agent)."""

    def get(self, key: bytes, default: Any = None) -> Any: ...
    def __setitem__(self, key: bytes, value: bytes) -> None: ...


def _payload(value: bytes | None) -> dict[str, Any]:
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return {"raw": (value or b"").decode("utf-8", errors="replace")}
    return data if isinstance(data, dict) else {"raw": data}


async def dead_letter(
    send: Send, reason: str, error: str, value: bytes | None, ref: str | None = None
) -> None:
    letter = DeadLetter(
        stage="identity", reason=reason, error=error[:2000], event_id=ref, payload=_payload(value)
    )
    await send(ref.encode() if ref else None, to_bytes(redact(letter)))


async def handle_link(value: bytes | None, send_index: Send, send_deadletter: Send) -> int:
    """Validate one link and fan it out; returns the number of index updates sent."""
    try:
        link = LinkRequest.model_validate(orjson.loads(value or b""))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        identity_metrics.links_rejected.labels(reason="invalid_record").inc()
        await dead_letter(send_deadletter, "invalid_link", str(exc), value)
        return 0
    problem = link.problem()
    if problem:
        identity_metrics.links_rejected.labels(reason=problem).inc()
        await dead_letter(send_deadletter, problem, f"link {link.link_id} has {problem}", value, link.link_id)
        return 0
    updates = link_updates(link)
    for update in updates:
        await send_index(update.device.encode(), to_bytes(update))
    identity_metrics.links_accepted.labels(source=link.source, stage="worker").inc()
    return len(updates)


def index_limits(settings: Settings) -> IndexLimits:
    """The device index's limits from KSEG_MAX_IDS_PER_PROFILE and KSEG_SHARED_DEVICE_THRESHOLD."""
    return IndexLimits(settings.kseg_max_ids_per_profile, settings.kseg_shared_device_threshold)


async def handle_index_update(
    key: bytes | None,
    value: bytes | None,
    table: TableView,
    send_event: Send,
    send_deadletter: Send,
    settings: Settings,
    send_index: Send | None = None,
) -> int:
    """Apply one index update to the table; notices (and forwarded index updates: an accepted SDK
    anonymousId claim's adopts, via `send_index`) are sent before the record is written back, so a crash in
    between re-sends them on replay instead of losing them. Returns the notices sent."""
    try:
        update = DeviceIndexUpdate.model_validate(orjson.loads(value or b""))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        await dead_letter(send_deadletter, "invalid_index_update", str(exc), value)
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


def register(ctx: WorkerContext) -> None:
    """Declare the device index table and the two identity agents on the worker."""
    faust_app, topics = ctx.faust_app, ctx.topics

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
        send_index, send_dlq = topic_sender(topics.device_index), topic_sender(topics.deadletter)
        async for value in stream:
            with ctx.activity.working("identity-links"):
                await handle_link(value, send_index, send_dlq)

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
                for event in events:
                    view = table.at(event)
                    await handle_index_update(
                        event.key, event.value, view, send_event, send_dlq, ctx.settings, send_index
                    )
                await ctx.outputs.send_all(sends.records)
                table.flush()
