"""The privacy domain's records: a request with its per-target status (the `privacy.requests` record), the
wake-ups of the privacy agent, and the erase commands it sends to the agents that own kseg's state."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.records import Record, utc_now_iso

RequestType = Literal["delete", "suppress", "unsuppress"]
Channel = Literal["api", "segment_webhook", "cli"]
TargetStatus = Literal["pending", "done", "failed", "not_applicable", "not_configured"]

#: Every target of a request, in fan-out order (kseg's own state first: it stops the rebuilding).
TARGETS = ("suppression", "kseg_state", "warehouse", "segment", "kochava", "kafka_logs")
#: Statuses after which a target needs no more work.
FINAL = frozenset({"done", "not_applicable", "not_configured"})


class SubjectDevices(BaseModel):
    """The device ids a request names (any subset)."""

    kochava_device_id: str | None = None
    idfa: str | None = None
    idfv: str | None = None
    adid: str | None = None
    android_id: str | None = None

    def typed(self) -> list[str]:
        return [f"{name}:{value}" for name, value in self.model_dump().items() if value]


class Subject(BaseModel):
    """Who the request is about, as the caller named them (email only as its SHA-256)."""

    user_id: str | None = None
    devices: SubjectDevices = Field(default_factory=SubjectDevices)
    email_hash: str | None = None


class Covered(BaseModel):
    """Exactly which ids the request covered, as resolved through the identity tables."""

    user_ids: list[str] = Field(default_factory=list)
    device_keys: list[str] = Field(default_factory=list)
    typed_ids: list[str] = Field(default_factory=list)
    anonymous_ids: list[str] = Field(default_factory=list)
    email_hashes: list[str] = Field(default_factory=list)
    members: list[str] = Field(default_factory=list)


class Target(BaseModel):
    """One target's durable status: what was done there, or why not."""

    status: TargetStatus = "pending"
    reason: str | None = None
    attempts: int = 0
    next_attempt_at: float | None = None
    updated_at: str = Field(default_factory=utc_now_iso)
    #: What the target reported: counts, job ids, regulation ids and their status.
    detail: dict[str, object] = Field(default_factory=dict)


class HistoryEntry(BaseModel):
    at: str
    target: str
    status: TargetStatus
    reason: str | None = None


class PrivacyRequest(Record):
    """One privacy request and its fan-out: the value of the compacted `privacy.requests` topic.

    Revision 0 is what the receiver (or the CLI) wrote; the privacy agent writes every later revision."""

    kind: Literal["privacy_request"] = "privacy_request"
    request_id: str
    type: RequestType
    channel: Channel
    reference: str | None = None
    received_at: str
    subject: Subject
    revision: int = 0
    resolved: bool = False
    covered: Covered = Field(default_factory=Covered)
    targets: dict[str, Target] = Field(default_factory=dict)
    history: list[HistoryEntry] = Field(default_factory=list)
    #: The date by which the raw postbacks in Kafka topics with time retention are gone.
    kafka_gone_by: str | None = None
    completed_at: str | None = None

    @property
    def status(self) -> str:
        """`received` (not resolved yet), `in_progress`, `done`, or `failed` (a target gave up)."""
        if not self.resolved:
            return "received"
        states = {t.status for t in self.targets.values()}
        if states <= FINAL:
            return "done"
        if any(t.status == "failed" and t.next_attempt_at is None for t in self.targets.values()):
            return "failed"
        return "in_progress"

    def summary(self) -> dict[str, object]:
        """The JSON the API and `kseg privacy status --json` show."""
        return {"status": self.status, **self.model_dump(mode="json")}


class PrivacyWake(Record):
    """A nudge to the privacy agent: look at this request again (retries, status polls)."""

    kind: Literal["privacy_wake"] = "privacy_wake"
    request_id: str


EraseAction = Literal["erase", "suppress", "unsuppress"]


class PrivacyErase(Record):
    """A command to the agent that owns one key's state: erase it (and suppress the key), only suppress it,
    or lift the suppression. Sent on the privacy erase topics, co-partitioned with that agent's input."""

    kind: Literal["privacy_erase"] = "privacy_erase"
    request_id: str
    action: EraseAction
    key: str
    at: str = Field(default_factory=utc_now_iso)
