"""Late authentication: a device that was anonymous is linked to a userId (pure functions).

The first link of a device with anonymous history yields one `alias` (anonymousId → userId) and one
`identify` carrying the install attribution, so destinations that merge by alias (Mixpanel style)
and Unify both tie the anonymous installs to the user. Every messageId derives from the message's
content, so replays and repeated notices collapse in Segment's dedupe and two different messages
never share an id. A notice older than the device's current link changes no person (`app.identity.person`).
"""

from __future__ import annotations

from typing import Any

import orjson

from app.identity.metrics import identity_metrics
from app.identity.person import (
    hand_over,
    is_older,
    make_shared,
    may_adopt,
    owned_copy,
    owner_of,
    take_ownership,
)
from app.identity.records import id_type
from app.identity.resolver import effective_anonymous_id
from app.ids import anonymous_id_for, kseg_uuid5
from app.lifecycle.traits import lifecycle_traits
from app.records import Attribution, AttributionProfile, DeviceLinked
from app.sections import IdentitySettings

LIBRARY = {"name": "kseg"}

#: Attribution fields copied into identify traits, as `kochava_<name>`.
_TRAIT_FIELDS = ("network", "campaign", "ad_group", "creative", "site", "tracker", "click_id", "country")


def attribution_traits(first_touch: Attribution | None) -> dict[str, Any]:
    """The install attribution as flat `kochava_*` traits (absent values left out)."""
    if first_touch is None:
        return {}
    traits: dict[str, Any] = {
        f"kochava_{name}": getattr(first_touch, name) for name in _TRAIT_FIELDS if getattr(first_touch, name)
    }
    if first_touch.attributed_at:
        traits["kochava_install_time"] = first_touch.attributed_at
    return traits


def device_context(known_ids: list[str]) -> dict[str, Any]:
    """`context.device` from the ids the profile knows: id (IDFV / Android id), advertisingId, type."""
    ids: dict[str, str] = {}
    for typed in known_ids:
        ids.setdefault(id_type(typed), typed.partition(":")[2])
    device: dict[str, Any] = {}
    if "idfv" in ids or "idfa" in ids:
        device["type"] = "ios"
        device_id, ad_id = ids.get("idfv"), ids.get("idfa")
    elif "android_id" in ids or "adid" in ids:
        device["type"] = "android"
        device_id, ad_id = ids.get("android_id"), ids.get("adid")
    else:
        return {}
    if device_id:
        device["id"] = device_id
    if ad_id:
        device["advertisingId"] = ad_id
    return device


def _context(state: AttributionProfile, with_device: bool) -> dict[str, Any]:
    context: dict[str, Any] = {"library": dict(LIBRARY)}
    device = device_context(state.known_ids) if with_device else {}
    if device:
        context["device"] = device
    return context


def content_message_id(namespace: str, message: dict[str, Any]) -> str:
    """A messageId derived from everything the message says (its `messageId` aside): the same message
    again gets the same id (Segment drops the repeat), a different one never reuses it."""
    body = {k: v for k, v in message.items() if k != "messageId"}
    digest = orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
    return kseg_uuid5(f"{namespace}:call:{digest}")


def _with_id(message: dict[str, Any], namespace: str) -> dict[str, Any]:
    message["messageId"] = content_message_id(namespace, message)
    return message


def alias_message(
    state: AttributionProfile,
    anonymous_id: str,
    user_id: str,
    device_key: str,
    timestamp: str,
    settings: IdentitySettings,
) -> dict[str, Any]:
    message = {
        "type": "alias",
        "previousId": anonymous_id,
        "userId": user_id,
        "timestamp": timestamp,
        "context": _context(state, with_device=True),
    }
    return _with_id(message, settings.kseg_namespace)


def identify_message(
    state: AttributionProfile,
    anonymous_id: str | None,
    user_id: str,
    device_key: str,
    timestamp: str,
    settings: IdentitySettings,
    email_hash: str | None = None,
    phone_hash: str | None = None,
) -> dict[str, Any]:
    """Identify with the install attribution; without `anonymous_id` it carries no device ids either,
    so nothing in it can tie this user to another user's anonymous history."""
    traits = {**attribution_traits(state.first_touch), **lifecycle_traits(state)}
    if email_hash:
        traits["email_sha256"] = email_hash
    if phone_hash:
        traits["phone_sha256"] = phone_hash
    message: dict[str, Any] = {
        "type": "identify",
        "userId": user_id,
        "traits": traits,
        "timestamp": timestamp,
        "context": _context(state, with_device=anonymous_id is not None),
    }
    if anonymous_id is not None:
        message["anonymousId"] = anonymous_id
    return _with_id(message, settings.kseg_namespace)


def adopt_first_touch(state: AttributionProfile, notice: DeviceLinked) -> AttributionProfile:
    """The profile after inheriting the first touch a notice carries (a reinstall on a known device id).

    Adopted only by a device without a first touch of its own (never overwritten), never by a shared
    device and never from a shared notice. The install id is kept when the device already has one
    (a reinstall's `reprocess_for`).
    """
    if notice.first_touch is None or notice.shared or state.device_shared or state.first_touch is not None:
        return state
    new = owned_copy(state)
    new.first_touch = notice.first_touch.model_copy()
    if new.install_id is None:
        new.install_id = notice.install_id
    return new


