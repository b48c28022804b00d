"""The warehouse's pure parts: record triage, column typing, report rendering."""

from __future__ import annotations

import asyncio
from datetime import date
from decimal import Decimal
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from app.config import Settings
from app.metrics import sample
from app.warehouse.html import render_html
from app.warehouse.loader import Loader, _redact, parse_records
from app.warehouse.report import Report, _ratios, render_csv, render_table
from app.warehouse.sql import column_type
from app.warehouse.store import new_columns, usable_name
from tests.warehouse_support import row

TOPIC = "kseg.warehouse.events"
SPEND = "kseg.campaign.spend"


def record(topic: str, value: bytes, offset: int = 0) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(topic, 0, offset, 0, 0, b"k", value, None, 1, len(value), [])


def test_triage_sorts_rows_spend_and_dead_letters() -> None:
    good = row(event_id="e1", event_type="install", event_time="2025-01-01T00:00:00.000Z")
    ahead = {**good, "event_id": "e2", "brand_new_trait": 1}  # a producer ahead of the schema
    bad = {**good, "event_id": "e3", "event_type": "teleport"}
    spend = {
        "date": "2025-01-01",
        "network": "N",
        "campaign": "C",
        "clicks": 1,
        "impressions": 1,
        "installs": 1,
        "spend": 1.5,
        "currency": "USD",
        "reporting_currency": "USD",
        "digest_run_id": "r",
        "fetched_at": "2025-01-02T00:00:00Z",
    }
    parsed = parse_records(
        [
            record(TOPIC, orjson.dumps(good)),
            record(TOPIC, orjson.dumps(ahead), 1),
            record(TOPIC, orjson.dumps(bad), 2),
            record(TOPIC, b"{not json", 3),
            record(TOPIC, b"[1, 2]", 4),
            record(SPEND, orjson.dumps(spend)),
            record(SPEND, orjson.dumps({**spend, "spend": -1}), 1),
        ],
        TOPIC,
    )
    assert [r["event_id"] for r in parsed.events] == ["e1", "e2"]
    assert parsed.spend == [spend]
    reasons = [(letter.reason, letter.event_id) for letter in parsed.letters]
    assert reasons == [
        ("schema_violation", "e3"),
        ("undecodable_row", None),
        ("undecodable_row", None),
        ("invalid_spend_row", None),
    ]
    assert all(letter.stage == "warehouse" for letter in parsed.letters)
    assert "event_type" in parsed.letters[0].error and f"{TOPIC}[0]@2" in parsed.letters[0].error
    assert parsed.letters[1].payload == {"raw": "{not json"}


def test_column_types_from_schema_or_sample() -> None:
    assert column_type("event_time", {"type": "string", "format": "date-time"}) == "TIMESTAMP WITH TIME ZONE"
    assert column_type("revenue", {"type": ["number", "null"]}) == "NUMERIC(18,6)"
    assert column_type("purchase_count", {"type": "integer"}) == "BIGINT"
    assert column_type("device_type", {"enum": ["ios", "android", None]}) == "TEXT"
    assert column_type("converted", {"type": "boolean"}) == "BOOLEAN"
    assert column_type("new_flag", None, True) == "BOOLEAN"
    assert column_type("new_count", None, 3) == "BIGINT"
    assert column_type("new_score", None, 0.5) == "NUMERIC(18,6)"
    assert column_type("new_text", None, "x") == "TEXT"
    assert column_type("acquisition_paid", None, "yes") == "BOOLEAN"  # the contract's type wins


def test_unusable_names_go_to_extra_and_null_only_fields_wait() -> None:
    assert usable_name("ok_name") and usable_name("event_id")
    assert not usable_name("Bad Name") and not usable_name("loaded_at") and not usable_name("x" * 64)
    found = new_columns([{"event_id": "e", "later": None, "now": "v"}], {"event_id": "text"})
    assert found == {"now": "TEXT"}


def sample_report() -> Report:
    rows = [
        _ratios(
            {
                "network": "N",
                "campaign": "A <b>",
                "installs": Decimal(3),
                "reinstalls": Decimal(0),
                "reengagements": Decimal(0),
                "purchasers": Decimal(2),
                "orders": Decimal(3),
                "revenue": Decimal("125.005"),
                "revenue_reengagement": Decimal(0),
                "unconverted_orders": Decimal(1),
                "spend": Decimal("50"),
                "network_installs": Decimal(3),  # Kochava's count: CPI = 50 / 3
            }
        ),
        _ratios(
            {
                "network": "M",
                "campaign": "B",
                "installs": Decimal(1),
                "reinstalls": Decimal(0),
                "reengagements": Decimal(0),
                "purchasers": Decimal(0),
                "orders": Decimal(0),
                "revenue": Decimal(0),
                "revenue_reengagement": Decimal(0),
                "unconverted_orders": Decimal(0),
                "spend": None,
                "network_installs": None,
            }
        ),
    ]
    totals = _ratios(
        {
            "network": "TOTAL",
            "campaign": "",
            "installs": 4,
            "reinstalls": 0,
            "reengagements": 0,
            "purchasers": 2,
            "orders": 3,
            "revenue": Decimal("125.005"),
            "revenue_reengagement": 0,
            "unconverted_orders": 1,
            "spend": Decimal("50"),
            "network_installs": Decimal(3),
        }
    )
    return Report(date.min, date.max, "campaign", "USD", rows, totals)


