"""The Kochava outbox record and the exact S2S / IdentityLink bodies kseg posts (pure builders).

`KochavaRequest` is the value on `kochava.outbox`: which endpoint, the body without the app GUID
(the sink adds `kochava_app_id` at send time, so a changed GUID applies to the backlog), and a
deterministic `request_id` so a replayed record can be recognised in logs and dead letters.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field

from app.ids import clean_id

Endpoint = Literal["track", "identity_link"]
PATHS: dict[str, str] = {"track": "/track/json", "identity_link": "/v1/cpi/identityLink.php"}

#: Device id types Kochava's S2S API groups under `device_ids`
#: (docs/reference.md#kochava-s2s-and-identitylink).
S2S_ID_TYPES = ("idfa", "idfv", "adid", "android_id")


class KochavaRequest(BaseModel):
    """One POST to Kochava, waiting on `kochava.outbox` (keyed by device key)."""

    kind: Literal["kochava_request"] = "kochava_request"
    endpoint: Endpoint
    request_id: str
    body: dict[str, Any]
    device_key: str | None = None  # the outbox record key: one device's requests stay in order
    audience_key: str | None = None  # for per-audience metrics; None for IdentityLink
    created_at: str | None = None

    def path(self) -> str:
        return PATHS[self.endpoint]

    def with_app_id(self, app_guid: str | None) -> dict[str, Any]:
        """The exact JSON body: `kochava_app_id` first, as Kochava's examples show."""
        return {"kochava_app_id": app_guid, **{k: v for k, v in self.body.items() if k != "kochava_app_id"}}


def request_id(*parts: object) -> str:
    """Deterministic id of one request (same change, same device → same id)."""
    return hashlib.sha256(orjson.dumps([str(p) for p in parts])).hexdigest()[:32]


def clean_device_ids(ids: dict[str, str | None]) -> dict[str, str]:
    """Only the S2S id types, never a zeroed or placeholder value."""
    out: dict[str, str] = {}
    for name in S2S_ID_TYPES:
        value = clean_id(ids.get(name))
        if value is not None:
            out[name] = value
    return out


def epoch_seconds(at: str) -> int:
    """ISO-8601 (or epoch) → integer epoch seconds, the only form `usertime` accepts."""
    try:
        return int(float(at))
    except ValueError:
        return int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())


def att_block(att: bool | None, att_time: str | None = None) -> dict[str, Any] | None:
    """`app_tracking_transparency` when the iOS ATT status is known (Kochava drops IDFAs without it)."""
    if att is None:
        return None
    block: dict[str, Any] = {"att": att}
    if att_time:
        block["att_time"] = epoch_seconds(att_time)
    return block


class AudienceEvent(BaseModel):
    """What one device's audience change says, before it becomes an S2S body."""

    device_key: str
    device_ids: dict[str, str | None] = Field(default_factory=dict)
    entered: bool
    audience_key: str
    audience_id: str
    audience_source: Literal["segment", "kseg"]
    at: str
    att: bool | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


def s2s_event(event: AudienceEvent, entered_name: str, exited_name: str) -> KochavaRequest | None:
    """`POST /track/json` for one device and change; None when the device has no usable Kochava id."""
    device_key = clean_id(event.device_key)
    if device_key is None or ":" in device_key:
        return None  # a device known only by another id type has no kochava_device_id to send
    name = entered_name if event.entered else exited_name
    body: dict[str, Any] = {
        "action": "event",
        "kochava_device_id": device_key,
        "device_ids": clean_device_ids(event.device_ids),
        "usertime": epoch_seconds(event.at),
        "data": {
            "event_name": name,
            "event_data": {
                "audience_key": event.audience_key,
                "audience_id": event.audience_id,
                "audience_source": event.audience_source,
                **event.extra,
            },
        },
    }
    if not body["device_ids"]:
        del body["device_ids"]
    att = att_block(event.att)
    if att is not None:
        body["app_tracking_transparency"] = att
    rid = request_id("track", device_key, event.audience_source, event.audience_id, event.entered, event.at)
    return KochavaRequest(
        endpoint="track",
        request_id=rid,
        body=body,
        device_key=event.device_key,
        audience_key=event.audience_key,
        created_at=event.at,
    )


def identity_link(
    device_key: str, device_ids: dict[str, str | None], user_id: str, at: str
) -> KochavaRequest | None:
    """`POST /v1/cpi/identityLink.php`: the app user id of one device (None: no usable id)."""
    ids: dict[str, str] = {}
    kochava_id = clean_id(device_key)
    if kochava_id and ":" not in kochava_id:
        ids["kochava_device_id"] = kochava_id
    ids.update(clean_device_ids(device_ids))
    if not ids or clean_id(user_id) is None:
        return None
    body = {"device_id": ids, "data": {"app_userid": user_id}}
    return KochavaRequest(
        endpoint="identity_link",
        request_id=request_id("identity_link", device_key, user_id),
        body=body,
        device_key=device_key,
        created_at=at,
    )
