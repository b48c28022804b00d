"""The records that travel between kseg's stages: the contract between receiver, agents and sinks.

Every Kafka value is one of these, serialised with orjson. Keys are plain UTF-8 strings. A `Record` is a
topic's value with its `encode`/`decode`; `decode_or_dead_letter` is the one way a consumer turns bytes
it did not write itself into a record or a typed `DeadLetter`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Generic, Literal, Self, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

JSONDict = dict[str, Any]


def utc_now_iso() -> str:
    """ISO-8601 UTC with milliseconds and a `Z`, the form Segment and the warehouse expect."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)


class Record(BaseModel):
    """A Kafka value: orjson of its JSON-mode dump, so every producer writes the same bytes for it."""

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def decode(cls, value: bytes | str) -> Self:
        """The record in `value`; raises (orjson.JSONDecodeError, ValidationError) when it is not one.
        Consumers of records another process wrote use `decode_or_dead_letter` instead."""
        return cls.model_validate(orjson.loads(value))


# ---------------------------------------------------------------------------------------------
# Receiver → postbacks.raw
# ---------------------------------------------------------------------------------------------

#: Parameters never folded into the event id: they change between deliveries of one postback.
VOLATILE_PARAMS = frozenset({"token"})

#: Device id parameters, in the order used to pick the partition key.
DEVICE_KEY_PARAMS = ("kochava_device_id", "idfa", "idfv", "adid", "gaid", "android_id")


def device_key_of(params: dict[str, Any]) -> str | None:
    """The device key a postback is partitioned and profiled by: the Kochava device id, else the first
    other usable device id as `type:value`; None when there is none."""
    from app.ids import clean_id

    for name in DEVICE_KEY_PARAMS:
        value = params.get(name)
        cleaned = clean_id(value) if isinstance(value, str | int) else None
        if cleaned:
            return cleaned if name == "kochava_device_id" else f"{name}:{cleaned}"
    return None