def adopt_anonymous_id(
    state: AttributionProfile, notice: DeviceLinked, device_key: str, settings: IdentitySettings
) -> tuple[AttributionProfile, list[dict[str, Any]]]:
    """Adopt the app's SDK anonymousId a notice carries; send the device's first touch to it at once.

    Never on a shared device, never an anonymousId an earlier owner of the device used or one seen before
    the device last changed hands (`may_adopt`). The identify carries the install attribution,
    acquisition channel and the lifecycle traits (and the userId when the device is linked), with the
    device's ids in context so Segment ties the SDK's profile to kseg's. Nothing is sent while the device
    has nothing to say yet: its first postback then goes to the adopted id directly. The messageId
    derives from the identify's content.
    """
    sdk_id = notice.anonymous_id
    if not sdk_id or notice.shared or state.device_shared:
        if sdk_id and (notice.shared or state.device_shared):
            identity_metrics.merges_refused.labels(reason="shared_device").inc()
        return state, []
    if state.sdk_anonymous_id == sdk_id:
        return state, []
    seen_with = notice.anonymous_user_id
    if not may_adopt(state, sdk_id, notice.anonymous_id_at or notice.linked_at, seen_with):
        identity_metrics.merges_refused.labels(reason="previous_owner").inc()
        return state, []
    new = owned_copy(state)
    new.sdk_anonymous_id = sdk_id
    if seen_with and new.ownership.anonymous_owner is None:
        new.ownership.anonymous_owner = seen_with  # the SDK's history is that person's
    identity_metrics.anonymous_ids_adopted.inc()
    traits = {**attribution_traits(new.first_touch), **lifecycle_traits(new)}
    if not traits:
        return new, []
    if new.email_hash:
        traits["email_sha256"] = new.email_hash
    message: dict[str, Any] = {
        "type": "identify",
        "anonymousId": sdk_id,
        "traits": traits,
        "timestamp": notice.linked_at,
        "context": _context(new, with_device=True),
    }
    if new.user_id:
        message["userId"] = new.user_id
    return new, [_with_id(message, settings.kseg_namespace)]


def apply_link(
    state: AttributionProfile, notice: DeviceLinked, device_key: str, settings: IdentitySettings
) -> tuple[AttributionProfile, list[dict[str, Any]]]:
    """Apply one `DeviceLinked` notice to a device's profile; returns the Segment messages to send.

    - shared notice: the device stops resolving to anyone, nothing merges (sticky);
    - inherited first touch: adopted when the device has none (`adopt_first_touch`), before any
      identify below so it carries the install attribution;
    - first link of a device with anonymous events: one alias + one identify;
    - same user again: nothing;
    - another user (reassigned device): the new user wins for future events and gets an identify
      without the anonymousId; the anonymous history stays with the first user (no second alias), and
      the new user starts with none of the previous user's person state (`hand_over`);
    - a link older than the device's current one (a replayed old login): no person change.
    """
    new = owned_copy(state)
    new.anonymous_id = state.anonymous_id or anonymous_id_for(settings.kseg_namespace, device_key)

    if notice.shared:
        return new if state.device_shared else make_shared(new, device_key, settings.kseg_namespace), []
    new = adopt_first_touch(new, notice)
    new, adopted = adopt_anonymous_id(new, notice, device_key, settings)
    anonymous_id = effective_anonymous_id(new, device_key, settings.kseg_namespace)
    if not (notice.user_id or notice.email_hash or notice.phone_hash):
        return new, adopted  # an inheritance- or adoption-only notice: nothing to link
    state_linked, linked = _link(state, new, notice, anonymous_id, device_key, settings)
    return state_linked, [*adopted, *linked]


def _link(
    state: AttributionProfile,
    new: AttributionProfile,
    notice: DeviceLinked,
    anonymous_id: str,
    device_key: str,
    settings: IdentitySettings,
) -> tuple[AttributionProfile, list[dict[str, Any]]]:
    """The person part of `apply_link` (see there); `new` already carries adoption and inheritance."""
    if state.device_shared:
        identity_metrics.merges_refused.labels(reason="shared_device").inc()
        return new, []

    own = state.ownership
    if is_older(notice.linked_at, notice.link_ref, own.linked_at, own.link_ref):
        identity_metrics.merges_refused.labels(reason="stale_link").inc()
        return new, []  # a replayed or late old link never takes the device back
    user_id = notice.user_id
    if user_id and owner_of(new) not in (None, user_id):
        # Reassigned: none of the previous user's person state follows the device to the new user.
        new = hand_over(
            new,
            device_key,
            user_id,
            notice.linked_at,
            notice.link_ref,
            settings.kseg_namespace,
            notice.email_hash,
            notice.phone_hash,
        )
        return new, [
            identify_message(
                new, None, user_id, device_key, notice.linked_at, settings, new.email_hash, new.phone_hash
            )
        ]
    new.email_hash = notice.email_hash or state.email_hash
    new.phone_hash = notice.phone_hash or state.phone_hash
    if not user_id:
        return new, []
    new.user_id = user_id
    take_ownership(new, user_id, notice.linked_at, notice.link_ref)

    first_link = (
        state.aliased_user_id is None and state.anonymous_events > 0 and state.user_id in (None, user_id)
    )
    if first_link:
        new.aliased_user_id = user_id
        hashes = (new.email_hash, new.phone_hash)
        identity_metrics.aliases_emitted.inc()
        return new, [
            alias_message(new, anonymous_id, user_id, device_key, notice.linked_at, settings),
            identify_message(new, anonymous_id, user_id, device_key, notice.linked_at, settings, *hashes),
        ]
    return new, []  # same user again, or a device linked before it said anything
