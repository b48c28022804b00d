"""Segment webhook input: signature verification on the raw bytes, and Segment calls → `LinkRequest`s.

Classic webhooks sign the whole body; Actions webhooks send a JSON array and sign only the raw text
of element 0 (docs/reference.md#segment-webhooks). Verification always runs on the bytes as
received: re-serialised JSON does not reproduce the sender's bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from app.identity.metrics import identity_metrics
from app.identity.person import iso, parse_time
from app.identity.records import LinkRequest
from app.identity.resolver import email_hash
from app.ids import clean_id
from app.records import DeviceIds, utc_now_iso

_WS = " \t\r\n"


def signed_bytes(raw: bytes) -> bytes:
    """The bytes the signature covers: the whole body, or the raw text of element 0 of a batch.

    A body that is not UTF-8 or whose first element does not parse falls back to the whole body.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    stripped = text.lstrip(_WS)
    if not stripped.startswith("["):
        return raw
    i = text.index("[") + 1
    while i < len(text) and text[i] in _WS:
        i += 1
    if i >= len(text) or text[i] == "]":
        return raw
    try:
        _, end = json.JSONDecoder().raw_decode(text, i)
    except json.JSONDecodeError:
        return raw
    return text[i:end].encode("utf-8")


def sign(raw: bytes, secret: str) -> str:
    """Hex HMAC-SHA1, as Segment computes it."""
    return hmac.new(secret.encode("utf-8"), raw, hashlib.sha1).hexdigest()


def verify_signature(raw: bytes, signature: str | None, secret: str) -> bool:
    """True when `X-Signature` matches the body (classic) or element 0 (Actions batch); constant time."""
    if not signature or not secret:
        return False
    expected = sign(signed_bytes(raw), secret)
    # Header bytes that are not UTF-8 arrive surrogate-escaped; they can only fail to match, never raise.
    supplied = signature.strip().lower().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(expected.encode(), supplied)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _platform(context: dict[str, Any]) -> str | None:
    """`ios` or `android` from context.device.type, else context.os.name."""
    for raw in (_dict(context.get("device")).get("type"), _dict(context.get("os")).get("name")):
        if isinstance(raw, str):
            name = raw.strip().lower()
            if name in ("ios", "ipados", "iphone os", "tvos"):
                return "ios"
            if name == "android":
                return "android"
    return None


