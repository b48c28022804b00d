"""Identity records on kseg's identity topics: links, index updates, index state.

Every value is orjson of `model_dump(mode="json")`; `kind` tells records apart on shared streams. The
device notices (`app.records.DeviceLinked`) are a shared record: the processing agent reads them next
to postbacks on one device-keyed stream.
Only hashes of emails and phones travel through Kafka, never the raw values.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field, field_validator

from app.ids import clean_id
from app.records import Attribution, DeviceIds, utc_now_iso

LinkSource = Literal["api", "segment_webhook", "postback"]

#: Device id types of the index, in fan-out order. GAID is `adid`.
DEVICE_ID_TYPES = ("kochava_device_id", "idfa", "idfv", "adid", "android_id")
#: Index key prefix of an SDK anonymousId's claim record (which device's ids it belongs to).
SDK_ANONYMOUS_ID = "sdk_anonymous_id"
AD_ID_TYPES = frozenset({"idfa", "adid"})
_KEY_ALIASES = {"gaid": "adid"}


def to_bytes(model: BaseModel) -> bytes:
    """The Kafka value of one identity record."""
    return orjson.dumps(model.model_dump(mode="json"))


def typed_device_key(device_key: str) -> str:
    """The index key of a device key: `kochava_device_id:<key>`, or the key itself when already typed.

    The receiver keys postbacks without a Kochava id as `idfa:<v>`, `gaid:<v>`...; those are ids of
    their own type (`gaid` is the index's `adid`), not Kochava ids.
    """
    prefix, sep, rest = device_key.partition(":")
    if sep and (prefix in DEVICE_ID_TYPES or prefix in _KEY_ALIASES) and rest:
        return f"{_KEY_ALIASES.get(prefix, prefix)}:{rest}"
    return f"kochava_device_id:{device_key}"


def id_type(typed_id: str) -> str:
    return typed_id.partition(":")[0]


class LinkRequest(BaseModel):
    """One person ↔ device(s) link from the links API or the Segment webhook, before fan-out."""

    kind: Literal["link_request"] = "link_request"
    link_id: str
    source: LinkSource
    user_id: str | None = None
    anonymous_id: str | None = None
    email_hash: str | None = None
    phone_hash: str | None = None
    devices: DeviceIds = Field(default_factory=DeviceIds)
    #: When the link happened (the Segment call's own time, the links API's `at`), which orders it against
    #: the device's other links; never later than when kseg received it.
    requested_at: str = Field(default_factory=utc_now_iso)
    message_id: str | None = None  # the Segment messageId, for webhook links

    @field_validator("user_id", "anonymous_id")
    @classmethod
    def _no_junk(cls, value: str | None) -> str | None:
        return clean_id(value)

    @field_validator("devices")
    @classmethod
    def _clean_devices(cls, value: DeviceIds) -> DeviceIds:
        """Junk ids never become identifiers, even in a record produced by someone else."""
        return DeviceIds(**{k: clean_id(v) for k, v in value.model_dump().items()})

    def typed_devices(self) -> list[str]:
        return self.devices.typed()

    def has_person(self) -> bool:
        return bool(self.user_id or self.email_hash or self.phone_hash)

    def problem(self) -> str | None:
        """Why the link cannot be used (a reason code), or None when it is valid. A link names a person,
        or only the app's SDK anonymousId for the device (adopted, docs/identity.md)."""
        if not (self.has_person() or self.anonymous_id):
            return "no_person_id"
        if not self.typed_devices():
            return "no_device_id"
        return None

    @staticmethod
    def make_id(source: str, content: Any) -> str:
        """Deterministic link id: a retried request or webhook delivery gives the same id."""
        raw = orjson.dumps([source, content], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(raw).hexdigest()[:32]


class DeviceIndexUpdate(BaseModel):
    """One fact about one typed device id, keyed by that id on `identity.device-index`.

    `claim` is keyed by `sdk_anonymous_id:<id>` instead: the app's SDK anonymousId claims the device ids it
    was seen with (`claim_ids`); an accepted claim becomes one `adopt` per device id.
    """

    kind: Literal["observed", "link", "claim", "adopt"]
    device: str
    device_key: str | None = None
    user_id: str | None = None
    email_hash: str | None = None
    phone_hash: str | None = None
    source: LinkSource = "postback"
    at: str = Field(default_factory=utc_now_iso)
    ref: str | None = None  # event_id or link_id the fact came from
    # observed only: the device's first touch (and the install id that set it), so a later device key
    # seen with this id (a reinstall) can inherit it; `reprocess_for` is the original install id a
    # reinstall names, checked against the install id the index remembers.
    first_touch: Attribution | None = None
    install_id: str | None = None
    reprocess_for: str | None = None
    # claim / adopt: the SDK anonymousId and (claim) the typed device ids it was seen with.
    anonymous_id: str | None = None
    claim_ids: list[str] = Field(default_factory=list)


class DeviceRecord(BaseModel):
    """Value of the `devices` table, keyed by typed device id."""

    device_keys: list[str] = Field(default_factory=list)
    user_ids: list[str] = Field(default_factory=list)
    user_id: str | None = None
    linked_at: str | None = None
    link_ref: str | None = None
    #: When the id last passed from one user to another (an SDK anonymousId seen before is refused).
    reassigned_at: str | None = None
    shared: bool = False
    email_hash: str | None = None
    phone_hash: str | None = None
    conflicts: int = 0
    # The first first touch seen for this id (never overwritten), its install id and its device key.
    first_touch: Attribution | None = None
    install_id: str | None = None
    first_touch_key: str | None = None
    # The SDK anonymousId adopted for this id (newest accepted claim wins), when its call happened and
    # the userId it named ...
    anonymous_id: str | None = None
    anonymous_id_at: str | None = None
    anonymous_user_id: str | None = None
    # ... and, on an `sdk_anonymous_id:<id>` record, the device ids that anonymousId belongs to.
    claim_ids: list[str] = Field(default_factory=list)