def postback_event_id(params: dict[str, Any]) -> str:
    """Deterministic id of one postback: the same request retried by Kochava gives the same id.

    Kochava retries replay the identical URL, so a hash of every (non-volatile) parameter is stable
    across retries and different for two distinct events even when they carry no timestamp.
    """
    stable = {k: params[k] for k in sorted(params) if k not in VOLATILE_PARAMS}
    return hashlib.sha256(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


#: Where a postback came from: a GET query string, a JSON or form POST body, or `kseg dlq replay`.
PostbackSource = Literal["get", "post_json", "post_form", "replay"]


class RawPostback(Record):
    """A postback exactly as received, plus what the receiver stamped on it."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["postback"] = "postback"
    event_id: str
    received_at: str
    source: PostbackSource = "get"
    profile: str | None = None
    params: JSONDict
    ip: str | None = None
    user_agent: str | None = None
    #: Which configured postback token authenticated it, by position (`token-1` is the first of
    #: KSEG_POSTBACK_TOKENS): never the token itself, so it can be stored and shown.
    token_name: str | None = None


# ---------------------------------------------------------------------------------------------
# Processing agent / digest → segment.outbox
# ---------------------------------------------------------------------------------------------


class SegmentCalls(Record):
    """All the Segment calls of one event, in order: one outbox record, keyed by the device so one
    device's calls stay in order (topics/schemas/segment-message.schema.json)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["segment_calls"] = "segment_calls"
    messages: list[JSONDict] = Field(min_length=1)


# ---------------------------------------------------------------------------------------------
# Mapping output: one canonical event, independent of Segment and warehouse shapes
# ---------------------------------------------------------------------------------------------

EventKind = Literal["install", "reinstall", "event", "purchase", "conversion"]


class DeviceIds(BaseModel):
    """Device identifiers after junk filtering: a field is None when absent or not a usable id."""

    kochava_device_id: str | None = None
    idfa: str | None = None
    idfv: str | None = None
    adid: str | None = None
    android_id: str | None = None

    def typed(self) -> list[str]:
        """`type:value` strings for every usable id, the keys of the identity index."""
        return [f"{k}:{v}" for k in _DEVICE_ID_FIELDS if (v := getattr(self, k))]


#: `DeviceIds`'s fields, in order.
_DEVICE_ID_FIELDS = tuple(DeviceIds.model_fields)


class Attribution(BaseModel):
    """Where a device came from, in Kochava's hierarchy (campaign > segment > tracker)."""

    network: str | None = None
    campaign: str | None = None
    ad_group: str | None = None
    creative: str | None = None
    site: str | None = None
    sub_site: str | None = None
    tracker: str | None = None
    click_id: str | None = None
    country: str | None = None
    attribution_type: str | None = None
    attributed_at: str | None = None

    def is_empty(self) -> bool:
        return not any(v for k, v in self.model_dump().items() if k != "attributed_at")


class CanonicalEvent(BaseModel):
    """One Kochava event after the mapping profile: every later stage reads this, never raw params."""

    event_id: str
    message_id: str
    kind: EventKind
    reengagement: bool = False
    kochava_event_name: str
    segment_event_name: str
    timestamp: str
    received_at: str
    devices: DeviceIds
    device_type: Literal["ios", "android"] | None = None
    ad_tracking_enabled: bool | None = None
    attribution: Attribution = Field(default_factory=Attribution)
    revenue: float | None = None
    currency: str | None = None
    order_id: str | None = None
    products: list[JSONDict] | None = None
    conversion_name: str | None = None
    original_install_id: str | None = None
    install_id: str | None = None
    properties: JSONDict = Field(default_factory=dict)
    ip: str | None = None
    user_agent: str | None = None
    user_id: str | None = None
    email: str | None = None
    phone: str | None = None
    profile: str
    profile_version: str


# ---------------------------------------------------------------------------------------------
# Identity: what the resolver hands to the output builders
# ---------------------------------------------------------------------------------------------

ResolvedVia = Literal["user_id", "link", "email", "phone", "anonymous"]


class ResolvedIdentity(BaseModel):
    user_id: str | None = None
    anonymous_id: str
    via: ResolvedVia = "anonymous"
    email_hash: str | None = None
    phone_hash: str | None = None
    email: str | None = None  # raw, only when KSEG_ALLOW_RAW_EMAIL_TRAIT is on


# ---------------------------------------------------------------------------------------------
# Device index → processing agent (identity.device-events, read next to postbacks.raw)
# ---------------------------------------------------------------------------------------------


class DeviceLinked(Record):
    """Notice to one device key (on `identity.device-events`): who it belongs to now, or that it is shared."""

    kind: Literal["device_linked"] = "device_linked"
    device_key: str
    user_id: str | None = None
    email_hash: str | None = None
    phone_hash: str | None = None
    via: str
    linked_at: str = Field(default_factory=utc_now_iso)
    #: The ref (link id / event id) of the link that made this person current: breaks ties on `linked_at`.
    link_ref: str | None = None
    shared: bool = False
    # Inheritance: the first touch of the device id's original install, for a new device key seen with
    # that id (a reinstall); `confirmed` when the reinstall's `reprocess_for` names that install.
    first_touch: Attribution | None = None
    install_id: str | None = None
    confirmed: bool = False
    # The answer to a reinstall's observation (sent whether or not there is a first touch to inherit),
    # so the reinstalled device knows when to stop parking its postbacks.
    answers_reinstall: bool = False
    # The app's SDK anonymousId for this device, to adopt (never sent for a shared device id), and when
    # the SDK call that brought it happened (a device that changed hands since refuses it).
    anonymous_id: str | None = None
    anonymous_id_at: str | None = None
    #: The userId that SDK call named, if any: the anonymousId is that person's app's.
    anonymous_user_id: str | None = None


LifecycleStage = Literal["installed", "active", "converted", "reengaged", "reinstalled"]


class LifecycleState(BaseModel):
    """Per-profile lifecycle signals (app.lifecycle): channel, stage, suppression, LTV, and what was sent."""

    acquisition_channel: str | None = None
    acquisition_paid: bool | None = None
    stage: LifecycleStage | None = None
    stage_changed_at: str | None = None
    reengagement_channel: str | None = None
    winback_suppress_until: str | None = None
    ad_suppressed: bool = False
    ad_suppressed_at: str | None = None
    ad_suppression_reason: str | None = None
    #: Revenue in `reporting_currency`; amounts in currencies without a rate stay apart, by currency.
    ltv_revenue: float = 0.0
    reporting_currency: str | None = None
    revenue_without_rate: dict[str, float] = Field(default_factory=dict)
    ltv_tier: str | None = None
    #: The lifecycle traits as last sent to Segment, so an identify goes out only when one changes.
    sent: JSONDict = Field(default_factory=dict)


class Ownership(BaseModel):
    """Who a device belongs to now and since when (app.identity.person): links are ordered by when they
    happened, and a new owner never inherits the anonymousIds an earlier person used on the device."""

    #: (time, ref) of the link that made the current person the owner; an older link never overrides it.
    linked_at: str | None = None
    link_ref: str | None = None
    #: The userId whose history the device's current anonymousId belongs to (None: nobody's yet).
    anonymous_owner: str | None = None
    #: When the device last changed hands: an SDK anonymousId seen before then may be the previous owner's.
    reassigned_at: str | None = None
    #: anonymousIds earlier owners used on this device: never sent again next to another person's userId.
    retired_anonymous_ids: list[str] = Field(default_factory=list)


class AttributionProfile(BaseModel):
    """Per-device state kept in the profiles table: first and last touch, value, conversion."""

    anonymous_id: str | None = None
    user_id: str | None = None
    aliased_user_id: str | None = None
    anonymous_events: int = 0
    first_touch: Attribution | None = None
    last_touch: Attribution | None = None
    install_id: str | None = None
    lifetime_revenue: float = 0.0
    purchase_count: int = 0
    converted: bool = False
    converted_at: str | None = None
    conversion_name: str | None = None
    # Identity state (app.identity): typed ids already announced to the device index, capped per type;
    # persons (user id / email / phone hashes) already linked from postbacks; the sticky shared flag.
    known_ids: list[str] = Field(default_factory=list)
    linked_persons: list[str] = Field(default_factory=list)
    device_shared: bool = False
    email_hash: str | None = None
    phone_hash: str | None = None
    # A reinstall waits for the device index's answers (an inherited first touch) before the device's
    # later postbacks are processed; they are parked here meanwhile, durable with the profile.
    awaiting_index_answers: int = 0
    parked: list[JSONDict] = Field(default_factory=list)
    # Dedupe: ids of this device's postbacks already processed (event id → wall-clock seconds when they
    # were), within KSEG_DEDUPE_TTL_HOURS and at most KSEG_DEDUPE_MAX_PER_DEVICE. Kept with the profile so
    # one changelog write covers both: event ids are per device (the device id is in the hash).
    recent_events: dict[str, float] = Field(default_factory=dict)
    # Lifecycle signals (app.lifecycle) and the app's own Segment profile: the SDK's anonymousId once
    # adopted (docs/identity.md "The app's own profile"); later calls of the device use it.
    lifecycle: LifecycleState = Field(default_factory=LifecycleState)
    sdk_anonymous_id: str | None = None
    # iOS ATT status as last seen on a postback (usable IDFA: authorized; zeroed: not), for Kochava S2S.
    att_authorized: bool | None = None
    # Person vs device state (docs/identity.md): the current owner, link order, earlier owners' anonymousIds.
    ownership: Ownership = Field(default_factory=Ownership)


# ---------------------------------------------------------------------------------------------
# Dead letters
# ---------------------------------------------------------------------------------------------

DeadLetterStage = Literal[
    "receiver", "mapping", "identity", "segment", "warehouse", "audiences", "kochava", "digest"
]


class DeadLetter(Record):
    """One event that could not go on, with everything needed to understand and replay it."""

    kind: Literal["dead_letter"] = "dead_letter"
    stage: DeadLetterStage
    reason: str
    error: str
    event_id: str | None = None
    profile: str | None = None
    profile_version: str | None = None
    http_status: int | None = None
    attempts: int = 1
    first_seen: str = Field(default_factory=utc_now_iso)
    last_seen: str = Field(default_factory=utc_now_iso)
    payload: JSONDict


# ---------------------------------------------------------------------------------------------
# Receipts: what became of each event and each message (the warehouse's trace tables)
# ---------------------------------------------------------------------------------------------

DeliveryOutcome = Literal["delivered", "rejected", "dead_lettered", "retried"]


class ReceiptMessage(BaseModel):
    """One message of a delivery request: what it was (the fields shared by the request are on it)."""

    message_id: str
    event_id: str | None = None
    call_type: str | None = None
    event_name: str | None = None
    #: The device the message is about (the outbox key), when the request does not name an event.
    device_key: str | None = None


class DeliveryReceipt(Record):
    """What one delivery request did for all the messages it carried (on `delivery.receipts`): one record
    per request, not per message, so the hot path pays one small record per POST."""

    kind: Literal["delivery_receipt"] = "delivery_receipt"
    destination: Literal["segment", "kochava"]
    #: kseg's id of the request (None for messages refused before any request was made).
    request_id: str | None = None
    outcome: DeliveryOutcome
    http_status: int | None = None
    attempts: int = 0
    first_attempt_at: str | None = None
    final_at: str
    reason: str | None = None
    messages: list[ReceiptMessage] = Field(min_length=1)


ProcessingOutcome = Literal["mapped", "repeat", "parked", "dead_lettered", "suppressed"]


class ProcessedEvent(BaseModel):
    """What the processing agent did with one postback."""

    event_id: str
    device_key: str | None = None
    outcome: ProcessingOutcome
    profile: str | None = None
    profile_version: str | None = None
    reason: str | None = None


class ProcessingReceipt(Record):
    """What one micro-batch of the processing agent did with each postback (on `processing.receipts`)."""

    kind: Literal["processing_receipt"] = "processing_receipt"
    at: str
    events: list[ProcessedEvent] = Field(min_length=1)


# ---------------------------------------------------------------------------------------------
# Decoding what another process wrote: a record, or a typed dead letter (never an exception)
# ---------------------------------------------------------------------------------------------

M = TypeVar("M")

#: Characters of a value that is not JSON kept in its dead letter (the rest cannot be replayed anyway).
RAW_TEXT_MAX = 10_000
#: Characters of a validation error kept in a dead letter.
ERROR_MAX = 2000


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(model: type[M]) -> TypeAdapter[M]:
    """One `TypeAdapter` per record class, built on first use (building one costs more than a decode)."""
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(model)
    return adapter


def decode_object(
    value: bytes | None, *, stage: DeadLetterStage, reason: str, event_id: str | None = None
) -> JSONDict | DeadLetter:
    """The JSON object in `value`, or a dead letter saying why it is not one."""
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        text = bytes(value or b"").decode("utf-8", "replace")[:RAW_TEXT_MAX]
        return DeadLetter(
            stage=stage, reason=reason, error=f"not JSON: {exc}", event_id=event_id, payload={"raw": text}
        )
    if not isinstance(data, dict):
        return DeadLetter(
            stage=stage, reason=reason, error="not a JSON object", event_id=event_id, payload={"raw": data}
        )
    return data


def validate_or_dead_letter(
    data: JSONDict,
    model: type[M] | TypeAdapter[M],
    *,
    stage: DeadLetterStage,
    reason: str,
    event_id: str | None = None,
) -> M | DeadLetter:
    """`data` as `model` (a record class, or a `TypeAdapter` of a union of them), or a dead letter that
    keeps `data` whole so it can be fixed and replayed."""
    adapter = model if isinstance(model, TypeAdapter) else _adapter(model)
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        return DeadLetter(
            stage=stage, reason=reason, error=str(exc)[:ERROR_MAX], event_id=event_id, payload=data
        )


def decode_or_dead_letter(
    value: bytes | None,
    model: type[M] | TypeAdapter[M],
    *,
    stage: DeadLetterStage,
    reason: str,
    event_id: str | None = None,
) -> M | DeadLetter:
    """The record of type `model` in the Kafka value `value`, or a typed dead letter (stage, reason, the
    error, and the value as a JSON object or `{"raw": ...}`): bad input inside never raises."""
    data = decode_object(value, stage=stage, reason=reason, event_id=event_id)
    if isinstance(data, DeadLetter):
        return data
    return validate_or_dead_letter(data, model, stage=stage, reason=reason, event_id=event_id)


def decode_outbox_record(value: bytes | None) -> SegmentCalls | DeadLetter:
    """One `segment.outbox` value: the calls of one event, or one call on its own (a replayed Segment
    dead letter, which `kseg dlq replay` writes as the bare message), else a dead letter."""
    data = decode_object(value, stage="segment", reason="undecodable_message")
    if isinstance(data, DeadLetter):
        return data
    return outbox_calls(data)


def outbox_calls(data: JSONDict) -> SegmentCalls | DeadLetter:
    """One decoded `segment.outbox` item (see `decode_outbox_record`).

    Checked, not re-validated: what `SegmentCalls` accepts is checked here without pydantic copying every
    call, since the Segment sender validates each call itself before sending (decode and validate once);
    anything else goes through the model for its precise dead letter."""
    if data.get("kind") != "segment_calls":
        return SegmentCalls.model_construct(messages=[data])  # a bare call (a replayed dead letter)
    messages = data.get("messages")
    if (
        len(data) == 2
        and isinstance(messages, list)
        and messages
        and all(isinstance(message, dict) for message in messages)
    ):
        return SegmentCalls.model_construct(messages=messages)
    return validate_or_dead_letter(data, SegmentCalls, stage="segment", reason="undecodable_message")


# ---------------------------------------------------------------------------------------------
# Internal topics only kseg reads: one partition's share of a micro-batch in one record
# ---------------------------------------------------------------------------------------------

T = TypeVar("T")


class BatchedItem(BaseModel, Generic[T]):
    """One record of a `Batched` record: the key it would have had on its own, and its value."""

    model_config = ConfigDict(extra="forbid")

    key: str | None
    value: T


class Batched(Record, Generic[T]):
    """Several records of one topic partition, in order, as one Kafka record (docs/topics.md).

    The worker's output producer packs what one micro-batch sends to one partition of an internal topic
    (`app.topics.PACKED`) into one of these, keyed by its first item's key (so placed where each item
    would be); readers take either shape, item by item (`unpack`). Never on topics other teams read."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["batch"] = "batch"
    records: list[BatchedItem[T]] = Field(min_length=1)


#: Largest packed value, bytes: an item past it starts the next record (brokers refuse values > 1 MB).
PACK_MAX_BYTES = 256 * 1024

_BATCH_HEAD = b'{"kind":"batch","records":['


def pack_values(items: list[tuple[bytes | None, bytes]]) -> list[tuple[bytes | None, bytes]]:
    """`(key, value)`s of one partition, in order, as as few `Batched` values as `PACK_MAX_BYTES` allows
    (each keyed by its first item's key); a lone item stays the record it was. The values are spliced in
    as they are (each already the JSON object of a record), never decoded again."""
    out: list[tuple[bytes | None, bytes]] = []
    group: list[tuple[bytes | None, bytes]] = []
    size = 0

    def close() -> None:
        if len(group) == 1:
            out.append(group[0])
        elif group:
            parts = [
                b'{"key":'
                + (orjson.dumps(key.decode()) if key is not None else b"null")
                + b',"value":'
                + value
                + b"}"
                for key, value in group
            ]
            out.append((group[0][0], _BATCH_HEAD + b",".join(parts) + b"]}"))
        group.clear()

    for key, value in items:
        if group and size + len(value) > PACK_MAX_BYTES:
            close()
            size = 0
        group.append((key, value))
        size += len(value) + 32
    close()
    return out


def pack_records(
    records: Iterable[tuple[str, bytes | None, bytes]],
    partition: Callable[[str, bytes], int | None],
) -> list[tuple[str, bytes | None, bytes]]:
    """`(topic, key, value)`s with each packable topic partition's records packed (`pack_values`).

    `partition(topic, key)` is the partition the producer will pick, or None for a record that stays as
    it is (a topic others read, no key, a key that is not UTF-8). A packed record takes the place of its
    partition's first record; order within every partition is kept."""
    # Insertion-ordered slots: (topic, partition) for packed ones, (topic, -n) for a record left alone.
    slots: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = {}
    for n, (topic, key, value) in enumerate(records):
        where = partition(topic, key) if key is not None and _utf8(key) else None
        slots.setdefault((topic, -n - 1 if where is None else where), []).append((key, value))
    return [
        (topic, key, value)
        for (topic, where), items in slots.items()
        for key, value in (pack_values(items) if where >= 0 else items)
    ]


def _utf8(key: bytes) -> bool:
    try:
        key.decode()
    except UnicodeDecodeError:
        return False
    return True


def unpack(
    key: bytes | None, value: bytes | None, *, stage: DeadLetterStage, reason: str
) -> list[tuple[bytes | None, JSONDict | DeadLetter]]:
    """The items of one internal-topic record, decoded once: a `Batched` record's items with their own
    keys, or the record itself (the shape before packing; `kseg dlq replay` writes that shape). A value
    that is not JSON, or a malformed batch, is one dead letter; a bad item is left for the reader's
    validation (its dead letter then holds just that item, replayable on its own)."""
    data = decode_object(value, stage=stage, reason=reason)
    if isinstance(data, DeadLetter) or data.get("kind") != "batch":
        return [(key, data)]
    items = data.get("records")
    if (
        not isinstance(items, list)
        or not items
        or set(data) != {"kind", "records"}
        or not all(
            isinstance(item, dict)
            and set(item) == {"key", "value"}
            and isinstance(item["value"], dict)
            and (item["key"] is None or isinstance(item["key"], str))
            for item in items
        )
    ):
        error = "a batch record needs `records`: a non-empty list of {key: string|null, value: object}"
        return [(key, DeadLetter(stage=stage, reason=reason, error=error, payload=data))]
    return [(item["key"].encode() if item["key"] is not None else None, item["value"]) for item in items]
