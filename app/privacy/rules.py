"""Pure rules of privacy requests: the API body, the request id, which targets apply, resolution of the
subject through the device index, backoff and the Kafka retention date. Plain values in, plain values out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from app.ids import clean_id, normalise_email, sha256_hex
from app.privacy.records import (
    TARGETS,
    Channel,
    Covered,
    HistoryEntry,
    PrivacyRequest,
    RequestType,
    Subject,
    SubjectDevices,
    Target,
    TargetStatus,
)
from app.records import utc_now_iso

REQUEST_TYPES = ("delete", "suppress", "unsuppress")
DEVICE_FIELDS = tuple(SubjectDevices.model_fields)
BODY_FIELDS = frozenset({"type", "user_id", "devices", "email", "reference"})
REFERENCE_MAX = 200


class BodyError(ValueError):
    """A request body kseg refuses: `code` and `details` go into the 400 (or 422) answer."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


def _text(data: dict[str, Any], name: str, where: str = "") -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BodyError("invalid_field", f"`{where}{name}` must be a string.", field=f"{where}{name}")
    return value


def parse_body(data: Any) -> tuple[RequestType, Subject, str | None]:
    """(type, subject, reference) of a `POST /v1/privacy/requests` body, or `BodyError` naming the field."""
    if not isinstance(data, dict):
        raise BodyError("invalid_json", "The JSON body must be an object.")
    unknown = sorted(set(data) - BODY_FIELDS)
    if unknown:
        raise BodyError("unknown_fields", f"Unknown fields: {', '.join(unknown)}.", fields=unknown)
    kind = data.get("type")
    if kind not in REQUEST_TYPES:
        raise BodyError(
            "invalid_type", "`type` must be delete, suppress or unsuppress.", expected=list(REQUEST_TYPES)
        )
    user_id = None
    if "user_id" in data and data["user_id"] is not None:
        raw = _text(data, "user_id")
        user_id = clean_id(raw)
        if user_id is None:
            raise BodyError("invalid_user_id", "`user_id` is empty or a placeholder.", field="user_id")
    devices: dict[str, str | None] = {}
    given = data.get("devices")
    if given is not None:
        if not isinstance(given, dict):
            raise BodyError("invalid_field", "`devices` must be an object of device ids.", field="devices")
        unknown = sorted(set(given) - set(DEVICE_FIELDS))
        if unknown:
            raise BodyError(
                "unknown_fields",
                f"Unknown device id types: {', '.join(unknown)}.",
                fields=[f"devices.{u}" for u in unknown],
                expected=list(DEVICE_FIELDS),
            )
        for name in DEVICE_FIELDS:
            raw = _text(given, name, "devices.")
            if raw is None:
                continue
            value = clean_id(raw)
            if value is None:
                raise BodyError(
                    "invalid_device_id",
                    f"`devices.{name}` is empty or a placeholder.",
                    field=f"devices.{name}",
                )
            devices[name] = value
    email_hash = None
    email = _text(data, "email")
    if email is not None:
        normalised = normalise_email(email)
        if normalised is None:
            raise BodyError("invalid_email", "`email` is not an email address.", field="email")
        email_hash = sha256_hex(normalised)
    reference = _text(data, "reference")
    if reference is not None and not 1 <= len(reference) <= REFERENCE_MAX:
        raise BodyError(
            "invalid_reference", f"`reference` must be 1 to {REFERENCE_MAX} characters.", field="reference"
        )
    subject = Subject(user_id=user_id, devices=SubjectDevices(**devices), email_hash=email_hash)
    if not (user_id or devices):
        raise BodyError(
            "no_subject",
            "Name the person: `user_id` and/or at least one id in `devices` (an email alone cannot be "
            "resolved to kseg's state).",
            expected_any_of=["user_id", *(f"devices.{n}" for n in DEVICE_FIELDS)],
        )
    return kind, subject, reference


def request_id(kind: str, subject: Subject, reference: str | None, channel: str) -> str:
    """Deterministic id: the same request sent twice (a retry, a Segment redelivery) is one request."""
    content = [channel, kind, subject.model_dump(mode="json"), reference]
    return "pr_" + hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]


