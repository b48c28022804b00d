"""The device index's state transitions (pure): one `DeviceRecord` per typed device id.

The agent feeds every `DeviceIndexUpdate` through `apply_update` and sends the returned notices to
the device keys before writing the record back, so a crash in between re-sends (harmless: notices
are idempotent) instead of losing them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.identity.person import is_older
from app.identity.records import (
    SDK_ANONYMOUS_ID,
    DeviceIndexUpdate,
    DeviceRecord,
    LinkRequest,
)
from app.records import DeviceLinked


@dataclass
class IndexOutcome:
    """What one update did: the new record, the notices to send, and merges refused (by reason)."""

    record: DeviceRecord
    notices: list[DeviceLinked] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    #: Index updates for other keys of the index (an accepted claim's `adopt`s), sent like notices.
    forward: list[DeviceIndexUpdate] = field(default_factory=list)


@dataclass(frozen=True)
class IndexLimits:
    """The index's limits as plain values: device keys kept per id (and ids per SDK anonymousId claim,
    times the id types), and distinct users past which an id is shared."""

    max_ids_per_profile: int
    shared_device_threshold: int

    @property
    def max_users(self) -> int:
        """User ids kept per device: one past the shared threshold is all the decision needs."""
        return self.shared_device_threshold + 1


def _notice(
    record: DeviceRecord, device: str, device_key: str, at: str, *, link: bool = True, inherit: bool = False
) -> DeviceLinked:
    """A notice to one device key: who it belongs to (`link`) and/or the first touch it inherits."""
    notice = DeviceLinked(
        device_key=device_key, via=device, linked_at=record.linked_at or at, link_ref=record.link_ref
    )
    if link:
        notice.user_id, notice.email_hash, notice.phone_hash = (
            record.user_id,
            record.email_hash,
            record.phone_hash,
        )
    if inherit:
        notice.first_touch = record.first_touch.model_copy() if record.first_touch else None
        notice.install_id = record.install_id
    return notice


def inherits_first_touch(
    record: DeviceRecord, update: DeviceIndexUpdate, key_new: bool, over_cap: bool
) -> tuple[bool, bool]:
    """Whether the update's device key inherits the record's first touch, and whether `reprocess_for`
    confirms it (the reinstall names the install the record remembers).

    Only a device key new to this id inherits, never the key that set the first touch, never one that
    brought its own first touch, never through a shared id. A key refused by the cap inherits only when
    its `reprocess_for` confirms the install: the typed-id match is the main path, the install id a
    second, stronger one.
    """
    key = update.device_key
    confirmed = bool(update.reprocess_for) and update.reprocess_for == record.install_id
    if record.shared or record.first_touch is None or key is None or update.first_touch is not None:
        return False, confirmed
    if key == record.first_touch_key:
        return False, confirmed
    return key_new or (over_cap and confirmed), confirmed


def apply_update(record: DeviceRecord | None, update: DeviceIndexUpdate, limits: IndexLimits) -> IndexOutcome:
    """Record one observation or link for one typed device id.

    - observed: remember the device key; a new key of a linked device is told who it belongs to. The
      first first touch reported for the id is kept; a new key (a reinstall) is told to inherit it
      (see `inherits_first_touch`).
    - link: remember the user; past `kseg_shared_device_threshold` distinct users the device is
      shared: every key is told so and nothing merges. Otherwise the newest link (by time) is the
      current user and every key is told.
    """
    rec = record.model_copy(deep=True) if record else DeviceRecord()
    if update.kind == "claim":
        return apply_claim(rec, update, limits)
    if update.kind == "adopt":
        return apply_adopt(rec, update)
    out = IndexOutcome(record=rec)
    device = update.device

    key_new = over_cap = False
    key = update.device_key
    if key and key not in rec.device_keys:
        if len(rec.device_keys) >= limits.max_ids_per_profile:
            out.refused.append("cap")  # too many devices behind one id: never fan a link out to them
            over_cap = True
        else:
            rec.device_keys.append(key)
            key_new = True
    if update.first_touch is not None and rec.first_touch is None:
        # The first first touch seen for this id is its original install's; never overwritten.
        rec.first_touch = update.first_touch.model_copy()
        rec.install_id = update.install_id
        rec.first_touch_key = key

    if rec.shared:
        if update.kind == "link" and (update.user_id or update.email_hash or update.phone_hash):
            rec.conflicts += 1
            out.refused.append("shared_device")
        return _answer_reinstall(out, update)

    changed = False
    if update.kind == "link":
        user = update.user_id
        if user and user not in rec.user_ids:
            rec.user_ids.append(user)
            if len(rec.user_ids) > limits.shared_device_threshold:
                rec.shared = True
                rec.user_id = rec.email_hash = rec.phone_hash = None
                rec.user_ids = rec.user_ids[: limits.max_users]
                rec.conflicts += 1
                out.refused.append("shared_device")
                out.notices = [
                    DeviceLinked(device_key=k, via=device, linked_at=update.at, shared=True)
                    for k in rec.device_keys
                ]
                return out
        changed = apply_person(rec, update)

    inherit, confirmed = inherits_first_touch(rec, update, key_new, over_cap)
    if rec.user_id or rec.email_hash or rec.phone_hash:
        if changed:
            targets = list(rec.device_keys)
        elif key_new and key:
            targets = [key]
        else:
            targets = []
        out.notices = [_notice(rec, device, k, update.at, inherit=inherit and k == key) for k in targets]
    if inherit and key and key not in [n.device_key for n in out.notices]:
        out.notices.append(_notice(rec, device, key, update.at, link=False, inherit=True))
    for notice in out.notices:
        if notice.first_touch is not None:
            notice.confirmed = confirmed
    if key_new and key and rec.anonymous_id:
        _tell_anonymous_id(out, rec, device, key, update.at)
    return _answer_reinstall(out, update)


def apply_person(rec: DeviceRecord, update: DeviceIndexUpdate) -> bool:
    """Apply a link's person to the record (in place); True when the record's person changed.

    Links are ordered by when they happened, (`at`, `ref`): an older one never overrides a newer one,
    whatever the order they arrive in, and an exact re-delivery changes nothing (True only when the record
    changed: another person, new hashes, or the same person's newer link). A link to another user
    replaces the whole person (userId and hashes: the previous user's hashes never follow the device) and
    forgets an SDK anonymousId seen before it (the previous owner's app).
    """
    if is_older(update.at, update.ref, rec.linked_at, rec.link_ref):
        return False
    user = update.user_id
    if user and user != rec.user_id:
        handed_over = rec.user_id is not None
        if handed_over:
            rec.reassigned_at = update.at
        seen_before = handed_over and not is_older(update.at, None, rec.anonymous_id_at, None)
        if rec.anonymous_id and (seen_before or rec.anonymous_user_id not in (None, user)):
            rec.anonymous_id = rec.anonymous_id_at = rec.anonymous_user_id = None
        rec.user_id, rec.email_hash, rec.phone_hash = user, update.email_hash, update.phone_hash
        rec.linked_at, rec.link_ref = update.at, update.ref
        return True
    changed = False
    for name in ("email_hash", "phone_hash"):
        value = getattr(update, name)
        if value and value != getattr(rec, name):
            setattr(rec, name, value)
            changed = True
    if (changed or user) and (update.at, update.ref) != (rec.linked_at, rec.link_ref):
        # The same person's newer link: the device keys are told too (nothing is sent to Segment), so a
        # link of someone else older than it, arriving through another of the device's ids, loses.
        rec.linked_at, rec.link_ref = update.at, update.ref
        changed = True
    return changed


def _tell_anonymous_id(out: IndexOutcome, rec: DeviceRecord, device: str, key: str, at: str) -> None:
    """Tell one device key the SDK anonymousId adopted for this id (on its notice, or a notice of its own)."""
    for notice in out.notices:
        if notice.device_key == key:
            notice.anonymous_id, notice.anonymous_id_at = rec.anonymous_id, rec.anonymous_id_at
            notice.anonymous_user_id = rec.anonymous_user_id
            return
    out.notices.append(_adopt_notice(rec, key, device, at))


def apply_claim(rec: DeviceRecord, update: DeviceIndexUpdate, limits: IndexLimits) -> IndexOutcome:
    """An SDK anonymousId claims the device ids it was seen with (record keyed `sdk_anonymous_id:<id>`).

    The first claim wins the anonymousId for its device; a later claim sharing no id with it is another
    device and is refused (`anonymous_id_conflict`): one anonymousId never collects two devices' first
    touches. An accepted claim is forwarded as one `adopt` per device id new to the claim, or per device id
    when the anonymousId is named with a userId for the first time (whose app it is decides who may
    adopt it, docs/identity.md "Person and device").
    """
    out = IndexOutcome(record=rec)
    wanted = [typed for typed in update.claim_ids if not typed.startswith(f"{SDK_ANONYMOUS_ID}:")]
    if not wanted or not update.anonymous_id:
        return out
    if rec.claim_ids and not set(wanted) & set(rec.claim_ids):
        rec.conflicts += 1
        out.refused.append("anonymous_id_conflict")
        return out
    fresh = [typed for typed in wanted if typed not in rec.claim_ids]
    cap = limits.max_ids_per_profile * 5  # ids per type x id types: one device's ids at most
    rec.claim_ids = [*rec.claim_ids, *fresh][:cap]
    rec.anonymous_id = update.anonymous_id
    if update.user_id and rec.anonymous_user_id is None:
        rec.anonymous_user_id = update.user_id
        fresh = list(rec.claim_ids)  # first named with a person: every id learns whose app it is
    out.forward = [
        DeviceIndexUpdate(
            kind="adopt",
            device=typed,
            anonymous_id=update.anonymous_id,
            user_id=update.user_id,
            source=update.source,
            at=update.at,
            ref=update.ref,
        )
        for typed in fresh  # a repeat of the same SDK calls brings no new id: nothing to forward
    ]
    return out


def apply_adopt(rec: DeviceRecord, update: DeviceIndexUpdate) -> IndexOutcome:
    """Adopt an SDK anonymousId for one device id and tell its device keys; never for a shared id, never
    one seen before the id last changed hands or named with another user than the id's (the previous
    owner's app), never over a newer one."""
    out = IndexOutcome(record=rec)
    if rec.shared:
        out.refused.append("shared_device")
        return out
    if not update.anonymous_id:
        return out
    if rec.anonymous_id == update.anonymous_id:
        if not (update.user_id and rec.anonymous_user_id is None):
            return out
        rec.anonymous_user_id = update.user_id  # now known to be this person's app: the keys are told
        out.notices = _adopt_notices(rec, update.device, update.at)
        return out
    other_person = update.user_id is not None and rec.user_id not in (None, update.user_id)
    if other_person or is_older(update.at, None, rec.reassigned_at, None):
        out.refused.append("previous_owner")
        return out
    if rec.anonymous_id and is_older(update.at, None, rec.anonymous_id_at, None):
        return out  # an older SDK call than the one adopted: the newest wins
    rec.anonymous_id, rec.anonymous_id_at = update.anonymous_id, update.at
    rec.anonymous_user_id = update.user_id
    out.notices = _adopt_notices(rec, update.device, update.at)
    return out


def _adopt_notices(rec: DeviceRecord, device: str, at: str) -> list[DeviceLinked]:
    """The record's SDK anonymousId (when its call happened, whose app) to every device key of the id."""
    return [_adopt_notice(rec, k, device, at) for k in rec.device_keys]


def _adopt_notice(rec: DeviceRecord, key: str, device: str, at: str) -> DeviceLinked:
    """A notice to one device key carrying the record's SDK anonymousId, when its call happened, and whose
    app it is."""
    return DeviceLinked(
        device_key=key,
        via=device,
        linked_at=at,
        anonymous_id=rec.anonymous_id,
        anonymous_id_at=rec.anonymous_id_at,
        anonymous_user_id=rec.anonymous_user_id,
    )


def _answer_reinstall(out: IndexOutcome, update: DeviceIndexUpdate) -> IndexOutcome:
    """A reinstall's observation always gets exactly one answer to its device key, carrying the
    inherited first touch when there is one: the device parks its postbacks until every answer came."""
    if update.kind != "observed" or not update.reprocess_for or not update.device_key:
        return out
    for notice in out.notices:
        if notice.device_key == update.device_key:
            notice.answers_reinstall = True
            return out
    out.notices.append(
        DeviceLinked(
            device_key=update.device_key, via=update.device, linked_at=update.at, answers_reinstall=True
        )
    )
    return out


def link_updates(link: LinkRequest) -> list[DeviceIndexUpdate]:
    """Fan-out of one link: one index update per typed device id of the link, after the SDK anonymousId's
    claim when the link carries one.

    For `kochava_device_id:<k>` the device key is `k` itself, so the index can tell that device
    right away instead of waiting for its next postback.
    """
    updates = []
    if link.anonymous_id:
        updates.append(
            DeviceIndexUpdate(
                kind="claim",
                device=f"{SDK_ANONYMOUS_ID}:{link.anonymous_id}",
                anonymous_id=link.anonymous_id,
                user_id=link.user_id,
                claim_ids=link.typed_devices(),
                source=link.source,
                at=link.requested_at,
                ref=link.link_id,
            )
        )
    if not link.has_person():
        return updates
    for typed in link.typed_devices():
        id_kind, _, value = typed.partition(":")
        updates.append(
            DeviceIndexUpdate(
                kind="link",
                device=typed,
                device_key=value if id_kind == "kochava_device_id" else None,
                user_id=link.user_id,
                email_hash=link.email_hash,
                phone_hash=link.phone_hash,
                source=link.source,
                at=link.requested_at,
                ref=link.link_id,
            )
        )
    return updates
