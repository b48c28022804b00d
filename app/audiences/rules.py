"""Membership rules (pure): one member's state + one change or device fact → new state + Kochava requests.

- A change older than the one recorded for that audience never overrides it (`stale`); a change that
  repeats the recorded membership (a re-send, the first sync's call per identifier) sends nothing
  (`duplicate`) but moves the recorded time forward.
- Every change goes to every device of the member, one S2S event each; a device linked later enters
  every audience the member is in; a device that leaves the member exits them.
- kseg's own audiences are re-evaluated on every device fact: the member is in while any device matches.
- IdentityLink once per device and user: when a device first joins a `user:` member.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from app.audiences.own import OwnAudience
from app.audiences.records import (
    DeviceEntry,
    DeviceFacts,
    Membership,
    MembershipChange,
    MemberState,
    audience_ref,
    member_user_id,
)
from app.sinks.kochava.requests import AudienceEvent, KochavaRequest, identity_link, s2s_event


@dataclass(frozen=True)
class EventNames:
    entered: str = "Audience Entered"
    exited: str = "Audience Exited"


@dataclass
class Applied:
    """One membership change that took effect (for metrics)."""

    source: str
    audience_key: str
    entered: bool


@dataclass
class Outcome:
    state: MemberState
    requests: list[KochavaRequest] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # "stale" | "duplicate"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (audience key, reason) per device unsent
    identity_links: int = 0


def _time(at: str) -> datetime | None:
    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return None


def older(at: str, than: str) -> bool:
    """True when `at` is strictly before `than` (unparsable times never count as older)."""
    a, b = _time(at), _time(than)
    if a is None or b is None:
        return False
    if (a.tzinfo is None) != (b.tzinfo is None):
        a, b = a.replace(tzinfo=None), b.replace(tzinfo=None)
    return a < b


def _latest(a: str, b: str) -> str:
    return b if older(a, b) else a


def _event(
    out: Outcome, membership: Membership, device_key: str, device: DeviceEntry, at: str, names: EventNames
) -> None:
    request = s2s_event(
        AudienceEvent(
            device_key=device_key,
            device_ids=dict(device.device_ids),
            entered=membership.entered,
            audience_key=membership.audience_key,
            audience_id=membership.audience_id,
            audience_source=membership.source,
            at=at,
            att=device.att,
        ),
        names.entered,
        names.exited,
    )
    if request is None:
        out.skipped.append((membership.audience_key, "no_kochava_device_id"))
    else:
        out.requests.append(request)


def _set(out: Outcome, change: MembershipChange, names: EventNames) -> None:
    """Record a membership that differs from the current one and tell every device."""
    membership = Membership(
        source=change.source,
        audience_id=change.audience_id,
        audience_key=change.audience_key,
        space_id=change.space_id,
        entered=change.entered,
        at=change.at,
        changed_at=change.at,
        change_key=change.change_key,
    )
    out.state.audiences[audience_ref(change.source, change.audience_id)] = membership
    out.applied.append(Applied(change.source, change.audience_key, change.entered))
    for device_key, device in out.state.devices.items():
        _event(out, membership, device_key, device, change.at, names)


def apply_change(state: MemberState | None, change: MembershipChange, names: EventNames) -> Outcome:
    """One Engage (or own) change for one member."""
    new = state.model_copy(deep=True) if state else MemberState(member=change.member)
    out = Outcome(new)
    current = new.audiences.get(audience_ref(change.source, change.audience_id))
    if current is not None:
        if older(change.at, current.at):
            out.ignored.append("stale")
            return out
        if current.entered == change.entered:
            current.at = _latest(current.at, change.at)
            out.ignored.append("duplicate")
            return out
    _set(out, change, names)
    return out


def _own_changes(out: Outcome, own: list[OwnAudience], at: str, names: EventNames) -> None:
    state = out.state
    for audience in own:
        inside = any(audience.matches(d.traits) for d in state.devices.values())
        current = state.audiences.get(audience_ref("kseg", audience.id))
        if inside == (current.entered if current else False):
            continue
        change = MembershipChange(
            member=state.member,
            source="kseg",
            audience_id=audience.id,
            audience_key=audience.key,
            entered=inside,
            at=_latest(at, current.at) if current else at,
            change_key=f"kseg:{audience.id}:{state.member}:{inside}",
        )
        _set(out, change, names)


def apply_device(
    state: MemberState | None, facts: DeviceFacts, own: list[OwnAudience], names: EventNames
) -> Outcome:
    """One device's current facts for one member: join, update or leave, then kseg's own audiences."""
    new = state.model_copy(deep=True) if state else MemberState(member=facts.member)
    out = Outcome(new)
    entered = [m for m in new.audiences.values() if m.entered]
    if not facts.linked:
        device = new.devices.pop(facts.device_key, None)
        if device is not None:
            for membership in entered:
                exit_ = membership.model_copy(update={"entered": False})
                _event(out, exit_, facts.device_key, device, facts.at, names)
        _own_changes(out, own, facts.at, names)
        return out
    device = new.devices.get(facts.device_key)
    if device is None:
        device = DeviceEntry(linked_at=facts.at)
        new.devices[facts.device_key] = device
        joined = True
    else:
        joined = False
    device.device_ids = {**device.device_ids, **facts.device_ids}
    if facts.att is not None:
        device.att = facts.att
    device.traits = dict(facts.traits)
    if joined:
        for membership in entered:
            _event(out, membership, facts.device_key, device, facts.at, names)
    user_id = member_user_id(new.member)
    if user_id and not device.identity_linked:
        link = identity_link(facts.device_key, dict(device.device_ids), user_id, facts.at)
        if link is not None:
            out.requests.append(link)
            device.identity_linked = True
            out.identity_links += 1
    _own_changes(out, own, facts.at, names)
    return out


def erase_member(state: MemberState | None, at: str, names: EventNames) -> Outcome:
    """A privacy erasure of one member: every audience it is in is exited first (an `Audience Exited` to
    Kochava per device, so Kochava's copy of the membership ends too); the caller then deletes the state."""
    new = state.model_copy(deep=True) if state else MemberState(member="")
    out = Outcome(new)
    for ref, membership in list(new.audiences.items()):
        if not membership.entered:
            continue
        exited = membership.model_copy(
            update={"entered": False, "at": at, "changed_at": at, "change_key": None}
        )
        new.audiences[ref] = exited
        out.applied.append(Applied(membership.source, membership.audience_key, False))
        for device_key, device in new.devices.items():
            _event(out, exited, device_key, device, at, names)
    return out