def new_request(
    kind: RequestType,
    subject: Subject,
    reference: str | None,
    channel: Channel,
    received_at: str | None = None,
) -> PrivacyRequest:
    return PrivacyRequest(
        request_id=request_id(kind, subject, reference, channel),
        type=kind,
        channel=channel,
        reference=reference,
        received_at=received_at or utc_now_iso(),
        subject=subject,
    )


@dataclass(frozen=True)
class Configured:
    """Which outside targets have their settings (a missing one is `not_configured`, never skipped)."""

    segment: bool
    kochava: bool
    warehouse: bool = True


def initial_targets(kind: str, covered: Covered, configured: Configured) -> dict[str, Target]:
    """Each target's first status for a request of `kind` that covers `covered`."""
    na: TargetStatus = "not_applicable"
    out: dict[str, Target] = {}
    for name in TARGETS:
        out[name] = Target()
    if kind != "delete":
        out["kseg_state"] = Target(status=na, reason=f"a {kind} keeps kseg's state; only processing stops")
        out["warehouse"] = Target(status=na, reason=f"a {kind} deletes no warehouse rows")
        out["kochava"] = Target(status=na, reason="Kochava's Data Subject Request API only deletes (scrubs)")
        out["kafka_logs"] = Target(status=na, reason=f"a {kind} deletes nothing")
    if out["warehouse"].status == "pending" and not configured.warehouse:
        out["warehouse"] = Target(
            status="not_configured",
            reason="no warehouse: KSEG_WAREHOUSE_URL is unset and no embedded warehouse runs",
        )
    if out["segment"].status == "pending":
        if not covered.user_ids:
            out["segment"] = Target(
                status=na,
                reason="no userId: Segment's workspace regulations take USER_ID only; a profile known only "
                "by an anonymousId cannot be deleted or suppressed there",
            )
        elif not configured.segment:
            out["segment"] = Target(status="not_configured", reason="SEGMENT_PUBLIC_API_TOKEN is not set")
    if out["kochava"].status == "pending":
        if not covered.typed_ids:
            out["kochava"] = Target(status=na, reason="kseg holds no device id for this subject")
        elif not configured.kochava:
            out["kochava"] = Target(
                status="not_configured",
                reason="KOCHAVA_ACCOUNT_ID, KOCHAVA_APP_ID and KOCHAVA_PRIVACY_API_KEY (or KOCHAVA_API_KEY) "
                "are needed for a scrub",
            )
    return out


