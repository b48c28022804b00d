"""Shadow comparisons' records and rules (pure): what a candidate profile version would have produced
differently from the active one, path by path (`app.pipeline.shadow` runs both on live postbacks).

Paths: each Segment call's fields (`segment.track.event`, `segment.track.properties.level`), each
warehouse column (`warehouse.event_name`), and `dead_letter`. Fields that differ by construction (the
version) or by the clock (`VOLATILE`) are not differences.
"""

from __future__ import annotations

import zlib
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.mapping.drift import DriftReport, redact
from app.mapping.profile import MappingProfile
from app.records import Record

__all__ = ["DriftReport", "MappingReport", "ShadowReport", "ShadowSummary"]

#: Keys whose values differ between the two runs by construction (the version) or by the clock.
VOLATILE = frozenset({"profile_version", "received_at", "receivedAt", "sentAt", "processed_at", "loaded_at"})
#: Examples kept per differing path.
MAX_EXAMPLES = 3


class PathExample(BaseModel):
    event_id: str
    active: str
    shadow: str


class PathDiff(BaseModel):
    path: str
    count: int
    examples: list[PathExample]


class ShadowSummary(BaseModel):
    """One shadow run's comparison so far, for one (profile, active version, shadow version)."""

    profile: str
    active_version: str
    shadow_version: str
    compared: int = 0
    identical: int = 0
    differing: int = 0
    paths: dict[str, PathDiff] = Field(default_factory=dict)

    def add(
        self,
        event_id: str,
        found: dict[str, tuple[Any, Any]],
        active: MappingProfile,
        shadow: MappingProfile,
    ) -> None:
        """Count one compared event and its differing paths (`differences`), with redacted examples."""
        self.compared += 1
        if not found:
            self.identical += 1
            return
        self.differing += 1
        for path, (was, would) in found.items():
            diff = self.paths.get(path)
            if diff is None:
                diff = self.paths[path] = PathDiff(path=path, count=0, examples=[])
            diff.count += 1
            if len(diff.examples) < MAX_EXAMPLES:
                leaf = path.rsplit(".", 1)[-1]
                diff.examples.append(
                    PathExample(
                        event_id=event_id,
                        active=redact(leaf, was, active),
                        shadow=redact(leaf, would, shadow),
                    )
                )

    def merge(self, other: ShadowSummary) -> None:
        self.compared += other.compared
        self.identical += other.identical
        self.differing += other.differing
        for path, diff in other.paths.items():
            have = self.paths.get(path)
            if have is None:
                self.paths[path] = diff.model_copy(deep=True)
            else:
                have.count += diff.count
                have.examples = (have.examples + diff.examples)[:MAX_EXAMPLES]


class ShadowReport(Record):
    """One worker run's shadow comparisons (`mapping.reports`, key `shadow/WORKER/RUN`)."""

    kind: Literal["shadow"] = "shadow"
    worker: str
    run: str
    at: str
    runs: list[ShadowSummary]


MappingReport = DriftReport | ShadowReport


def flatten(value: Any, prefix: str) -> dict[str, Any]:
    """Leaves of nested dicts by dotted path (lists are one leaf: a product list differs as a whole)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            if key not in VOLATILE:
                out.update(flatten(inner, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def differences(active: dict[str, Any], shadow: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Paths whose values differ between two outputs (`app.pipeline.shadow.outputs_of`)."""
    paths = sorted(active.keys() | shadow.keys())
    return {p: (active.get(p), shadow.get(p)) for p in paths if active.get(p) != shadow.get(p)}


def sampled(event_id: str, rate: float) -> bool:
    """The same answer on every worker and replay for one event (crc32 of its id against the rate)."""
    return rate >= 1.0 or zlib.crc32(event_id.encode()) % 10_000 < rate * 10_000
