"""The warehouse's trace tables: postbacks as received, what processing did, delivery receipts, dead letters.

They let `kseg trace` and the console follow one postback to Segment's answer and the warehouse row
(docs/warehouse.md "Trace tables"). Unlike `kseg_events` they are short-lived (pruned after
KSEG_TRACE_RETENTION_DAYS) and written with PostgreSQL's JSONB, as operational tables rather than BI
facts. Every write is an insert-ignore on the table's key, so a redelivered Kafka batch changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.dlq.redact import redact, scrub_value
from app.ids import clean_id
from app.records import DeadLetter, DeliveryReceipt, ProcessingReceipt, RawPostback, device_key_of

POSTBACKS = "kseg_postbacks"
PROCESSING = "kseg_processing"
RECEIPTS = "kseg_receipts"
DEAD_LETTERS = "kseg_dead_letters"

#: Device id columns of `kseg_postbacks` and `kseg_dead_letters`, with the postback parameters they come from.
DEVICE_COLUMNS: dict[str, tuple[str, ...]] = {
    "kochava_device_id": ("kochava_device_id",),
    "idfa": ("idfa",),
    "idfv": ("idfv",),
    "adid": ("adid", "gaid"),
    "android_id": ("android_id",),
}

DDL = (
    f"""CREATE TABLE IF NOT EXISTS {POSTBACKS} (
  event_id TEXT PRIMARY KEY,
  received_at TIMESTAMPTZ NOT NULL,
  kind TEXT,
  source TEXT,
  profile TEXT,
  token_name TEXT,
  device_key TEXT,
  kochava_device_id TEXT,
  idfa TEXT,
  idfv TEXT,
  adid TEXT,
  android_id TEXT,
  user_id TEXT,
  params JSONB,
  kafka_partition INT,
  kafka_offset BIGINT
)""",
    f"""CREATE TABLE IF NOT EXISTS {PROCESSING} (
  event_id TEXT NOT NULL,
  device_key TEXT,
  outcome TEXT NOT NULL,
  profile TEXT,
  profile_version TEXT,
  reason TEXT,
  at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (event_id, outcome, at)
)""",
    f"""CREATE TABLE IF NOT EXISTS {RECEIPTS} (
  message_id TEXT NOT NULL,
  event_id TEXT,
  destination TEXT NOT NULL,
  call_type TEXT,
  event_name TEXT,
  outcome TEXT NOT NULL,
  http_status INT,
  attempts INT,
  first_attempt_at TIMESTAMPTZ,
  final_at TIMESTAMPTZ NOT NULL,
  request_id TEXT,
  device_key TEXT,
  reason TEXT,
  PRIMARY KEY (destination, message_id, final_at)
)""",
    f"""CREATE TABLE IF NOT EXISTS {DEAD_LETTERS} (
  id TEXT PRIMARY KEY,
  event_id TEXT,
  stage TEXT NOT NULL,
  reason TEXT NOT NULL,
  error TEXT,
  at TIMESTAMPTZ NOT NULL,
  payload JSONB,
  kochava_device_id TEXT,
  user_id TEXT,
  replayed BOOLEAN NOT NULL DEFAULT FALSE,
  kafka_partition INT,
  kafka_offset BIGINT
)""",
    *(f"CREATE INDEX IF NOT EXISTS {POSTBACKS}_{c} ON {POSTBACKS} ({c})" for c in DEVICE_COLUMNS),
    f"CREATE INDEX IF NOT EXISTS {POSTBACKS}_device_key ON {POSTBACKS} (device_key)",
    f"CREATE INDEX IF NOT EXISTS {POSTBACKS}_user_id ON {POSTBACKS} (user_id)",
    f"CREATE INDEX IF NOT EXISTS {POSTBACKS}_received_at ON {POSTBACKS} (received_at)",
    f"CREATE INDEX IF NOT EXISTS {PROCESSING}_at ON {PROCESSING} (at)",
    f"CREATE INDEX IF NOT EXISTS {RECEIPTS}_event_id ON {RECEIPTS} (event_id)",
    f"CREATE INDEX IF NOT EXISTS {RECEIPTS}_message_id ON {RECEIPTS} (message_id)",
    f"CREATE INDEX IF NOT EXISTS {RECEIPTS}_device_key ON {RECEIPTS} (device_key)",
    f"CREATE INDEX IF NOT EXISTS {RECEIPTS}_final_at ON {RECEIPTS} (final_at)",
    f"CREATE INDEX IF NOT EXISTS {DEAD_LETTERS}_event_id ON {DEAD_LETTERS} (event_id)",
    f"CREATE INDEX IF NOT EXISTS {DEAD_LETTERS}_at ON {DEAD_LETTERS} (at)",
    f"CREATE INDEX IF NOT EXISTS {DEAD_LETTERS}_kochava_device_id ON {DEAD_LETTERS} (kochava_device_id)",
    "CREATE INDEX IF NOT EXISTS kseg_events_user_id ON kseg_events (user_id)",
    "CREATE INDEX IF NOT EXISTS kseg_events_kochava_device_id ON kseg_events (kochava_device_id)",
)

#: Which time column each table is pruned by.
RETENTION = {POSTBACKS: "received_at", PROCESSING: "at", RECEIPTS: "final_at", DEAD_LETTERS: "at"}


@dataclass
class TraceRows:
    """One polled batch's trace rows, as tuples in each table's INSERT column order."""

    postbacks: list[tuple[Any, ...]] = field(default_factory=list)
    processing: list[tuple[Any, ...]] = field(default_factory=list)
    receipts: list[tuple[Any, ...]] = field(default_factory=list)
    dead_letters: list[tuple[Any, ...]] = field(default_factory=list)
    #: Event ids put back by `kseg dlq replay`: their dead letters are marked replayed.
    replayed: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.postbacks) + len(self.processing) + len(self.receipts) + len(self.dead_letters)

    def one_by_one(self) -> list[TraceRows]:
        """Each row on its own (to isolate a row the database rejects)."""
        out = [TraceRows(postbacks=[r]) for r in self.postbacks]
        out += [TraceRows(processing=[r]) for r in self.processing]
        out += [TraceRows(receipts=[r]) for r in self.receipts]
        out += [TraceRows(dead_letters=[r]) for r in self.dead_letters]
        if self.replayed:
            out.append(TraceRows(replayed=self.replayed))
        return out

    def first(self) -> tuple[Any, ...]:
        """The first row (of a one-row batch)."""
        return (self.postbacks or self.processing or self.receipts or self.dead_letters or [()])[0]


POSTBACK_COLUMNS = (
    "event_id",
    "received_at",
    "kind",
    "source",
    "profile",
    "token_name",
    "device_key",
    *DEVICE_COLUMNS,
    "user_id",
    "params",
    "kafka_partition",
    "kafka_offset",
)
PROCESSING_COLUMNS = ("event_id", "device_key", "outcome", "profile", "profile_version", "reason", "at")
RECEIPT_COLUMNS = (
    "message_id",
    "event_id",
    "destination",
    "call_type",
    "event_name",
    "outcome",
    "http_status",
    "attempts",
    "first_attempt_at",
    "final_at",
    "request_id",
    "device_key",
    "reason",
)
DEAD_LETTER_COLUMNS = (
    "id",
    "event_id",
    "stage",
    "reason",
    "error",
    "at",
    "payload",
    "kochava_device_id",
    "user_id",
    "replayed",
    "kafka_partition",
    "kafka_offset",
)
KEYS = {
    POSTBACKS: "(event_id)",
    PROCESSING: "(event_id, outcome, at)",
    RECEIPTS: "(destination, message_id, final_at)",
    DEAD_LETTERS: "(id)",
}


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def postback_row(raw: RawPostback, partition: int, offset: int) -> tuple[Any, ...]:
    """A `kseg_postbacks` row: the parameters as received, emails and phones hashed (the token never
    reaches Kafka: the receiver drops it and stamps the token's name)."""
    params = raw.params
    ids = [_first_id(params, names) for names in DEVICE_COLUMNS.values()]
    user = params.get("user_id")
    return (
        raw.event_id,
        raw.received_at,
        raw.kind,
        raw.source,
        raw.profile,
        raw.token_name,
        device_key_of(params),
        *ids,
        str(user) if user not in (None, "") else None,
        _json(scrub_value(params)),
        partition,
        offset,
    )


def _first_id(params: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = params.get(name)
        cleaned = clean_id(value) if isinstance(value, str | int) else None
        if cleaned:
            return cleaned
    return None


def processing_rows(receipt: ProcessingReceipt) -> list[tuple[Any, ...]]:
    return [
        (e.event_id, e.device_key, e.outcome, e.profile, e.profile_version, e.reason, receipt.at)
        for e in receipt.events
    ]


def receipt_rows(receipt: DeliveryReceipt) -> list[tuple[Any, ...]]:
    """One `kseg_receipts` row per message of the request."""
    r = receipt
    return [
        (
            m.message_id,
            m.event_id,
            r.destination,
            m.call_type,
            m.event_name,
            r.outcome,
            r.http_status,
            r.attempts,
            r.first_attempt_at,
            r.final_at,
            r.request_id,
            m.device_key,
            r.reason,
        )
        for m in r.messages
    ]


def dead_letter_row(letter: DeadLetter, value: bytes, partition: int, offset: int) -> tuple[Any, ...]:
    """A `kseg_dead_letters` row, keyed by a hash of the record (the same letter read twice is one row);
    no raw email or phone survives (writers already redact; this covers letters from older writers)."""
    letter = redact(letter)
    payload = letter.payload
    nested = payload.get("params")
    params: dict[str, Any] = nested if isinstance(nested, dict) else payload
    device = _first_id(params, DEVICE_COLUMNS["kochava_device_id"]) or _nested_device(payload)
    user = params.get("user_id") or payload.get("userId")
    return (
        hashlib.sha256(value).hexdigest()[:32],
        letter.event_id,
        letter.stage,
        letter.reason,
        letter.error,
        letter.last_seen,
        _json(payload),
        device,
        str(user) if user not in (None, "") else None,
        False,
        partition,
        offset,
    )


def _nested_device(payload: dict[str, Any]) -> str | None:
    """The Kochava device id in a dead-lettered Segment message (`context.kseg.kochava_device_id`)."""
    context = payload.get("context")
    kseg = context.get("kseg") if isinstance(context, dict) else None
    found = kseg.get("kochava_device_id") if isinstance(kseg, dict) else None
    return str(found) if found else None


async def ensure_trace_schema(conn: Any) -> None:
    """Create the trace tables and their indexes (called inside the loader's schema transaction)."""
    for statement in DDL:
        await conn.execute(statement)


def _insert(table: str, columns: tuple[str, ...]) -> str:
    marks = ", ".join(["%s"] * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) ON CONFLICT {KEYS[table]} DO NOTHING"


async def write_trace(conn: Any, rows: TraceRows) -> int:
    """Insert-ignore every row (call inside the batch's transaction); returns the rows inserted."""
    inserted = 0
    async with conn.cursor() as cur:
        for table, columns, batch in (
            (POSTBACKS, POSTBACK_COLUMNS, rows.postbacks),
            (PROCESSING, PROCESSING_COLUMNS, rows.processing),
            (RECEIPTS, RECEIPT_COLUMNS, rows.receipts),
            (DEAD_LETTERS, DEAD_LETTER_COLUMNS, rows.dead_letters),
        ):
            if batch:
                await cur.executemany(_insert(table, columns), batch)
                inserted += max(cur.rowcount, 0)
        if rows.replayed:
            await cur.execute(
                f"UPDATE {DEAD_LETTERS} SET replayed = TRUE WHERE event_id = ANY(%s) AND NOT replayed",
                (rows.replayed,),
            )
    return inserted


async def prune(conn: Any, days: int) -> int:
    """Delete trace rows older than `days`; returns how many went."""
    removed = 0
    async with conn.transaction():
        for table, column in RETENTION.items():
            cur = await conn.execute(
                f"DELETE FROM {table} WHERE {column} < now() - make_interval(days => %s)", (days,)
            )
            removed += max(cur.rowcount, 0)
    return removed