def set_target(request: PrivacyRequest, name: str, target: Target, now: str | None = None) -> PrivacyRequest:
    """`request` with `name`'s new status, its history extended when the status or reason changed."""
    now = now or utc_now_iso()
    before = request.targets.get(name)
    target = target.model_copy(update={"updated_at": now})
    history = list(request.history)
    if before is None or (before.status, before.reason) != (target.status, target.reason):
        history.append(HistoryEntry(at=now, target=name, status=target.status, reason=target.reason))
    targets = {**request.targets, name: target}
    update: dict[str, Any] = {"targets": targets, "history": history}
    done = request.model_copy(update=update)
    if done.status == "done" and request.completed_at is None:
        update["completed_at"] = now
    return request.model_copy(update=update)


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling from `base`, at most `cap`."""
    return float(min(cap, base * (2 ** max(0, attempts - 1))))


def failed(target: Target, reason: str, now: float, base: float, cap: float) -> Target:
    """A failed attempt, retried after the backoff."""
    attempts = target.attempts + 1
    return target.model_copy(
        update={
            "status": "failed",
            "reason": reason,
            "attempts": attempts,
            "next_attempt_at": now + backoff(attempts, base, cap),
        }
    )


def due(target: Target, now: float) -> bool:
    """Whether the target needs an attempt now."""
    if target.status == "pending":
        return target.next_attempt_at is None or target.next_attempt_at <= now
    return target.status == "failed" and target.next_attempt_at is not None and target.next_attempt_at <= now


# ---- resolution -------------------------------------------------------------------------------------


@dataclass
class IndexEntry:
    """One device index record as resolution needs it (typed id → device keys, users, anonymousId)."""

    typed_id: str
    device_keys: list[str] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)
    anonymous_id: str | None = None
    email_hash: str | None = None


def entry_from_record(typed_id: str, record: dict[str, Any]) -> IndexEntry:
    users = list(record.get("user_ids") or [])
    for extra in (record.get("user_id"), record.get("anonymous_user_id")):
        if extra and extra not in users:
            users.append(extra)
    return IndexEntry(
        typed_id=typed_id,
        device_keys=list(record.get("device_keys") or []),
        user_ids=users,
        anonymous_id=record.get("anonymous_id"),
        email_hash=record.get("email_hash"),
    )


def device_key_forms(typed_id: str) -> list[str]:
    """The device keys the receiver may give a postback carrying this id (`app.records.device_key_of`)."""
    kind, _, value = typed_id.partition(":")
    if kind == "kochava_device_id":
        return [value]
    if kind == "adid":
        return [f"adid:{value}", f"gaid:{value}"]
    return [typed_id]


def resolve(subject: Subject, entries: list[IndexEntry]) -> Covered:
    """Exactly which ids a request covers: a userId → every device linked to it (all of each device's ids);
    a device id → that device only (its ids and device keys, not the user's other devices)."""
    by_id = {e.typed_id: e for e in entries}
    by_key: dict[str, list[IndexEntry]] = {}
    for e in entries:
        for key in e.device_keys:
            by_key.setdefault(key, []).append(e)
    seeds: list[IndexEntry] = []
    if subject.user_id:
        seeds += [e for e in entries if subject.user_id in e.user_ids]
    for typed in subject.devices.typed():
        seeds.append(by_id.get(typed) or IndexEntry(typed_id=typed))
    device_keys: list[str] = []
    for e in seeds:
        device_keys += [k for k in e.device_keys if k not in device_keys]
    for typed in subject.devices.typed():  # the device key a postback with only this id gets
        kind = typed.partition(":")[0]
        if kind == "kochava_device_id" and typed.partition(":")[2] not in device_keys:
            device_keys.append(typed.partition(":")[2])
    typed_ids: list[str] = []
    anonymous: list[str] = []
    users: list[str] = [subject.user_id] if subject.user_id else []
    emails: list[str] = [subject.email_hash] if subject.email_hash else []
    related = list(seeds) + [e for key in device_keys for e in by_key.get(key, [])]
    for e in related:
        if e.typed_id.startswith("sdk_anonymous_id:"):
            continue
        if e.typed_id not in typed_ids:
            typed_ids.append(e.typed_id)
        if e.anonymous_id and e.anonymous_id not in anonymous:
            anonymous.append(e.anonymous_id)
        if subject.user_id and e.email_hash and e.email_hash not in emails:
            emails.append(e.email_hash)
    for key in device_keys:
        own = f"kochava_device_id:{key}" if ":" not in key else key.replace("gaid:", "adid:", 1)
        if own not in typed_ids:
            typed_ids.append(own)
    if not subject.user_id:
        # A device-only request: the user stays (their other devices are not this request's subject).
        users = []
    members = (
        [f"user:{u}" for u in users] + [f"email:{h}" for h in emails] + [f"device:{k}" for k in device_keys]
    )
    return Covered(
        user_ids=users,
        device_keys=sorted(device_keys),
        typed_ids=sorted(typed_ids),
        anonymous_ids=sorted(anonymous),
        email_hashes=sorted(emails),
        members=members,
    )


def suppression_keys(covered: Covered) -> list[str]:
    """Every device key a postback of the subject can arrive under (the processing step's keys)."""
    keys: list[str] = list(covered.device_keys)
    for typed in covered.typed_ids:
        keys += [k for k in device_key_forms(typed) if k not in keys]
    return sorted(keys)


def index_keys(covered: Covered) -> list[str]:
    """The device index entries to erase: every typed id, and each SDK anonymousId's claim record."""
    return sorted(set(covered.typed_ids) | {f"sdk_anonymous_id:{a}" for a in covered.anonymous_ids})


def gone_by(received_at: str, retention_ms: list[int]) -> str | None:
    """When records written up to `received_at` have left every topic with time retention (ISO date)."""
    if not retention_ms:
        return None
    start = datetime.fromisoformat(received_at.replace("Z", "+00:00")).astimezone(UTC)
    return (
        (start + timedelta(milliseconds=max(retention_ms)))
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )
