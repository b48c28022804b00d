"""Records of the audiences domain: membership changes and device facts (on `audiences.changes`, keyed
by member) and the member state kept in the `audience-members` table.

A member key is `user:<userId>`, `email:<sha256>` or `device:<device key>` (a device no person is known
for, for kseg's own audiences). Membership changes and device facts of one member share one key, so the
table lookup of both is local to the partition.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.records import utc_now_iso

AudienceSource = Literal["segment", "kseg"]


def user_member(user_id: str) -> str:
    return f"user:{user_id}"


def email_member(email_hash: str) -> str:
    return f"email:{email_hash}"


def device_member(device_key: str) -> str:
    return f"device:{device_key}"


def member_user_id(member: str) -> str | None:
    """The app's user id of a `user:` member (what IdentityLink sends), else None."""
    prefix, _, rest = member.partition(":")
    return rest if prefix == "user" and rest else None


def audience_ref(source: str, audience_id: str) -> str:
    """Key of one audience inside a member's state (Engage ids and kseg keys never collide)."""
    return f"{source}:{audience_id}"


class MembershipChange(BaseModel):
    """One audience entry or exit of one member, from Engage or from kseg's own rules."""

    kind: Literal["membership_change"] = "membership_change"
    member: str
    source: AudienceSource
    audience_id: str
    audience_key: str
    space_id: str | None = None
    entered: bool
    at: str
    #: Idempotency key: space + computation + profile identifier + membership bool
    #: (docs/reference.md#segment-engage-audiences).
    change_key: str
    received_at: str = Field(default_factory=utc_now_iso)


class DeviceFacts(BaseModel):
    """What a member's device looks like now (from the processing agent's per-device profile)."""

    kind: Literal["device_facts"] = "device_facts"
    member: str
    device_key: str
    linked: bool = True  # False: the device no longer belongs to this member
    device_ids: dict[str, str] = Field(default_factory=dict)
    att: bool | None = None
    traits: dict[str, str | bool | float | int | None] = Field(default_factory=dict)
    at: str = Field(default_factory=utc_now_iso)


class Membership(BaseModel):
    source: AudienceSource
    audience_id: str
    audience_key: str
    space_id: str | None = None
    entered: bool
    at: str
    changed_at: str
    change_key: str | None = None


class DeviceEntry(BaseModel):
    device_ids: dict[str, str] = Field(default_factory=dict)
    att: bool | None = None
    traits: dict[str, str | bool | float | int | None] = Field(default_factory=dict)
    linked_at: str
    identity_linked: bool = False


class MemberState(BaseModel):
    """Value of the `audience-members` table: the member's audiences and devices."""

    member: str
    audiences: dict[str, Membership] = Field(default_factory=dict)
    devices: dict[str, DeviceEntry] = Field(default_factory=dict)