def test_table_csv_json_and_html() -> None:
    report = sample_report()
    table = render_table(report)
    assert "all days" in table and "125.01" in table and "2.50x" in table and "16.67" in table
    assert "1 order(s) had no rate into USD" in table
    b_line = next(line for line in table.splitlines() if line.startswith("M "))
    assert b_line.rstrip().endswith("-")  # no spend: no ROAS
    csv_text = render_csv(report).splitlines()
    assert csv_text[0].startswith("network,campaign,installs") and csv_text[-1].startswith("TOTAL,")
    data = report.as_json()
    assert data["from"] is None and data["rows"][0]["roas"] == 2.5001 and data["rows"][1]["roas"] is None
    page = render_html(report)
    assert "A &lt;b&gt;" in page and "<b>" not in page.split("<script")[0]


def test_passwords_stay_out_of_logs() -> None:
    assert _redact("postgresql://kseg:s3cret@db:5432/w") == "postgresql://kseg:***@db:5432/w"
    assert _redact("postgresql://postgres:@/postgres?host=/x") == "postgresql://postgres:@/postgres?host=/x"


class _Producer:
    """Stands in for the loader's Kafka producer: keeps what was sent, acked at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, *, key: bytes, value: bytes) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_the_loaders_dead_letters_reach_the_shared_dead_letter_count() -> None:
    """`KsegDeadLetters` reads `kseg_dead_letters_total`: the loader's /metrics must count its own."""
    loader = Loader(Settings(_env_file=None), "postgresql://127.0.0.1:1/none")  # type: ignore[call-arg]
    producer = _Producer()
    loader.producer = producer  # type: ignore[assignment]
    parsed = parse_records([record(TOPIC, b"{not json", offset=3)], TOPIC)
    await loader.send_letters(parsed.letters)
    assert len(producer.sent) == 1
    reason = parsed.letters[0].reason
    assert sample("kseg_dead_letters_total", loader.registry, stage="warehouse", reason=reason) == 1
    assert sample("kseg_warehouse_dead_letters_total", loader.registry, reason=reason) == 1


def test_trace_topics_become_trace_rows_and_a_bad_receipt_a_dead_letter() -> None:
    from app.records import DeadLetter, DeliveryReceipt, RawPostback, ReceiptMessage

    topics = {
        "t.postbacks.raw": "postbacks.raw",
        "t.delivery.receipts": "delivery.receipts",
        "t.deadletter": "deadletter",
    }
    raw = RawPostback(
        event_id="e1",
        received_at="2026-01-01T00:00:00.000Z",
        source="replay",
        params={
            "kochava_device_id": "KI1",
            "gaid": "38400000-8cf0-11bd-b23e-10b96e40000d",
            "email": "a@b.co",
        },
        token_name="token-1",
    )
    receipt = DeliveryReceipt(
        destination="segment",
        request_id="r1",
        outcome="delivered",
        http_status=200,
        attempts=1,
        final_at="2026-01-01T00:00:01.000Z",
        messages=[
            ReceiptMessage(message_id="m1", event_id="e1"),
            ReceiptMessage(message_id="m2", event_id="e1"),
        ],
    )
    letter = DeadLetter(
        stage="mapping", reason="x", error="y", event_id="e1", payload={"phone": "+15551234567"}
    )
    parsed = parse_records(
        [
            record("t.postbacks.raw", raw.encode(), 5),
            record("t.delivery.receipts", receipt.encode(), 6),
            record("t.delivery.receipts", b'{"kind": "delivery_receipt"}', 7),
            record("t.deadletter", letter.encode(), 8),
            record("t.deadletter", b"not a letter", 9),
        ],
        TOPIC,
        topics,
    )
    [postback] = parsed.trace.postbacks
    assert postback[0] == "e1" and postback[5] == "token-1" and postback[6] == "KI1"
    assert postback[10] == "38400000-8cf0-11bd-b23e-10b96e40000d"  # adid, from the gaid parameter
    assert "a@b.co" not in postback[13] and postback[-2:] == (0, 5)
    assert [r[0] for r in parsed.trace.receipts] == ["m1", "m2"]
    assert parsed.trace.replayed == ["e1"]
    [dead] = parsed.trace.dead_letters
    assert "+15551234567" not in dead[6]
    # The bad receipt is a typed dead letter; the record on the dead-letter topic that is none is skipped.
    assert [x.reason for x in parsed.letters] == ["invalid_delivery_receipt"] and parsed.skipped == 1
