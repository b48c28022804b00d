"""The audiences agent: `audiences.changes` (by member) → `audience-members` table → `kochava.outbox`.

Membership changes (Engage webhook) and device facts (processing agent) of one member share its key, so
the table lookup is local to the partition. Every Kochava request is acked by Kafka before the member's
new state is written (a crash in between re-sends, never loses: at-least-once).

The agent takes micro-batches, like the processing and device-index agents: a batch's Kochava requests and
dead letters go out in one `send_all` (packed per partition, acks awaited once) and only then are its
members' states written (`HeldWrites`). One produce and one ack wait per record used to cap the agent at
the broker's round trip and cost the broker a produce request per Kochava request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

import orjson
from pydantic import Field, TypeAdapter

from app.audiences.metrics import AudienceMetrics
from app.audiences.own import OwnAudience, load_own_audiences
from app.audiences.records import DeviceFacts, MembershipChange, MemberState
from app.audiences.rules import EventNames, Outcome, apply_change, apply_device, erase_member
from app.dlq.writer import dead_letter_record
from app.privacy.metrics import PrivacyMetrics
from app.privacy.records import PrivacyErase
from app.records import DeadLetter, JSONDict, decode_object, dumps, unpack, validate_or_dead_letter
from app.runtime.batching import BATCH_MAX, BATCH_WITHIN, HeldSends, HeldWrites, acked_batches
from app.runtime.context import WorkerContext
from app.sections import AudienceSettings
from app.topics import DEADLETTER, KOCHAVA_OUTBOX

log = logging.getLogger(__name__)

Send = Callable[[bytes, bytes], Awaitable[None]]
TABLE = "audience-members"


class MemberTable(Protocol):
    """What the handlers need of the members table (a dict in tests, `HeldWrites` in the agent)."""

    def get(self, key: bytes, default: Any = None) -> Any: ...
    def __setitem__(self, key: bytes, value: bytes) -> None: ...
    def pop(self, key: bytes, default: Any = None) -> Any: ...


#: One `audiences.changes` value: a membership change or a device's facts, told apart by `kind`.
AUDIENCE_RECORD: TypeAdapter[MembershipChange | DeviceFacts] = TypeAdapter(
    Annotated[MembershipChange | DeviceFacts, Field(discriminator="kind")]
)


def _count(outcome: Outcome, metrics: AudienceMetrics) -> None:
    for applied in outcome.applied:
        metrics.changes.labels(
            applied.audience_key, applied.source, "entered" if applied.entered else "exited"
        ).inc()
    for reason in outcome.ignored:
        metrics.ignored.labels(reason).inc()
    for audience_key, reason in outcome.skipped:
        metrics.skipped.labels(audience_key, reason).inc()
    if outcome.identity_links:
        metrics.identity_links.inc(outcome.identity_links)


async def handle_record(
    key: bytes | None,
    value: bytes | JSONDict | DeadLetter | None,
    table: MemberTable,
    *,
    own: list[OwnAudience],
    names: EventNames,
    send_outbox: Send,
    send_deadletter: Send,
    metrics: AudienceMetrics,
) -> int:
    """Apply one record to its member's state; returns the Kochava requests queued. `value` is a
    record's bytes or one item `unpack` decoded from a `Batched` record; a privacy erase command
    (`kind: privacy_erase`, from its own topic) erases the member instead."""
    data: JSONDict | DeadLetter
    if isinstance(value, DeadLetter | dict):
        data = value
    else:
        data = decode_object(value, stage="audiences", reason="invalid_audience_record")
    record: MembershipChange | DeviceFacts | DeadLetter
    if isinstance(data, DeadLetter):
        record = data
    elif data.get("kind") == "privacy_erase":
        erase = validate_or_dead_letter(
            data, PrivacyErase, stage="audiences", reason="invalid_privacy_command"
        )
        if isinstance(erase, PrivacyErase):
            return await erase_record(erase, table, names=names, send_outbox=send_outbox, metrics=metrics)
        record = erase
    else:
        record = validate_or_dead_letter(
            data, AUDIENCE_RECORD, stage="audiences", reason="invalid_audience_record"
        )
    if isinstance(record, DeadLetter):
        metrics.ignored.labels("invalid_record").inc()
        await send_deadletter(*dead_letter_record(record, metrics.dead_letters))
        return 0
    table_key = record.member.encode()
    stored = table.get(table_key)
    state = MemberState.model_validate(orjson.loads(stored)) if stored else None
    if isinstance(record, MembershipChange):
        outcome = apply_change(state, record, names)
    else:
        outcome = apply_device(state, record, own, names)
    # One record's requests go to distinct devices (plus one IdentityLink): produced together, all acked
    # before the state is written.
    await asyncio.gather(
        *(send_outbox((r.device_key or r.request_id).encode(), dumps(r)) for r in outcome.requests)
    )
    _count(outcome, metrics)
    new = dumps(outcome.state)
    if stored != new:
        table[table_key] = new  # assigned, never mutated in place: writes the changelog
    return len(outcome.requests)


async def erase_record(
    command: PrivacyErase,
    table: MemberTable,
    *,
    names: EventNames,
    send_outbox: Send,
    metrics: AudienceMetrics,
) -> int:
    """A privacy command for one member: on `erase`, send the `Audience Exited` each membership implies
    (acked first), then delete the member's state (a tombstone on the changelog). Other actions keep it."""
    PrivacyMetrics.on(metrics.registry).commands.labels(agent="audiences", action=command.action).inc()
    if command.action != "erase":
        return 0
    table_key = command.key.encode()
    stored = table.get(table_key)
    if stored is None:
        return 0
    outcome = erase_member(MemberState.model_validate(orjson.loads(stored)), command.at, names)
    await asyncio.gather(
        *(send_outbox((r.device_key or r.request_id).encode(), dumps(r)) for r in outcome.requests)
    )
    _count(outcome, metrics)
    table.pop(table_key, None)
    return len(outcome.requests)


def register(ctx: WorkerContext[AudienceSettings]) -> None:
    """Declare the `audience-members` table and the audiences agent on the worker."""
    settings = ctx.settings
    own = load_own_audiences(settings.kseg_audiences_file)
    names = EventNames(settings.kseg_audience_entered_event, settings.kseg_audience_exited_event)
    metrics = AudienceMetrics.on(ctx.registry)
    table = ctx.faust_app.Table(
        TABLE,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.kseg_topic_partitions,
        help="Audience membership and devices per member (user, email hash or device).",
    )
    outbox, deadletter = settings.topic(KOCHAVA_OUTBOX), settings.topic(DEADLETTER)

    @ctx.faust_app.agent(ctx.topics.audience_changes, name="audiences")
    async def audiences_agent(stream: Any) -> None:
        """Micro-batches in partition order: a batch's requests are acked before its members' states
        are written (`HeldWrites`), so a crash re-sends, never loses."""
        async for events in acked_batches(stream, BATCH_MAX, BATCH_WITHIN):
            with ctx.activity.working("audiences"):
                sends, view = HeldSends(), HeldWrites(table, stream)
                send_outbox, send_dlq = sends.sender(outbox), sends.sender(deadletter)
                for event in events:
                    view.at(event)
                    items = unpack(
                        event.key, event.value, stage="audiences", reason="invalid_audience_record"
                    )
                    for key, item in items:  # one record, or a partition's share of a batch's
                        await handle_record(
                            key,
                            item,
                            view,
                            own=own,
                            names=names,
                            send_outbox=send_outbox,
                            send_deadletter=send_dlq,
                            metrics=metrics,
                        )
                await ctx.outputs.send_all(sends.records)
                view.flush()
