"""Device facts for the audiences agent from the processing agent's per-device profile (pure).

Called with a device's profile before and after one step; returns what the audiences agent must hear:
the device's ids and signals for its member (keyed by member), and a `linked: false` fact to a member the
device left. Nothing when nothing the audiences depend on changed, so a busy device costs nothing here.
"""

from __future__ import annotations

from typing import Any

from app.audiences.own import SIGNALS
from app.audiences.records import DeviceFacts, device_member, email_member, user_member
from app.identity.records import id_type
from app.records import AttributionProfile, CanonicalEvent

_S2S_TYPES = frozenset({"idfa", "idfv", "adid", "android_id"})


def _signals(profile: AttributionProfile) -> dict[str, Any]:
    """The lifecycle signals own audiences test, from the profile's `lifecycle` state (app.lifecycle).

    Read off the model: a dump would copy the whole profile (its dedupe marks, parked postbacks) three
    or four times per event for two scalar fields."""
    life = profile.lifecycle
    return {name: value for name in SIGNALS if (value := getattr(life, name, None)) is not None}


def member_of(profile: AttributionProfile, device_key: str) -> str | None:
    """The device's member: its user, else its email hash, else the device itself when it is ad-suppressed.
    A shared device belongs to nobody (its holder changes)."""
    if profile.device_shared:
        return None
    if profile.user_id:
        return user_member(profile.user_id)
    if profile.email_hash:
        return email_member(profile.email_hash)
    if _signals(profile).get("ad_suppressed"):
        # Only a converted anonymous device becomes a member of its own: suppression must reach it, while
        # a member per anonymous device for every LTV tier would cost a table entry per device.
        return device_member(device_key)
    return None


def device_ids(profile: AttributionProfile) -> dict[str, str]:
    ids: dict[str, str] = {}
    for typed in profile.known_ids:
        kind = id_type(typed)
        if kind in _S2S_TYPES:
            ids.setdefault(kind, typed.partition(":")[2])
    return ids


def att_status(profile: AttributionProfile) -> bool | None:
    return profile.att_authorized


def with_att(profile: AttributionProfile, event: CanonicalEvent) -> AttributionProfile:
    """The profile with the iOS ATT status an iOS postback shows: a usable IDFA means the user authorized
    tracking, a zeroed one that they did not [inferred from iOS 14.5+ behaviour]; unknown leaves it."""
    if event.device_type != "ios" or event.ad_tracking_enabled is None:
        return profile
    if profile.att_authorized == event.ad_tracking_enabled:
        return profile
    return profile.model_copy(update={"att_authorized": event.ad_tracking_enabled})


def device_facts(
    before: AttributionProfile | None, after: AttributionProfile, device_key: str, at: str
) -> list[DeviceFacts]:
    """Facts to send after one step of one device (see the module docstring)."""
    old = before or AttributionProfile()
    member, old_member = member_of(after, device_key), member_of(old, device_key)
    view = (member, device_ids(after), _signals(after), att_status(after))
    old_view = (old_member, device_ids(old), _signals(old), att_status(old))
    if view == old_view:
        return []
    facts: list[DeviceFacts] = []
    if old_member is not None and old_member != member:
        facts.append(DeviceFacts(member=old_member, device_key=device_key, linked=False, at=at))
    if member is not None:
        facts.append(
            DeviceFacts(
                member=member,
                device_key=device_key,
                device_ids=view[1],
                traits=view[2],
                att=view[3],
                at=at,
            )
        )
    return facts
