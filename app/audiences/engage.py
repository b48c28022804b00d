"""Engage audience deliveries → `MembershipChange`s, detected by structure, pure
(docs/reference.md#segment-engage-audiences).

A Segment call is a membership change when `context.personas.computation_class` is `audience` (or
`journey_step`, as Segment's own parser accepts) and the value at `traits[computation_key]` (identify
mode) or `properties[computation_key]` (track mode) is a boolean: true entered, false exited. The event
name is never looked at (track mode's names are configurable in Engage).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson

from app.audiences.records import MembershipChange, email_member, user_member
from app.identity.resolver import email_hash
from app.ids import clean_id

COMPUTATION_CLASSES = frozenset({"audience", "journey_step"})
#: Where a call's event time may be, in order of preference.
_TIME_FIELDS = ("timestamp", "originalTimestamp", "receivedAt", "sentAt")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def is_membership_call(message: Any) -> bool:
    """True when the call has the structure of an Engage membership change (any event name)."""
    return membership_value(message) is not None


def membership_value(message: Any) -> bool | None:
    if not isinstance(message, dict):
        return None
    personas = _dict(_dict(message.get("context")).get("personas"))
    key = personas.get("computation_key")
    if personas.get("computation_class") not in COMPUTATION_CLASSES or not isinstance(key, str) or not key:
        return None
    holder = message.get("traits") if message.get("type") == "identify" else message.get("properties")
    value = _dict(holder).get(key)
    return value if isinstance(value, bool) else None


def _event_time(message: dict[str, Any], received_at: str) -> str:
    for name in _TIME_FIELDS:
        value = message.get(name)
        if isinstance(value, str):
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return value
    return received_at


def change_key(space_id: str | None, computation_id: str, identifier: str, entered: bool) -> str:
    """space + computation + profile identifier + membership bool (docs/reference.md, Engage audiences)."""
    raw = orjson.dumps([space_id or "", computation_id, identifier, entered])
    return hashlib.sha256(raw).hexdigest()[:32]


def change_from_call(message: Any, received_at: str) -> MembershipChange | str | None:
    """The change one call carries, a reason it cannot be used, or None when it is no membership call."""
    entered = membership_value(message)
    if entered is None:
        return None
    assert isinstance(message, dict)
    context = _dict(message.get("context"))
    personas = _dict(context.get("personas"))
    key = str(personas["computation_key"])
    computation_id = personas.get("computation_id")
    audience_id = str(computation_id) if isinstance(computation_id, str | int) and computation_id else key
    space = personas.get("space_id") or personas.get("namespace")
    space_id = str(space) if isinstance(space, str) and space else None
    user_id = clean_id(message.get("userId")) if isinstance(message.get("userId"), str | int) else None
    raw_email = _dict(message.get("traits")).get("email") or _dict(context.get("traits")).get("email")
    hashed = email_hash(raw_email)
    if user_id:
        member, identifier = user_member(user_id), f"user_id:{user_id}"
    elif hashed:
        member, identifier = email_member(hashed), f"email:{hashed}"
    else:
        return "no_profile_identifier"
    return MembershipChange(
        member=member,
        source="segment",
        audience_id=audience_id,
        audience_key=key,
        space_id=space_id,
        entered=entered,
        at=_event_time(message, received_at),
        change_key=change_key(space_id, audience_id, identifier, entered),
        received_at=received_at,
    )


def changes_from_payload(payload: Any, received_at: str) -> tuple[list[MembershipChange], list[str]]:
    """Changes of a classic (one call) or Actions (array) delivery, deduplicated by change key and member,
    and the reasons of membership calls that could not be used. Non-membership calls are skipped."""
    messages = payload if isinstance(payload, list) else [payload]
    changes: dict[tuple[str, str], MembershipChange] = {}
    reasons: list[str] = []
    for message in messages:
        result = change_from_call(message, received_at)
        if result is None:
            continue
        if isinstance(result, str):
            reasons.append(result)
            continue
        changes.setdefault((result.change_key, result.member), result)
    return list(changes.values()), reasons
