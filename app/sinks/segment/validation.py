"""Catch what Segment would accept with a 200 and then silently drop (docs/reference.md#segment-silent-200).

A dropped-after-200 event is lost without a trace; a message refused here becomes a typed dead letter
instead, with the reason, so it can be fixed and replayed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

MAX_MESSAGE_BYTES = 32 * 1024
MAX_MESSAGE_ID_CHARS = 99
MESSAGE_TYPES = frozenset({"track", "identify", "alias", "group", "page", "screen"})

REASON_INVALID = "invalid_message"
REASON_TOO_LARGE = "message_too_large"
_TOO_LARGE_PREFIX = "message too large"


def message_size(message: Any) -> int:
    """Bytes of the compact JSON (orjson) of one message: the size Segment's 32 KB limit applies to."""
    return len(orjson.dumps(message))


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _iso8601(value: Any) -> bool:
    if not isinstance(value, str) or len(value) < 10:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def problems(message: Any) -> list[str]:
    """Every reason Segment would drop `message` (or we refuse it); empty when it can be sent.

    `messageId` is required even though Segment would invent one: without our deterministic id a
    replay would duplicate the event (docs/reference.md#segment-messageid).
    """
    if not isinstance(message, dict):
        return ["message is not a JSON object"]
    found: list[str] = []
    kind = message.get("type")
    if kind not in MESSAGE_TYPES:
        found.append(f"type {kind!r} is not one of {sorted(MESSAGE_TYPES)}")
    mid = message.get("messageId")
    if not isinstance(mid, str) or not mid.strip():
        found.append("messageId must be a non-empty string")
    elif len(mid) > MAX_MESSAGE_ID_CHARS:
        found.append(f"messageId is {len(mid)} characters; Segment drops ids of 100 or more")
    if "timestamp" in message and not _iso8601(message["timestamp"]):
        found.append("timestamp is not an ISO-8601 string")
    for key in ("userId", "anonymousId", "previousId", "groupId"):
        if message.get(key) is not None and not isinstance(message[key], str):
            found.append(f"{key} is not a string (id_not_string)")
    if kind == "alias":
        if not (_nonempty_str(message.get("userId")) and _nonempty_str(message.get("previousId"))):
            found.append("alias needs non-empty userId and previousId")
    elif not (_nonempty_str(message.get("userId")) or _nonempty_str(message.get("anonymousId"))):
        found.append("neither userId nor anonymousId is a non-empty string (no_user_anon_id)")
    if kind == "track" and not _nonempty_str(message.get("event")):
        found.append("track event name is missing or empty (event_not_defined/event_not_string)")
    if kind == "group" and not _nonempty_str(message.get("groupId")):
        found.append("group needs a non-empty groupId")
    for key in ("properties", "traits"):
        if key in message and not isinstance(message[key], dict):
            found.append(f"{key} is not an object ({key}_not_object)")
    context = message.get("context")
    if context is not None and not isinstance(context, dict):
        found.append("context is not an object")
    elif isinstance(context, dict):
        device = context.get("device")
        if device is not None and not isinstance(device, dict):
            found.append("context.device is not an object")
        elif (
            isinstance(device, dict)
            and "advertisingId" in device
            and not isinstance(device["advertisingId"], str)
        ):
            found.append("context.device.advertisingId is not a string")
    try:
        size = message_size(message)
    except TypeError as exc:
        found.append(f"not JSON-serialisable: {exc}")
    else:
        if size > MAX_MESSAGE_BYTES:
            found.append(f"{_TOO_LARGE_PREFIX}: {size} bytes > {MAX_MESSAGE_BYTES}")
    return found


def reason_for(found: list[str]) -> str:
    """Dead-letter reason: `message_too_large` when size is a problem, else `invalid_message`."""
    if any(p.startswith(_TOO_LARGE_PREFIX) for p in found):
        return REASON_TOO_LARGE
    return REASON_INVALID
