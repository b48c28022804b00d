"""kseg's own audiences, defined in configuration: a name, a key and a condition on one device signal.

The signals are the lifecycle issue's device-profile fields (`ad_suppressed`, `ltv_tier`). The file is read
by `load_own_audiences(path)`, never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, model_validator

DEFAULT_FILE = Path(__file__).resolve().parent / "audiences.yaml"
#: Device-profile signals an own audience may test (copied onto `DeviceFacts.traits`).
SIGNALS = ("ad_suppressed", "ltv_tier")


class OwnAudience(BaseModel):
    key: str = Field(min_length=1)
    id: str = Field(min_length=1)
    name: str = ""
    trait: str = Field(min_length=1)
    equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")

    @model_validator(mode="after")
    def _one_condition(self) -> OwnAudience:
        if (self.equals is None) == (self.in_ is None):
            raise ValueError(f"audience {self.key!r}: give exactly one of `equals` or `in`")
        if self.trait not in SIGNALS:
            raise ValueError(f"audience {self.key!r}: trait must be one of {', '.join(SIGNALS)}")
        return self

    def matches(self, traits: dict[str, Any]) -> bool:
        value = traits.get(self.trait)
        if value is None:
            return False
        return value == self.equals if self.in_ is None else value in self.in_


def load_own_audiences(path: Path | None = None) -> list[OwnAudience]:
    """The audiences of `path` (default: the packaged file); a clear error names the bad entry."""
    source = path or DEFAULT_FILE
    data = yaml.safe_load(source.read_text()) or {}
    entries = data.get("audiences") or []
    if not isinstance(entries, list):
        raise ValueError(f"{source}: `audiences` must be a list")
    audiences = [OwnAudience.model_validate(entry) for entry in entries]
    keys = [a.key for a in audiences]
    if len(keys) != len(set(keys)):
        raise ValueError(f"{source}: audience keys must be unique")
    return audiences
