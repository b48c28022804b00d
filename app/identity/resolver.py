"""Identity resolution for one postback, and the index observations it produces (pure functions).

The processing core (`app.pipeline.core`) calls `identify_device` once per postback, after attribution:
who sent it, the device's new identity state, and the device-index updates (with the device's first
touch). The rules take plain values (`IdentityRules`), never the settings object, so they are testable
without Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.identity.metrics import identity_metrics
from app.identity.person import hand_over, is_older, owner_of, person_anonymous_id, take_ownership
from app.identity.records import AD_ID_TYPES, DeviceIndexUpdate, id_type, typed_device_key
from app.ids import anonymous_id_for, clean_id, normalise_email, normalise_phone, sha256_hex
from app.records import AttributionProfile, CanonicalEvent, ResolvedIdentity, ResolvedVia


@dataclass(frozen=True)
class IdentityRules:
    """What resolution needs besides the device's state (from KSEG_NAMESPACE, KSEG_MAX_IDS_PER_PROFILE and
    KSEG_ALLOW_RAW_EMAIL_TRAIT, read once by the process that builds it)."""

    namespace: str
    max_ids_per_profile: int = 5
    allow_raw_email: bool = False


@dataclass(frozen=True)
class DeviceIdentity:
    """`identify_device`'s answer: who sent the event, the device's state, what the index must hear."""

    identity: ResolvedIdentity
    state: AttributionProfile
    index_updates: list[DeviceIndexUpdate]


def email_hash(value: object) -> str | None:
    """SHA-256 of the trimmed, lower-cased email, or None when it is not an email."""
    email = normalise_email(value)
    return sha256_hex(email) if email else None


def phone_hash(value: object) -> str | None:
    """SHA-256 of the E.164 phone, or None when it is not a phone number."""
    phone = normalise_phone(value)
    return sha256_hex(phone) if phone else None


def effective_anonymous_id(state: AttributionProfile, device_key: str, namespace: str) -> str:
    """The anonymousId the device's calls carry: the adopted SDK one, else kseg's own for the device key."""
    derived = state.anonymous_id or anonymous_id_for(namespace, device_key)
    return state.sdk_anonymous_id or derived


def explicit_user_id(event: CanonicalEvent) -> str | None:
    """The event's user id unless junk (`anonymous`, `null`, `0`...), which is counted and dropped."""
    user_id = clean_id(event.user_id)
    if event.user_id is not None and user_id is None:
        identity_metrics.junk_ids_blocked.labels(id_type="user_id").inc()
    return user_id


def identify_device(
    event: CanonicalEvent,
    before: AttributionProfile,
    attributed: AttributionProfile,
    device_key: str,
    rules: IdentityRules,
) -> DeviceIdentity:
    """The one identity step of a postback, after attribution (`attributed` is `before` after
    `apply_event`): resolution (`resolve`), the index observations (`observations`) and the device's first
    touch on them (`with_first_touch`), with one copy of the profile."""
    explicit = explicit_user_id(event)
    identity, resolved = _resolve(event, attributed, device_key, rules, explicit)
    observed, updates = _observe(event, attributed, device_key, rules, explicit)
    state = attributed.model_copy(update={**resolved, **observed})
    return DeviceIdentity(identity, state, with_first_touch(event, before, state, updates, device_key))


def resolve(
    event: CanonicalEvent, state: AttributionProfile, device_key: str, rules: IdentityRules
) -> tuple[ResolvedIdentity, AttributionProfile]:
    """Who sent this event, and the device's state after it (`_resolve`; the rules are there)."""
    identity, changes = _resolve(event, state, device_key, rules, explicit_user_id(event))
    return identity, state.model_copy(update=changes)


