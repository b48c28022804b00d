"""Mapping drift: what live postbacks carry that their profile does not expect. Kochava postbacks change
when an advertiser edits a postback template or Kochava adds a macro; kseg keeps mapping them, so without
this nothing would say so.

Three kinds, per profile and version: `unknown_key` (a key no field, `known_keys` or `drop_params` names),
`unknown_event` (an event name the profile does not name), `parse_failure` (a value a field could not
parse: the dead letter's reason and key). Each with a count, first and last seen and one redacted example
(never a raw device id or email). Pure: the worker folds its postbacks into a `DriftTracker` and publishes
its `DriftReport` to `mapping.reports`; `kseg mapping drift` adds the workers' reports up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel

from app.ids import sha256_hex
from app.mapping.profile import MappingProfile
from app.records import CanonicalEvent, DeadLetter, Record

DriftKind = Literal["unknown_key", "unknown_event", "parse_failure"]
DRIFT_KINDS: tuple[DriftKind, ...] = ("unknown_key", "unknown_event", "parse_failure")

#: Dead-letter reasons that mean "a field's value did not parse".
PARSE_REASONS = frozenset(
    {"unparseable_timestamp", "invalid_revenue", "invalid_currency", "invalid_products"}
)

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_ID_LIKE = re.compile(r"^[A-Za-z0-9_.:+/=-]{16,}$")
#: Longest example kept.
EXAMPLE_CHARS = 64


def redact(key: str, value: Any, profile: MappingProfile) -> str:
    """An example value safe to show and keep: emails hashed, id-shaped or credential-keyed values reduced
    to their length, the rest cut to `EXAMPLE_CHARS`."""
    text = value if isinstance(value, str) else repr(value)
    if profile.lookups.dropped(key):
        return f"<redacted, {len(text)} chars>"
    if _EMAIL.search(text):
        return "sha256:" + sha256_hex(text.strip().lower())[:16]
    if _ID_LIKE.match(text) and any(c.isdigit() for c in text):
        return f"<id-like, {len(text)} chars>"
    return text[:EXAMPLE_CHARS]


Observation = tuple[DriftKind, str, str]  # (kind, item, redacted example)


def observe(
    params: dict[str, Any], profile: MappingProfile, result: CanonicalEvent | DeadLetter
) -> list[Observation]:
    """What one postback shows of drift against the profile it was mapped with."""
    out: list[Observation] = []
    lookups = profile.lookups
    declared = lookups.declared_keys
    for key, value in params.items():
        low = key.lower()
        if low in declared or low == "profile":
            continue
        if lookups.dropped(key):
            continue
        out.append(("unknown_key", key[:128], redact(key, value, profile)))
    name = _event_name(params, profile)
    if name and not profile.names_event(name):
        out.append(("unknown_event", name[:128], name[:EXAMPLE_CHARS]))
    if isinstance(result, DeadLetter) and result.reason in PARSE_REASONS:
        key = result.error.split(":", 1)[0].strip() if ":" in result.error else ""
        value = _value(params, key)
        example = redact(key, value, profile) if value is not None else result.reason
        out.append(("parse_failure", f"{result.reason}:{key}" if key else result.reason, example))
    return out


def _event_name(params: dict[str, Any], profile: MappingProfile) -> str | None:
    for alias in profile.fields.event_name:
        value = _value(params, alias)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _value(params: dict[str, Any], key: str) -> Any:
    low = key.lower()
    return next((v for k, v in params.items() if k.lower() == low), None)


class DriftEntry(BaseModel):
    """One kind of drift of one profile version: how often, when first and last, and one example."""

    profile: str
    version: str
    kind: DriftKind
    item: str
    count: int
    first_seen: str
    last_seen: str
    example: str


class DriftReport(Record):
    """One worker run's drift so far (`mapping.reports`, key `drift/WORKER/RUN`: the newest is kept)."""

    kind: Literal["drift"] = "drift"
    worker: str
    run: str
    at: str
    entries: list[DriftEntry]


class DriftTracker:
    """A worker's drift since it started; `count(profile, version, kind)` feeds its metric."""

    #: Distinct items kept per (profile, version, kind): a flood of random keys must not grow memory.
    MAX_ITEMS = 200

    def __init__(self, count: Callable[[str, str, str], None] | None = None) -> None:
        self.entries: dict[tuple[str, str, str, str], DriftEntry] = {}
        self._per_kind: dict[tuple[str, str, str], int] = {}
        self._count = count

    def note(
        self,
        params: dict[str, Any],
        profile: MappingProfile,
        result: CanonicalEvent | DeadLetter | None,
        now: str,
    ) -> None:
        if result is None:
            return
        for kind, item, example in observe(params, profile, result):
            key = (profile.name, profile.version, kind, item)
            entry = self.entries.get(key)
            if entry is None:
                group = (profile.name, profile.version, kind)
                if self._per_kind.get(group, 0) >= self.MAX_ITEMS:
                    item = "(other)"
                    key = (profile.name, profile.version, kind, item)
                    entry = self.entries.get(key)
                else:
                    self._per_kind[group] = self._per_kind.get(group, 0) + 1
            if entry is None:
                entry = self.entries[key] = DriftEntry(
                    profile=profile.name,
                    version=profile.version,
                    kind=kind,
                    item=item,
                    count=0,
                    first_seen=now,
                    last_seen=now,
                    example=example,
                )
            entry.count += 1
            entry.last_seen = now
            if self._count is not None:
                self._count(profile.name, profile.version, kind)


def aggregate(reports: Iterable[DriftReport], profile: str | None = None) -> list[DriftEntry]:
    """Every worker's entries added up per (profile, version, kind, item): counts summed, first and last
    seen widened, the earliest example kept."""
    merged: dict[tuple[str, str, str, str], DriftEntry] = {}
    for report in reports:
        for entry in report.entries:
            if profile is not None and entry.profile != profile:
                continue
            key = (entry.profile, entry.version, entry.kind, entry.item)
            have = merged.get(key)
            if have is None:
                merged[key] = entry.model_copy()
                continue
            have.count += entry.count
            if entry.first_seen < have.first_seen:
                have.first_seen, have.example = entry.first_seen, entry.example
            have.last_seen = max(have.last_seen, entry.last_seen)
    return sorted(merged.values(), key=lambda e: (e.profile, e.version, e.kind, -e.count, e.item))
