"""The mapping registry's records and rules: every published version of every profile, and which one is
active, as the compacted `mapping.registry` topic holds them (docs/mapping.md#the-mapping-registry).

Keys are chosen so compaction keeps what matters: one key per (profile, version) keeps every version's
text forever, and one key per profile for its active pointer keeps only the newest pointer. Everything
here is pure: the Kafka reads and writes are `app.pipeline.registry`'s.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson
from pydantic import ValidationError

from app.mapping.profile import (
    BUILTIN_PROFILE_DIR,
    MappingProfile,
    ProfileProblem,
    line_of_key,
    parse_profile_text,
    profile_files,
)
from app.records import Record

log = logging.getLogger(__name__)


class ProfileVersion(Record):
    """One published version of one profile: its YAML text exactly as published, and who and why."""

    kind: Literal["version"] = "version"
    name: str
    version: str
    yaml: str
    sha256: str
    published_at: str
    author: str
    note: str = ""


class ProfilePointer(Record):
    """Which version of a profile is active (or runs as shadow); `version` None: none (a stopped shadow)."""

    kind: Literal["active", "shadow"]
    name: str
    version: str | None
    at: str
    author: str
    note: str = ""


RegistryRecord = ProfileVersion | ProfilePointer


def content_hash(text: str) -> str:
    """sha256 of the YAML text: two publishes of one version must be byte-for-byte the same file."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_key(record: RegistryRecord) -> bytes:
    """`version/NAME/VERSION` (kept per version) or `active/NAME`, `shadow/NAME` (newest kept).
    Names cannot hold `/` (`MappingProfile`), so the key splits one way."""
    if isinstance(record, ProfileVersion):
        return f"version/{record.name}/{record.version}".encode()
    return f"{record.kind}/{record.name}".encode()


def decode_record(value: bytes | None) -> RegistryRecord | None:
    """The record in a registry value, or None (a tombstone, or a value no kseg wrote: logged, skipped)."""
    if not value:
        return None
    try:
        data = orjson.loads(value)
        if isinstance(data, dict) and data.get("kind") == "version":
            return ProfileVersion.model_validate(data)
        return ProfilePointer.model_validate(data)
    except (orjson.JSONDecodeError, ValidationError) as exc:
        log.warning("mapping registry: skipping a record that is not a registry record: %s", exc)
        return None


@dataclass
class RegistryState:
    """The registry folded from its records in log order (one partition: one order for everyone)."""

    versions: dict[str, dict[str, ProfileVersion]] = field(default_factory=dict)
    active: dict[str, ProfilePointer] = field(default_factory=dict)
    shadow: dict[str, ProfilePointer] = field(default_factory=dict)

    def apply(self, record: RegistryRecord) -> None:
        if isinstance(record, ProfileVersion):
            self.versions.setdefault(record.name, {})[record.version] = record
        elif record.kind == "active":
            self.active[record.name] = record
        else:
            self.shadow[record.name] = record

    def active_version(self, name: str) -> ProfileVersion | None:
        """The published version now active for `name` (None: not published, the local file rules)."""
        pointer = self.active.get(name)
        if pointer is None or pointer.version is None:
            return None
        return self.versions.get(name, {}).get(pointer.version)

    def shadow_version(self, name: str) -> ProfileVersion | None:
        pointer = self.shadow.get(name)
        if pointer is None or pointer.version is None:
            return None
        return self.versions.get(name, {}).get(pointer.version)


@dataclass(frozen=True)
class LocalProfile:
    """A profile file this process has (packaged, or from KSEG_MAPPING_DIR): the registry's seed."""

    path: str
    text: str
    profile: MappingProfile


def local_profiles(extra_dir: Path | None) -> dict[str, LocalProfile]:
    """Packaged profiles, then KSEG_MAPPING_DIR's (which override by name), as `ProfileRegistry.load`
    reads them; files that do not load are skipped here (`ProfileRegistry.load` reports them)."""
    out: dict[str, LocalProfile] = {}
    for directory in [BUILTIN_PROFILE_DIR, *([Path(extra_dir)] if extra_dir else [])]:
        for file in profile_files(directory) if directory.is_dir() else []:
            text = file.read_text(encoding="utf-8")
            profile, _ = parse_profile_text(text, str(file))
            if profile is not None:
                out[profile.name] = LocalProfile(str(file), text, profile)
    return out


def publish_problems(
    path: str, text: str, candidate: MappingProfile, state: RegistryState
) -> list[ProfileProblem]:
    """Why the registry refuses `candidate` (beyond the checks of `check`): the same version already
    published with other content. A version is a label operators and outputs rely on: it names one text."""
    existing = state.versions.get(candidate.name, {}).get(candidate.version)
    if existing is None or existing.sha256 == content_hash(text):
        return []
    return [
        ProfileProblem(
            path,
            line_of_key(text, "version"),
            f"version {candidate.version!r} of {candidate.name!r} is already published with different "
            f"content ({existing.published_at} by {existing.author}, sha256 {existing.sha256[:12]}); "
            "give this file a new version",
        )
    ]
