"""Identity resolution for one postback, and the index observations it produces (pure functions).

The processing agent keeps one `AttributionProfile` per device key and calls `resolve` and
`observations` for every postback; all they return is the new state and what to say, so the rules
are testable without Kafka.
"""

from __future__ import annotations

from app.config import Settings
from app.identity.metrics import identity_metrics
from app.identity.person import hand_over, is_older, owner_of, person_anonymous_id, take_ownership
from app.identity.records import AD_ID_TYPES, DeviceIndexUpdate, id_type, typed_device_key
from app.ids import anonymous_id_for, clean_id, normalise_email, normalise_phone, sha256_hex
from app.records import AttributionProfile, CanonicalEvent, ResolvedIdentity, ResolvedVia


def email_hash(value: object) -> str | None:
    """SHA-256 of the trimmed, lower-cased email, or None when it is not an email."""
    email = normalise_email(value)
    return sha256_hex(email) if email else None


def phone_hash(value: object) -> str | None:
    """SHA-256 of the E.164 phone, or None when it is not a phone number."""
    phone = normalise_phone(value)
    return sha256_hex(phone) if phone else None


def effective_anonymous_id(state: AttributionProfile, device_key: str, settings: Settings) -> str:
    """The anonymousId the device's calls carry: the adopted SDK one, else kseg's own for the device key."""
    derived = state.anonymous_id or anonymous_id_for(settings.kseg_namespace, device_key)
    return state.sdk_anonymous_id or derived


def explicit_user_id(event: CanonicalEvent) -> str | None:
    """The event's user id unless junk (`anonymous`, `null`, `0`...), which is counted and dropped."""
    user_id = clean_id(event.user_id)
    if event.user_id is not None and user_id is None:
        identity_metrics.junk_ids_blocked.labels(id_type="user_id").inc()
    return user_id


def resolve(
    event: CanonicalEvent, state: AttributionProfile, device_key: str, settings: Settings
) -> tuple[ResolvedIdentity, AttributionProfile]:
    """Who sent this event: explicit userId > device link > email hash > phone hash > anonymous.

    The anonymousId is the app's SDK anonymousId once adopted for the device (docs/identity.md), else
    derived from the device key, so every event of a device lands on one profile even before any link.
    An explicit userId links the device unless it is known shared.
    """
    new = state.model_copy(deep=True)
    new.anonymous_id = state.anonymous_id or anonymous_id_for(settings.kseg_namespace, device_key)
    anonymous_id = effective_anonymous_id(new, device_key, settings)

    event_email = normalise_email(event.email)
    event_email_hash = sha256_hex(event_email) if event_email else None
    event_phone_hash = phone_hash(event.phone)
    if not state.device_shared:
        # A shared device's state never speaks for whoever holds it now.
        new.email_hash = event_email_hash or state.email_hash
        new.phone_hash = event_phone_hash or state.phone_hash
    hashed_email = event_email_hash or (None if state.device_shared else state.email_hash)
    hashed_phone = event_phone_hash or (None if state.device_shared else state.phone_hash)

    user_id: str | None = None
    via: ResolvedVia
    explicit = explicit_user_id(event)
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
                namespace = settings.kseg_namespace
                new = hand_over(
                    new, device_key, explicit, event.timestamp, ref, namespace, hashed_email, hashed_phone
                )
            else:
                new.email_hash, new.phone_hash = state.email_hash, state.phone_hash
        elif newer:
            new.user_id = explicit  # the newest link wins for this device's next events
            take_ownership(new, explicit, event.timestamp, ref)
        # Never another person's anonymousId next to this userId (docs/identity.md, "Person and device").
        anonymous_id = person_anonymous_id(new, device_key, explicit, settings.kseg_namespace)
    elif state.user_id and not state.device_shared:
        user_id, via = state.user_id, "link"
    elif hashed_email:
        via = "email"
    elif hashed_phone:
        via = "phone"
    else:
        via = "anonymous"
    if user_id is None:
        new.anonymous_events += 1

    identity = ResolvedIdentity(
        user_id=user_id,
        anonymous_id=anonymous_id,
        via=via,
        email_hash=hashed_email,
        phone_hash=hashed_phone,
        email=event_email if settings.kseg_allow_raw_email_trait else None,
    )
    return identity, new


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
    event: CanonicalEvent, state: AttributionProfile, device_key: str, settings: Settings
) -> tuple[AttributionProfile, list[DeviceIndexUpdate]]:
    """Index updates for ids this device has not announced yet, and links for a person named in the postback.

    `known_ids` keeps at most `kseg_max_ids_per_profile` ids per type; ids beyond the cap are dropped
    from the event (never from the profile) and counted, as Segment's identity limits do.
    """
    new = state.model_copy(deep=True)
    cap = settings.kseg_max_ids_per_profile
    at = event.timestamp or event.received_at  # a postback's link is ordered by when its event happened
    event_ids = event_device_ids(event, device_key)
    usable: list[str] = []
    fresh: list[str] = []
    for typed in event_ids:
        if typed in new.known_ids:
            usable.append(typed)
            continue
        if sum(1 for known in new.known_ids if id_type(known) == id_type(typed)) >= cap:
            identity_metrics.merges_refused.labels(reason="cap").inc()
            continue
        new.known_ids.append(typed)
        usable.append(typed)
        fresh.append(typed)

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

    user_id = explicit_user_id(event)
    email = email_hash(event.email)
    phone = phone_hash(event.phone)
    person = _person_key(user_id, email, phone)
    if person is None:
        return new, updates
    if new.device_shared:
        identity_metrics.merges_refused.labels(reason="shared_device").inc()
        return new, updates
    # A new person links every usable id; a known person only the ids the index has not heard of.
    targets = fresh if person in new.linked_persons else usable
    if person not in new.linked_persons:
        new.linked_persons = [*new.linked_persons, person][-cap:]
    updates += [
        DeviceIndexUpdate(
            kind="link",
            device=typed,
            device_key=device_key,
            user_id=user_id,
            email_hash=email,
            phone_hash=phone,
            source="postback",
            at=at,
            ref=event.event_id,
        )
        for typed in targets
    ]
    return new, updates


def with_first_touch(
    event: CanonicalEvent,
    before: AttributionProfile,
    after: AttributionProfile,
    updates: list[DeviceIndexUpdate],
    device_key: str,
) -> list[DeviceIndexUpdate]:
    """`observations` with the device's first touch on its `observed` updates (`after` is the profile
    after `apply_event`, `before` the one before it), so a reinstall seen later with one of these ids
    can inherit it.

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