def _clean(value: Any, id_type: str) -> str | None:
    """A usable id or None; a present-but-junk id (zero IDFA, `null`...) is counted."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    cleaned = clean_id(value)
    if cleaned is None:
        identity_metrics.junk_ids_blocked.labels(id_type=id_type).inc()
    return cleaned


def _kochava_id(message: dict[str, Any], context: dict[str, Any]) -> Any:
    for traits in (_dict(message.get("traits")), _dict(context.get("traits"))):
        if traits.get("kochava_device_id"):
            return traits["kochava_device_id"]
    external = context.get("externalIds")
    if isinstance(external, list):
        for item in external:
            if isinstance(item, dict) and item.get("type") == "kochava_device_id":
                return item.get("id")
    return None


def device_ids(message: dict[str, Any]) -> tuple[DeviceIds, str | None]:
    """Device ids of one Segment call, and a reason when ids were present but unusable.

    context.device.advertisingId is the IDFA on iOS and the GAID (`adid`) on Android; context.device.id
    is the IDFV on iOS and the Android id on Android. Without a platform neither can be typed.
    """
    context = _dict(message.get("context"))
    device = _dict(context.get("device"))
    kochava_id = _clean(_kochava_id(message, context), "kochava_device_id")
    ids: dict[str, str | None] = {"kochava_device_id": kochava_id}
    ad_id, dev_id = device.get("advertisingId"), device.get("id")
    if device.get("adTrackingEnabled") is False:
        ad_id = None  # ad ids are weak: never an identifier when the user limited ad tracking
    platform = _platform(context)
    reason = None
    if platform == "ios":
        ids["idfa"], ids["idfv"] = _clean(ad_id, "idfa"), _clean(dev_id, "idfv")
    elif platform == "android":
        ids["adid"], ids["android_id"] = _clean(ad_id, "adid"), _clean(dev_id, "android_id")
    elif ad_id or dev_id:
        reason = "unknown_device_type"
    return DeviceIds(**ids), reason


def _library(context: dict[str, Any]) -> str | None:
    name = _dict(context.get("library")).get("name")
    return name if isinstance(name, str) else None


#: A Segment call's own time, in order of preference: `timestamp` is Segment's skew-corrected event time,
#: `originalTimestamp` the sender's, `sentAt` when the sender's library sent it
#: (docs/reference.md#segment-timestamps).
CALL_TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt")


def call_time(message: dict[str, Any], received_at: str) -> str:
    """When a Segment call happened, which orders its link against the device's other links.

    The first parsable of `CALL_TIME_FIELDS`, never later than `received_at` (a call cannot have happened
    after kseg received it; a skewed clock must not make a link win forever); `received_at` without one.
    A re-delivery of the same call therefore keeps its original time, however late it arrives.
    """
    received = parse_time(received_at)
    for name in CALL_TIME_FIELDS:
        value = message.get(name)
        parsed = parse_time(value) if isinstance(value, str) else None
        if parsed is None:
            continue
        if received is not None and parsed > received:
            return received_at
        return iso(parsed)
    return received_at


def link_from_message(message: Any, received_at: str | None = None) -> LinkRequest | str:
    """A `LinkRequest` from one Segment call, or the reason it links nothing; timed by the call (`call_time`).

    Linkable: an identify with a userId or an email, or any call with a userId, plus at least one
    usable device id. Only the email's hash is kept. Any call of the app's SDK with an anonymousId and a
    usable device id also carries that anonymousId, for kseg to adopt for the device (docs/identity.md);
    kseg's own calls (context.library.name "kseg", if the webhook sees them) are never adopted.
    """
    if not isinstance(message, dict):
        return "not_an_object"
    call_type = message.get("type")
    context = _dict(message.get("context"))
    user_id = _clean(message.get("userId"), "user_id")
    raw_email = _dict(message.get("traits")).get("email") or _dict(context.get("traits")).get("email")
    hashed_email = email_hash(raw_email) if call_type == "identify" else None
    raw_anonymous = message.get("anonymousId")
    anonymous_id = clean_id(raw_anonymous) if isinstance(raw_anonymous, str) else None
    if _library(context) == "kseg":
        anonymous_id = None
    if not user_id and not hashed_email and not anonymous_id:
        return "no_user_id"
    devices, reason = device_ids(message)
    if not devices.typed():
        return reason or "no_device_id"
    message_id = message.get("messageId") if isinstance(message.get("messageId"), str) else None
    person = bool(user_id or hashed_email)
    content = {
        # An adoption-only call is the same fact on every SDK call: one link id for all of them.
        "message_id": message_id if person else None,
        "user_id": user_id,
        "email_hash": hashed_email,
        "anonymous_id": anonymous_id,
        "devices": devices.model_dump(),
    }
    return LinkRequest(
        link_id=LinkRequest.make_id("segment_webhook", content),
        source="segment_webhook",
        user_id=user_id,
        anonymous_id=anonymous_id,
        email_hash=hashed_email,
        devices=devices,
        requested_at=call_time(message, received_at or utc_now_iso()),
        message_id=message_id,
    )


def links_from_payload(payload: Any, received_at: str | None = None) -> tuple[list[LinkRequest], list[str]]:
    """Links of a classic (one call) or Actions (array of calls) payload, and the reasons for the rest."""
    messages = payload if isinstance(payload, list) else [payload]
    links: dict[str, LinkRequest] = {}
    reasons: list[str] = []
    for message in messages:
        result = link_from_message(message, received_at)
        if isinstance(result, str):
            reasons.append(result)
        else:
            links.setdefault(result.link_id, result)
    return list(links.values()), reasons
