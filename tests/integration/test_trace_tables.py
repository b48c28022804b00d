"""The trace tables on a real PostgreSQL: idempotent writes, hashing, retention, and the timeline query."""

from __future__ import annotations

import psycopg

from app.records import (
    DeadLetter,
    DeliveryReceipt,
    ProcessedEvent,
    ProcessingReceipt,
    RawPostback,
    ReceiptMessage,
)
from app.trace.timeline import timeline
from app.warehouse.db import connect_async
from app.warehouse.embedded import EmbeddedWarehouse
from app.warehouse.store import ensure_schema, write_batch
from app.warehouse.trace_tables import (
    TraceRows,
    dead_letter_row,
    postback_row,
    processing_rows,
    prune,
    receipt_rows,
    write_trace,
)
from tests.warehouse_support import row, sql, warehouse_pg

__all__ = ["warehouse_pg"]

KDID = "KOTRACE1"
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"

LETTER = DeadLetter(
    stage="mapping",
    reason="unknown_event",
    error="no rule",
    event_id="e-odd",
    payload={"kochava_device_id": KDID, "email": "Jo@Example.com", "phone": "+1 555"},
)


def _postback(eid: str, name: str, at: str, **params: object) -> RawPostback:
    return RawPostback(
        event_id=eid,
        received_at=at,
        profile="default",
        token_name="token-2",
        params={"kochava_device_id": KDID, "idfa": IDFA, "event_name": name, **params},
    )


def _rows_for_device() -> TraceRows:
    rows = TraceRows()
    rows.postbacks += [
        postback_row(_postback("e-install", "_install", "2026-01-01T10:00:00.000Z"), 0, 10),
        postback_row(
            _postback(
                "e-buy", "Purchase", "2026-01-01T10:05:00.000Z", email="Jo@Example.com", phone="+1 555"
            ),
            0,
            11,
        ),
    ]
    rows.processing += processing_rows(
        ProcessingReceipt(
            at="2026-01-01T10:05:01.000Z",
            events=[
                ProcessedEvent(
                    event_id="e-install",
                    device_key=KDID,
                    outcome="mapped",
                    profile="default",
                    profile_version="3",
                ),
                ProcessedEvent(
                    event_id="e-buy",
                    device_key=KDID,
                    outcome="mapped",
                    profile="default",
                    profile_version="3",
                ),
            ],
        )
    )
    messages = [
        ReceiptMessage(message_id="m-buy", event_id="e-buy", call_type="track", event_name="Order Completed")
    ]
    rows.receipts += receipt_rows(
        DeliveryReceipt(
            destination="segment",
            request_id="r1",
            outcome="retried",
            http_status=503,
            attempts=1,
            first_attempt_at="2026-01-01T10:05:02.000Z",
            final_at="2026-01-01T10:05:02.000Z",
            messages=messages,
        )
    )
    rows.receipts += receipt_rows(
        DeliveryReceipt(
            destination="segment",
            request_id="r2",
            outcome="delivered",
            http_status=200,
            attempts=2,
            first_attempt_at="2026-01-01T10:05:02.000Z",
            final_at="2026-01-01T10:05:04.000Z",
            messages=messages,
        )
    )
    rows.receipts += receipt_rows(
        DeliveryReceipt(
            destination="kochava",
            request_id="k1",
            outcome="delivered",
            http_status=200,
            attempts=1,
            first_attempt_at="2026-01-01T10:05:05.000Z",
            final_at="2026-01-01T10:05:05.000Z",
            messages=[
                ReceiptMessage(
                    message_id="k1", call_type="track", event_name="Audience Entered", device_key=KDID
                )
            ],
        )
    )
    rows.dead_letters.append(dead_letter_row(LETTER, LETTER.encode(), 0, 12))  # the same Kafka record
    return rows


async def test_trace_tables_idempotent_hashed_pruned_and_timeline(warehouse_pg: EmbeddedWarehouse) -> None:
    url = warehouse_pg.url
    conn = await connect_async(url)
    known = await ensure_schema(conn, "USD")
    await ensure_schema(conn, "USD")  # a second loader start changes nothing
    warehouse = row(
        event_id="e-buy",
        event_type="purchase",
        event_name="Purchase",
        segment_event="Order Completed",
        kochava_device_id=KDID,
        idfa=IDFA,
        user_id="user-7",
        received_at="2026-01-01T10:05:00.000Z",
    )
    await write_batch(conn, known, [warehouse], [])
    rows = _rows_for_device()
    async with conn.transaction():
        first = await write_trace(conn, rows)
    async with conn.transaction():
        again = await write_trace(conn, _rows_for_device())  # a redelivered batch
    assert first == 8 and again == 0  # 2 postbacks, 2 outcomes, 3 receipts, 1 letter

    # Hashes, never raw emails or phones; the token's name, never a token.
    stored = sql(url, "SELECT params::text, token_name FROM kseg_postbacks WHERE event_id = 'e-buy'")[0]
    assert "Jo@Example.com" not in stored[0] and "+1 555" not in stored[0] and "sha256:" in stored[0]
    assert stored[1] == "token-2"
    payload = sql(url, "SELECT payload::text, kochava_device_id FROM kseg_dead_letters")[0]
    assert "Jo@Example.com" not in payload[0] and "+1 555" not in payload[0] and payload[1] == KDID

    with psycopg.connect(url) as sync:
        for ident, matched in (
            (KDID, "kochava_device_id"),
            (IDFA.lower(), "idfa"),
            ("user-7", "user_id"),
            ("e-buy", "event_id"),
            ("m-buy", "message_id"),
        ):
            found = timeline(sync, ident)
            assert found["matched_as"] == matched, ident
            assert [e["event_id"] for e in found["events"]] == ["e-install", "e-buy", "e-odd"], ident
            buy = found["events"][1]
            assert (buy["outcome"], buy["profile"], buy["profile_version"]) == ("mapped", "default", "3")
            assert [(c["outcome"], c["http_status"], c["attempts"]) for c in buy["segment_calls"]] == [
                ("retried", 503, 1),
                ("delivered", 200, 2),
            ]
            assert buy["warehouse_row"]["segment_event"] == "Order Completed"
            assert [s["event"] for s in buy["kochava_sends"]] == ["Audience Entered"]
            assert found["events"][2]["outcome"] == "dead_lettered"
            assert found["events"][2]["reason"] == "unknown_event"
            assert found["identity"]["user_id"] == "user-7"
        assert timeline(sync, "nobody")["matched_as"] is None

    # Retention: rows older than the window go (these are from 2026-01-01).
    removed = await prune(conn, 7)
    assert removed == 7  # all but the dead letter, written now
    await conn.close()
    assert sql(url, "SELECT count(*) FROM kseg_receipts") == [(0,)]