def _resolve(
    event: CanonicalEvent,
    state: AttributionProfile,
    device_key: str,
    rules: IdentityRules,
    explicit: str | None,
) -> tuple[ResolvedIdentity, dict[str, Any]]:
    """Who sent this event: explicit userId > device link > email hash > phone hash > anonymous; and the
    changed identity fields of the device's state.

    The anonymousId is the app's SDK anonymousId once adopted for the device (docs/identity.md), else
    derived from the device key, so every event of a device lands on one profile even before any link.
    An explicit userId links the device unless it is known shared.
    """
    changes: dict[str, Any] = {
        "anonymous_id": state.anonymous_id or anonymous_id_for(rules.namespace, device_key)
    }
    anonymous_id = state.sdk_anonymous_id or changes["anonymous_id"]

    event_email = normalise_email(event.email)
    event_email_hash = sha256_hex(event_email) if event_email else None
    event_phone_hash = phone_hash(event.phone)
    if not state.device_shared:
        # A shared device's state never speaks for whoever holds it now.
        changes["email_hash"] = event_email_hash or state.email_hash
        changes["phone_hash"] = event_phone_hash or state.phone_hash
    hashed_email = event_email_hash or (None if state.device_shared else state.email_hash)
    hashed_phone = event_phone_hash or (None if state.device_shared else state.phone_hash)

    user_id: str | None = None
    via: ResolvedVia
    if explicit:
        user_id, via = explicit, "user_id"
        own, ref = state.ownership, event.event_id
        newer = not is_older(event.timestamp, ref, own.linked_at, own.link_ref)
        if state.device_shared:
            identity_metrics.merges_refused.labels(reason="shared_device").inc()
        elif owner_of(state) not in (None, explicit):
            # Another person: only their own hashes; the device passes to them (none of the previous
            # user's person state follows) unless the event is older than the device's current link.
            hashed_email, hashed_phone = event_email_hash, event_phone_hash
            if newer:
                handed = hand_over(
                    state.model_copy(update=changes),
                    device_key,
                    explicit,
                    event.timestamp,
                    ref,
                    rules.namespace,
                    hashed_email,
                    hashed_phone,
                )
                changes = {name: getattr(handed, name) for name in type(handed).model_fields}
            else:
                changes["email_hash"], changes["phone_hash"] = state.email_hash, state.phone_hash
        elif newer:
            changes["user_id"] = explicit  # the newest link wins for this device's next events
            owned = state.model_copy(update={"ownership": state.ownership.model_copy()})
            take_ownership(owned, explicit, event.timestamp, ref)  # in place, on the copied ownership
            changes["ownership"] = owned.ownership
        # Never another person's anonymousId next to this userId (docs/identity.md, "Person and device").
        current = state.model_copy(update=changes)
        anonymous_id = person_anonymous_id(current, device_key, explicit, rules.namespace)
    elif state.user_id and not state.device_shared:
        user_id, via = state.user_id, "link"
    elif hashed_email:
        via = "email"
    elif hashed_phone:
        via = "phone"
    else:
        via = "anonymous"
    if user_id is None:
        changes["anonymous_events"] = state.anonymous_events + 1

    identity = ResolvedIdentity(
        user_id=user_id,
        anonymous_id=anonymous_id,
        via=via,
        email_hash=hashed_email,
        phone_hash=hashed_phone,
        email=event_email if rules.allow_raw_email else None,
    )
    return identity, changes


def event_device_ids(event: CanonicalEvent, device_key: str) -> list[str]:
    """Typed ids of the event: the device key first, then the event's ids.

    Ad ids are weak and dropped when the event says ad tracking is limited.
    """
    ids = [typed_device_key(device_key)]
    for typed in event.devices.typed():
        if event.ad_tracking_enabled is False and id_type(typed) in AD_ID_TYPES:
            continue  # ad ids are weak: never an identifier when the user limited ad tracking
        if typed not in ids:
            ids.append(typed)
    return ids


def _person_key(user_id: str | None, email: str | None, phone: str | None) -> str | None:
    if not (user_id or email or phone):
        return None
    return f"user:{user_id or ''}|email:{email or ''}|phone:{phone or ''}"


def observations(
    event: CanonicalEvent, state: AttributionProfile, device_key: str, rules: IdentityRules
) -> tuple[AttributionProfile, list[DeviceIndexUpdate]]:
    """The device's state and its index updates after `event` (`_observe`; the rules are there)."""
    changes, updates = _observe(event, state, device_key, rules, explicit_user_id(event))
    return state.model_copy(update=changes), updates


def _observe(
    event: CanonicalEvent,
    state: AttributionProfile,
    device_key: str,
    rules: IdentityRules,
    explicit: str | None,
) -> tuple[dict[str, Any], list[DeviceIndexUpdate]]:
    """Index updates for ids this device has not announced yet, and links for a person named in the postback;
    with the changed `known_ids` / `linked_persons` of the device's state (new lists, the old ones untouched).

    `known_ids` keeps at most `max_ids_per_profile` ids per type; ids beyond the cap are dropped from the
    event (never from the profile) and counted, as Segment's identity limits do.
    """
    cap = rules.max_ids_per_profile
    at = event.timestamp or event.received_at  # a postback's link is ordered by when its event happened
    known_ids = list(state.known_ids)
    usable: list[str] = []
    fresh: list[str] = []
    for typed in event_device_ids(event, device_key):
        if typed in known_ids:
            usable.append(typed)
            continue
        if sum(1 for known in known_ids if id_type(known) == id_type(typed)) >= cap:
            identity_metrics.merges_refused.labels(reason="cap").inc()
            continue
        known_ids.append(typed)
        usable.append(typed)
        fresh.append(typed)
    changes: dict[str, Any] = {"known_ids": known_ids}

    updates = [
        DeviceIndexUpdate(
            kind="observed",
            device=typed,
            device_key=device_key,
            at=at,
            ref=event.event_id,
            reprocess_for=event.original_install_id,
        )
        for typed in fresh
    ]

    email = email_hash(event.email)
    phone = phone_hash(event.phone)
    person = _person_key(explicit, email, phone)
    if person is None:
        return changes, updates
    if state.device_shared:
        identity_metrics.merges_refused.labels(reason="shared_device").inc()
        return changes, updates
    # A new person links every usable id; a known person only the ids the index has not heard of.
    targets = fresh if person in state.linked_persons else usable
    if person not in state.linked_persons:
        changes["linked_persons"] = [*state.linked_persons, person][-cap:]
    updates += [
        DeviceIndexUpdate(
            kind="link",
            device=typed,
            device_key=device_key,
            user_id=explicit,
            email_hash=email,
            phone_hash=phone,
            source="postback",
            at=at,
            ref=event.event_id,
        )
        for typed in targets
    ]
    return changes, updates


def with_first_touch(
    event: CanonicalEvent,
    before: AttributionProfile,
    after: AttributionProfile,
    updates: list[DeviceIndexUpdate],
    device_key: str,
) -> list[DeviceIndexUpdate]:
    """The updates with the device's first touch on their `observed` ones (`after` is the profile after
    `apply_event` and the observations, `before` the one before the event), so a reinstall seen later with
    one of these ids can inherit it.

    The event that sets the first touch re-announces every known id with it (they may have been
    announced before the install arrived). A shared device announces no first touch: its ids must not
    stamp one person's campaign on someone else's device.
    """
    touch = after.first_touch
    if touch is None or after.device_shared:
        return updates
    out = [
        u.model_copy(update={"first_touch": touch, "install_id": after.install_id})
        if u.kind == "observed"
        else u
        for u in updates
    ]
    if before.first_touch is None:
        announced = {u.device for u in out if u.kind == "observed"}
        at = event.received_at or event.timestamp
        out += [
            DeviceIndexUpdate(
                kind="observed",
                device=typed,
                device_key=device_key,
                at=at,
                ref=event.event_id,
                first_touch=touch,
                install_id=after.install_id,
            )
            for typed in after.known_ids
            if typed not in announced
        ]
    return out
