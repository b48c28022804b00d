"""The mapping studio: one postback through two profile versions, side by side, and the difference.

Both sides run `app.pipeline.preview.try_postback` (the worker's own processing core, as `kseg mapping
try` does) for a device seen for the first time. A side is a loaded profile or a candidate edited in the
page; a candidate is checked as `kseg mapping check` checks a file, so its problems carry line numbers.
`versions_of` is the one place that says which versions exist: the mapping registry's published ones
(active, shadow, older) and the local profile files that are not published.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.mapping.preview import parse_try_input
from app.mapping.profile import (
    MappingProfile,
    ProfileProblem,
    ProfileRegistry,
    check_profile_file,
    load_profile_file,
    parse_profile_text,
)
from app.mapping.registry import LocalProfile, ProfileVersion, RegistryState, local_profiles
from app.pipeline.preview import postback_of, try_postback
from app.pipeline.steps import StepConfig
from app.records import AttributionProfile, device_key_of, utc_now_iso
from app.sections import PipelineSettings


@dataclass(frozen=True)
class Version:
    """One profile version the studio can run: `key` names it in forms (`name@version`); `label` says
    where it stands (active, shadow, published, local file)."""

    key: str
    profile: MappingProfile
    text: str
    label: str = ""

    @property
    def title(self) -> str:
        return f"{self.key} · {self.label}" if self.label else self.key


def versions_of(state: RegistryState, local: dict[str, LocalProfile]) -> list[Version]:
    """Every version the studio offers, by profile name: the registry's published versions (the active one
    first, then the shadow, then the newest), then each local file whose version is not published (what
    workers run for a name the registry does not know yet). Versions whose YAML no longer parses are left
    out."""
    out: list[Version] = []
    for name in sorted(state.versions.keys() | local.keys()):
        published = state.versions.get(name, {})
        active = state.active_version(name)
        shadow = state.shadow_version(name)

        newest_first = sorted(published.values(), key=lambda v: v.published_at, reverse=True)
        order = {"active": 0, "shadow": 1}
        for version in sorted(newest_first, key=lambda v: order.get(_standing(v, active, shadow), 2)):
            profile, _ = parse_profile_text(version.yaml, f"registry:{name}/{version.version}")
            if profile is None:
                continue
            label = _standing(version, active, shadow)
            out.append(Version(f"{name}@{version.version}", profile, version.yaml, label))
        seeded = local.get(name)
        if seeded is not None and seeded.profile.version not in published:
            label = "local file" if published else "local file (workers run it)"
            out.append(Version(f"{name}@{seeded.profile.version}", seeded.profile, seeded.text, label))
    return out


def _standing(v: ProfileVersion, active: ProfileVersion | None, shadow: ProfileVersion | None) -> str:
    if active is not None and v.version == active.version:
        return "active"
    if shadow is not None and v.version == shadow.version:
        return "shadow"
    if v.author == "seed":  # written by the first publish: the local file the name ran with before
        return "local file (seeded)"
    return f"published {v.published_at[:10]}"


def local_versions(settings: PipelineSettings) -> list[Version]:
    """The local profile files alone (built-in, then KSEG_MAPPING_DIR): what the studio offers when the
    registry cannot be read."""
    return versions_of(RegistryState(), local_profiles(settings.kseg_mapping_dir))


def check_candidate(text: str) -> tuple[MappingProfile | None, list[ProfileProblem]]:
    """A profile edited in the page, checked as `kseg mapping check` checks a file (named `candidate.yaml`
    in the problems, with their line numbers)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidate.yaml"
        path.write_text(text, encoding="utf-8")
        problems = check_profile_file(path)
        if problems:
            return None, [ProfileProblem("candidate.yaml", p.line, p.message) for p in problems]
        return load_profile_file(path), []


def run(settings: PipelineSettings, params: dict[str, Any], profile: MappingProfile) -> dict[str, Any]:
    """What `profile` makes of `params` for a first-seen device: Segment calls and warehouse row, or the
    dead letter."""
    config = StepConfig(settings, ProfileRegistry({profile.name: profile}))
    now = utc_now_iso()
    raw = postback_of(params, profile.name, now)
    raw = raw.model_copy(update={"profile": profile.name})
    key = device_key_of(raw.params) or ""
    return try_postback(raw, AttributionProfile(), key, config.profile_configs, now)


def parse_input(text: str) -> dict[str, Any]:
    """A pasted query string, URL or JSON object as postback parameters (`ValueError` saying why not)."""
    return parse_try_input(text)


def _flat(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k in value:
            _flat(value[k], f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _flat(item, f"{path}[{i}]", out)
    else:
        out[path] = value


#: Fields that differ on every run whatever the profile (the wall clock): left out of the difference.
VOLATILE = ("timestamp", "receivedAt", "sentAt", "received_at", "processed_at", "loaded_at")


def difference(left: dict[str, Any], right: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(path, left value, right value) for every leaf that differs, in path order; `_missing_` where a
    side has no such leaf. Wall-clock fields are skipped."""
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flat(left, "", a)
    _flat(right, "", b)
    out = []
    for path in sorted(a.keys() | b.keys()):
        if path.rsplit(".", 1)[-1] in VOLATILE:
            continue
        va, vb = a.get(path, "_missing_"), b.get(path, "_missing_")
        if va != vb:
            out.append((path, va, vb))
    return out
