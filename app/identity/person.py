"""Person-scoped vs device-scoped state of a device's profile, and the order of links (pure functions).

A device (Kochava ids, ad ids, the install's first touch) can change hands; the person state on it
(userId, email/phone hashes, the anonymousIds the person's app and kseg used, LTV, purchases, conversion,
ad suppression, lifecycle stage) belongs to whoever owns it now. Links are ordered by when they happened
(`at`, then `ref` to break ties), never by when they arrived, so a replayed old login cannot take a device
back. See docs/identity.md, "Person and device".
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.ids import anonymous_id_for
from app.records import AttributionProfile, LifecycleState

#: anonymousIds of earlier owners remembered per device (a resold phone has a handful of owners at most).
MAX_RETIRED = 20


def parse_time(value: str | None) -> datetime | None:
    """An aware datetime from ISO-8601 (`Z` accepted; naive means UTC), or None when unparsable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`, like every other kseg time."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_older(at: str | None, ref: str | None, than_at: str | None, than_ref: str | None) -> bool:
    """True when the link (at, ref) happened strictly before (than_at, than_ref).

    Ties on time are broken by ref, so two links at the same instant are ordered the same way whatever
    the order they arrive in (an exact re-delivery is then equal, never older or newer). Nothing is older
    than a missing or unparsable time, and an unparsable time is never older.
    """
    mine, theirs = parse_time(at), parse_time(than_at)
    if mine is None or theirs is None:
        return False
    if mine != theirs:
        return mine < theirs
    return (ref or "") < (than_ref or "")


def owner_of(state: AttributionProfile) -> str | None:
    """The person whose history the device's current anonymousId is: set by the first link or by an
    adopted SDK anonymousId seen with a userId; a profile from before ownership was kept: its user."""
    return state.ownership.anonymous_owner or state.user_id


def person_anonymous_id(
    state: AttributionProfile, device_key: str, user_id: str | None, namespace: str
) -> str:
    """The anonymousId a call about `user_id` on this device carries.

    The device's current anonymousId (the adopted SDK one, else kseg's) when it is this person's or nobody's
    yet; otherwise one of this person's own on this device, so a call never pairs one person's userId with
    another person's anonymousId. On a shared device a named person always gets their own.
    """
    current = state.sdk_anonymous_id or state.anonymous_id or anonymous_id_for(namespace, device_key)
    owner = owner_of(state)
    if user_id is None or (not state.device_shared and owner in (None, user_id)):
        return current
    return anonymous_id_for(namespace, f"{device_key}:person:{user_id}")


def owned_copy(state: AttributionProfile) -> AttributionProfile:
    """A copy of `state` whose fields, and its ownership record's, the identity rules may assign in place.

    Everything else nested (id lists, dedupe marks, parked postbacks, touches, lifecycle) stays shared
    with `state`: no rule changes those in place, each one assigns a new value. A deep copy of every
    device state on every link notice cost more than the rule itself."""
    return state.model_copy(update={"ownership": state.ownership.model_copy()})


def _retire(retired: list[str], ids: list[str | None]) -> list[str]:
    out = list(retired)
    for value in ids:
        if value and value not in out:
            out.append(value)
    return out[-MAX_RETIRED:]


def hand_over(
    state: AttributionProfile,
    device_key: str,
    user_id: str,
    at: str | None,
    ref: str | None,
    namespace: str,
    email_hash: str | None = None,
    phone_hash: str | None = None,
) -> AttributionProfile:
    """The profile after the device passed to another person (`user_id`, linked at `at`).

    Device state stays (ids, first touch, install, acquisition channel derived from it, dedupe marks).
    Person state starts empty: only the new person's own hashes, no LTV, purchases, conversion, ad
    suppression, stage or alias; the anonymousIds in use are retired and the new owner gets one of
    their own. The previous owner keeps their history: nothing is sent to their profile.
    """
    new = owned_copy(state)
    own = new.ownership
    own.retired_anonymous_ids = _retire(
        own.retired_anonymous_ids,
        [new.anonymous_id or anonymous_id_for(namespace, device_key), new.sdk_anonymous_id],
    )
    new.anonymous_id = anonymous_id_for(namespace, f"{device_key}:person:{user_id}")
    new.sdk_anonymous_id = None
    own.anonymous_owner = user_id
    own.linked_at, own.link_ref, own.reassigned_at = at, ref, at
    new.user_id = user_id
    new.email_hash, new.phone_hash = email_hash, phone_hash
    new.anonymous_events = 0
    new.lifetime_revenue, new.purchase_count = 0.0, 0
    new.converted, new.converted_at, new.conversion_name = False, None, None
    life = state.lifecycle
    new.lifecycle = LifecycleState(
        acquisition_channel=life.acquisition_channel, acquisition_paid=life.acquisition_paid
    )
    return new


def make_shared(state: AttributionProfile, device_key: str, namespace: str) -> AttributionProfile:
    """The profile of a device found shared: it belongs to nobody, keeps no person's hashes, and its
    anonymous events go to an anonymousId of the device's own, never to one a person used on it."""
    new = owned_copy(state)
    own = new.ownership
    own.retired_anonymous_ids = _retire(
        own.retired_anonymous_ids,
        [new.anonymous_id or anonymous_id_for(namespace, device_key), new.sdk_anonymous_id],
    )
    new.anonymous_id = anonymous_id_for(namespace, f"{device_key}:shared")
    new.sdk_anonymous_id = None
    own.anonymous_owner = None
    new.device_shared = True
    new.user_id = new.email_hash = new.phone_hash = None
    return new


def take_ownership(state: AttributionProfile, user_id: str, at: str | None, ref: str | None) -> None:
    """Record (in place, on a profile the caller already copied) that `user_id` owns the device since
    (at, ref); the device's anonymous history becomes theirs when it was nobody's."""
    own = state.ownership
    own.linked_at, own.link_ref = at, ref
    if own.anonymous_owner is None:
        own.anonymous_owner = user_id


def may_adopt(
    state: AttributionProfile, anonymous_id: str, seen_at: str | None, seen_with: str | None
) -> bool:
    """Whether the device may adopt an SDK anonymousId seen at `seen_at` next to userId `seen_with`: never
    one an earlier owner used, never one seen with another person than the device's owner, never one seen
    before the device last changed hands (it may be the previous owner's app). A device someone owns adopts
    only an anonymousId seen with that person's userId: an anonymous SDK call may be a buyer's new app."""
    own = state.ownership
    if anonymous_id in own.retired_anonymous_ids:
        return False
    owner = owner_of(state)
    if owner is not None and seen_with != owner:
        return False
    return not (own.reassigned_at and is_older(seen_at, None, own.reassigned_at, None))
