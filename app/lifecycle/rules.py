"""The lifecycle part of a mapping profile: channel table, organic and re-engagement markers, conversions.

It lives in the profile (versioned with it, changed without code); `app.mapping.profile` embeds it as the
`lifecycle:` section. Kochava does not document its organic / re-attribution markers as postback values
(docs/reference.md#kochava-event-kinds), so every marker is data here, with kseg's defaults.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ORGANIC = "organic"

#: Network values that mean "no attributed network" (Kochava reports unattributed traffic as organic).
DEFAULT_ORGANIC_NETWORKS = ("organic", "unattributed", "unattributed*", "none", "direct", "(none)")
#: attribution_type values that make an event re-engagement class.
DEFAULT_REENGAGEMENT_TYPES = (
    "reengagement",
    "re-engagement",
    "re_engagement",
    "reattribution",
    "re-attribution",
    "re_attribution",
    "retargeting",
)


def _lower_list(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        return [str(v).strip().lower() for v in value]
    return value


class ChannelRule(BaseModel):
    """Network-name patterns (shell-style, case-insensitive) that mean one channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: str
    paid: bool = True
    networks: list[str]

    @field_validator("networks", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return _lower_list(value)

    @field_validator("channel")
    @classmethod
    def _channel_shape(cls, value: str) -> str:
        text = value.strip().lower()
        if not text or len(text) > 64 or " " in text:
            raise ValueError("channel must be a short name without spaces, e.g. paid_social")
        return text


class LifecycleRules(BaseModel):
    """The `lifecycle:` section of a mapping profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: list[ChannelRule] = Field(default_factory=list)
    #: Channel of an attributed network no rule matches (paid: an attributed network is bought traffic).
    unmatched_channel: str = "unclassified"
    unmatched_paid: bool = True
    organic_networks: list[str] = Field(default_factory=lambda: list(DEFAULT_ORGANIC_NETWORKS))
    reengagement_types: list[str] = Field(default_factory=lambda: list(DEFAULT_REENGAGEMENT_TYPES))
    #: The first purchase is a conversion too (ad suppression, `converted` stage).
    first_purchase_converts: bool = True

    @field_validator("organic_networks", "reengagement_types", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return _lower_list(value)

    @model_validator(mode="after")
    def _no_organic_channel_rule(self) -> LifecycleRules:
        for rule in self.channels:
            if rule.channel == ORGANIC and rule.paid:
                raise ValueError("the organic channel cannot be paid")
        return self


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def is_organic(network: str | None, rules: LifecycleRules) -> bool:
    """No attributed network, or one of Kochava's organic / unattributed markers."""
    name = (network or "").strip().lower()
    return not name or _matches(name, rules.organic_networks)


def channel_of(network: str | None, rules: LifecycleRules) -> tuple[str, bool]:
    """(channel, paid) of an attributed network name: the first matching rule, organic for no network.

    Remembered per rules and network name (a profile's rules are frozen, and a campaign stream repeats a
    handful of networks): the patterns are matched once per name, not once per postback."""
    name = (network or "").strip().lower()
    hit = _CHANNELS.get(id(rules))
    if hit is None or hit[0] is not rules:
        if len(_CHANNELS) >= _CHANNELS_MAX:
            _CHANNELS.clear()
        hit = _CHANNELS[id(rules)] = (rules, {})
    known = hit[1]
    found = known.get(name)
    if found is None:
        found = _channel_of(name, rules)
        if len(known) >= _NAMES_MAX:  # a flood of distinct names: start over rather than grow
            known.clear()
        known[name] = found
    return found


#: id(rules) -> (rules, network name -> (channel, paid)); holding the rules keeps the id from being reused.
_CHANNELS: dict[int, tuple[LifecycleRules, dict[str, tuple[str, bool]]]] = {}
_CHANNELS_MAX = 256
_NAMES_MAX = 4096


def _channel_of(name: str, rules: LifecycleRules) -> tuple[str, bool]:
    if is_organic(name, rules):
        return ORGANIC, False
    for rule in rules.channels:
        if _matches(name, rule.networks):
            return rule.channel, rule.paid
    return rules.unmatched_channel, rules.unmatched_paid


def is_reengagement_type(attribution_type: str | None, rules: LifecycleRules) -> bool:
    return bool(attribution_type) and (attribution_type or "").strip().lower() in rules.reengagement_types
