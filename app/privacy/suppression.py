"""The suppression list at the processing step: a deleted or suppressed subject's postbacks and link
notices are dropped (counted by reason, no dead letter: it would carry the ids), so nothing rebuilds
the profile. The list holds only SHA-256 hashes of device keys, in the profiles table next to the
device's own state (same key partition), written by the processing agent when the privacy agent's
command for that key arrives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.ids import sha256_hex
from app.privacy.records import PrivacyErase
from app.records import utc_now_iso

#: Prefix of a suppression mark's key in the profiles table (never a device key: those have no `privacy:`).
MARK_PREFIX = "privacy:"


def mark_key(device_key: str) -> str:
    return MARK_PREFIX + sha256_hex(device_key)


@dataclass
class PrivacyBatch:
    """A micro-batch's privacy writes: suppression marks set (a dict) or lifted (None), profiles erased.
    Reads within the batch see them first."""

    marks: dict[str, tuple[Any, dict[str, Any] | None]] = field(default_factory=dict)
    erased: dict[str, Any] = field(default_factory=dict)

    def mark(self, stored: Callable[[str], Any], device_key: str) -> dict[str, Any] | None:
        key = mark_key(device_key)
        if key in self.marks:
            return self.marks[key][1]
        found = stored(key)
        return found if isinstance(found, dict) else None

    def apply(self, event: Any, command: PrivacyErase) -> None:
        """Hold what `command` does to its key: erase its profile and/or set or lift its mark."""
        key = mark_key(command.key)
        if command.action == "unsuppress":
            self.marks[key] = (event, None)
            return
        reason = "deleted" if command.action == "erase" else "suppressed"
        self.marks[key] = (event, {"reason": reason, "request_id": command.request_id, "at": utc_now_iso()})
        if command.action == "erase":
            self.erased[command.key] = event

    def writes(self) -> list[tuple[Any, str, dict[str, Any] | None]]:
        """(event, table key, value or None for a tombstone), erasures first."""
        out: list[tuple[Any, str, dict[str, Any] | None]] = [(e, k, None) for k, e in self.erased.items()]
        out += [(e, k, v) for k, (e, v) in self.marks.items()]
        return out


def suppressed_reason(batch: PrivacyBatch, stored: Callable[[str], Any], device_key: str) -> str | None:
    """Why records of `device_key` are dropped (`deleted`, `suppressed`), or None when they are not."""
    if not device_key:
        return None
    mark = batch.mark(stored, device_key)
    return str(mark.get("reason", "suppressed")) if mark else None
