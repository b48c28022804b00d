"""Shadow runs in the worker: a candidate profile version applied to live postbacks next to the active
one, sending nothing, so `kseg mapping shadow-report` can say what it would change before it goes live.

For each sampled postback of a profile with a shadow, `process_postback` runs a second time with the
shadow's `ProfileConfig` and the same prior device state and clock; its outcome is only compared
(`app.mapping.shadow`), never sent, and its device state never written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.mapping.shadow import ShadowSummary, differences, flatten, sampled
from app.pipeline.core import PostbackOutcome, ProfileConfig, process_postback
from app.records import AttributionProfile, RawPostback


def outputs_of(out: PostbackOutcome) -> dict[str, Any]:
    """One outcome as comparable paths: `dead_letter`, `segment.TYPE...` per call, `warehouse.COLUMN`."""
    if out.dead_letter is not None:
        return {"dead_letter": out.dead_letter.reason}
    paths: dict[str, Any] = {"dead_letter": None, "segment.calls": [c["type"] for c in out.calls]}
    seen: dict[str, int] = {}
    for call in out.calls:  # `segment.track` for an event's first track, `segment.track#2` for its second
        n = seen[call["type"]] = seen.get(call["type"], 0) + 1
        where = f"segment.{call['type']}" + (f"#{n}" if n > 1 else "")
        paths.update(flatten({k: v for k, v in call.items() if k != "type"}, where))
    paths.update(flatten(out.row or {}, "warehouse"))
    return paths


@dataclass
class ShadowRuns:
    """The shadow configs by profile name (set by the registry follower) and their comparisons."""

    rate: float = 1.0
    configs: dict[str, ProfileConfig] = field(default_factory=dict)
    summaries: dict[tuple[str, str, str], ShadowSummary] = field(default_factory=dict)

    def start(self, config: ProfileConfig) -> None:
        self.configs[config.profile.name] = config

    def stop(self, name: str) -> None:
        self.configs.pop(name, None)

    def compare(
        self,
        raw: RawPostback,
        before: AttributionProfile,
        device_key: str,
        active: ProfileConfig,
        out: PostbackOutcome,
        now: str,
    ) -> None:
        """Run the shadow of `active`'s profile (if any, and if sampled) on `raw` and count the difference."""
        shadow = self.configs.get(active.profile.name)
        if shadow is None or not sampled(raw.event_id, self.rate):
            return
        candidate = process_postback(raw, before, device_key, shadow, now)
        key = (active.profile.name, active.profile.version, shadow.profile.version)
        summary = self.summaries.get(key)
        if summary is None:
            summary = self.summaries[key] = ShadowSummary(
                profile=key[0], active_version=key[1], shadow_version=key[2]
            )
        found = differences(outputs_of(out), outputs_of(candidate))
        summary.add(raw.event_id, found, active.profile, shadow.profile)
