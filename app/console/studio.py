"""The mapping studio: one postback through two profile versions, side by side, and the difference.

Both sides run `app.pipeline.preview.try_postback` (the worker's own processing core, as `kseg mapping
try` does) for a device seen for the first time. A side is a loaded profile or a candidate edited in the
page; a candidate is checked as `kseg mapping check` checks a file, so its problems carry line numbers.
`loaded_versions` is the one place that says which versions exist: point it at a live registry when there
is one.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.mapping.preview import parse_try_input
from app.mapping.profile import (
    BUILTIN_PROFILE_DIR,
    MappingProfile,
    ProfileError,
    ProfileProblem,
    ProfileRegistry,
    check_profile_file,
    load_profile_file,
)
from app.pipeline.preview import postback_of, try_postback
from app.pipeline.steps import StepConfig
from app.records import AttributionProfile, device_key_of, utc_now_iso
from app.sections import PipelineSettings


@dataclass(frozen=True)
class Version:
    """One profile version the studio can run: `key` names it in forms (`name@version`)."""

    key: str
    profile: MappingProfile
    text: str


def _source(name: str, mapping_dir: Path | None) -> str:
    for directory in [*([Path(mapping_dir)] if mapping_dir else []), BUILTIN_PROFILE_DIR]:
        for file in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            try:
                if load_profile_file(file).name == name:
                    return file.read_text(encoding="utf-8")
            except ProfileError:
                continue
    return ""


def loaded_versions(settings: PipelineSettings) -> list[Version]:
    """The profiles the worker loads (built-in, then KSEG_MAPPING_DIR), each with its YAML text."""
    registry = ProfileRegistry.load(settings.kseg_mapping_dir)
    out = []
    for name in registry.names():
        profile = registry.get(name)
        out.append(Version(f"{name}@{profile.version}", profile, _source(name, settings.kseg_mapping_dir)))
    return out


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
