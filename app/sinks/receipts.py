"""Delivery receipts: what each Segment or Kochava request did for the messages it carried.

The senders collect one `DeliveryReceipt` per request (not per message) while they deliver; the sink
agents hand them to `send_receipts` after `deliver()` returns, so they go out with the batch and the
warehouse loader writes them to `kseg_receipts` (`kseg trace`, the console).
"""

from __future__ import annotations

import uuid
from typing import Any

from app.records import DeliveryOutcome, DeliveryReceipt, ReceiptMessage, utc_now_iso
from app.runtime.outputs import SendAll


def new_request_id() -> str:
    """kseg's id of one HTTP request (Segment's answers carry none we could keep)."""
    return uuid.uuid4().hex


def segment_refs(messages: list[dict[str, Any]]) -> list[ReceiptMessage]:
    """What a receipt says about each Segment message: messageId, kseg event id, call type, event name."""
    refs = []
    for m in messages:
        if not isinstance(m, dict):
            refs.append(
                ReceiptMessage.model_construct(
                    message_id="?", event_id=None, call_type=None, event_name=None, device_key=None
                )
            )
            continue
        context = m.get("context")
        kseg = context.get("kseg") if isinstance(context, dict) else None
        refs.append(
            ReceiptMessage.model_construct(
                message_id=str(m.get("messageId")),
                event_id=kseg.get("event_id") if isinstance(kseg, dict) else None,
                call_type=m.get("type"),
                event_name=m.get("event"),
                device_key=None,
            )
        )
    return refs


def receipt(
    destination: str,
    outcome: DeliveryOutcome,
    messages: list[ReceiptMessage],
    *,
    request_id: str | None = None,
    http_status: int | None = None,
    attempts: int = 0,
    first_attempt_at: str | None = None,
    reason: str | None = None,
) -> DeliveryReceipt:
    return DeliveryReceipt.model_construct(
        kind="delivery_receipt",
        destination=destination,
        request_id=request_id,
        outcome=outcome,
        http_status=http_status,
        attempts=attempts,
        first_attempt_at=first_attempt_at,
        final_at=utc_now_iso(),
        reason=reason,
        messages=messages,
    )


async def send_receipts(send_all: SendAll, topic: str, receipts: list[DeliveryReceipt]) -> None:
    """Produce the receipts (one record per request) to the full `topic` name and wait for the acks."""
    if receipts:
        await send_all(_records(topic, receipts))


def _records(topic: str, receipts: list[DeliveryReceipt]) -> list[tuple[str, bytes, bytes]]:
    return [(topic, (r.request_id or r.messages[0].message_id).encode(), r.encode()) for r in receipts]
