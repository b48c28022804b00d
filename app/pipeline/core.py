"""The processing core: one postback and its device's state in, everything the worker sends for it out.

`process_postback` is a pure function (no faust, no settings object, no clock): mapping, attribution,
identity (one call, after attribution), lifecycle, audience facts, the Segment calls, the warehouse row,
the device-index updates and how many index answers the device waits for. The processing agent
(`app.pipeline.steps`) adds only the micro-batch, dedupe and parking around it; `kseg mapping try`
(`app.pipeline.preview`) runs exactly this function, so what it prints is what the worker sends.

Per-profile configuration (`ProfileConfig`: the mapping profile, its lifecycle config with the rates and
LTV tiers, the identity rules) is built once, when the profiles are loaded (`ProfileConfigs.build`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.attribution import apply_event
from app.audiences.devices import device_facts, with_att
from app.audiences.records import DeviceFacts
from app.identity.records import DeviceIndexUpdate
from app.identity.resolver import IdentityRules, identify_device
from app.lifecycle.config import LifecycleConfig
from app.lifecycle.currency import Rates
from app.lifecycle.signals import StageChange
from app.mapping.mapper import dead_letter_unknown_profile, map_postback
from app.mapping.outputs import attributed_outputs
from app.mapping.profile import MappingProfile, ProfileRegistry
from app.records import AttributionProfile, CanonicalEvent, DeadLetter, RawPostback


@dataclass(frozen=True)
class ProfileConfig:
    """One mapping profile (version) with everything its postbacks need that is not device state."""

    profile: MappingProfile
    lifecycle: LifecycleConfig
    identity: IdentityRules


def profile_config(
    profile: MappingProfile,
    identity: IdentityRules,
    rates: Rates,
    *,
    winback_days: float,
    tiers: tuple[tuple[str, float], ...],
) -> ProfileConfig:
    """One profile version's `ProfileConfig`, built once per version (never per event)."""
    lifecycle = LifecycleConfig(rates, profile.lifecycle, winback_days=winback_days, tiers=tiers)
    return ProfileConfig(profile, lifecycle, identity)


@dataclass(frozen=True)
class ProfileConfigs:
    """Every loaded profile's `ProfileConfig`, by name, and the profile of postbacks that name none."""

    configs: dict[str, ProfileConfig]
    default_profile: str

    @classmethod
    def build(
        cls,
        registry: ProfileRegistry,
        identity: IdentityRules,
        rates: Rates,
        *,
        winback_days: float,
        tiers: tuple[tuple[str, float], ...],
        default_profile: str,
    ) -> ProfileConfigs:
        """One `ProfileConfig` per profile of `registry` (plain values: the caller reads the settings)."""
        configs = {
            name: profile_config(registry.get(name), identity, rates, winback_days=winback_days, tiers=tiers)
            for name in registry.names()
        }
        return cls(configs, default_profile)

    def install(self, config: ProfileConfig) -> ProfileConfig | None:
        """Make `config` its profile's active one (a registry publish or rollback); returns the one it
        replaced. The worker calls it between events, so each event sees one version throughout."""
        before = self.configs.get(config.profile.name)
        self.configs[config.profile.name] = config
        return before

    def for_postback(self, raw: RawPostback) -> ProfileConfig | DeadLetter:
        """The config of the profile the postback names (else the default one), or its dead letter."""
        name = raw.profile or self.default_profile
        config = self.configs.get(name)
        if config is None:
            return dead_letter_unknown_profile(raw, name)
        return config


@dataclass(frozen=True)
class PostbackOutcome:
    """Everything one postback produces for its device (`dead_letter` set: only that, state unchanged)."""

    state: AttributionProfile
    event: CanonicalEvent | None = None
    dead_letter: DeadLetter | None = None
    #: Segment calls in send order (identify first), one outbox record.
    calls: list[dict[str, Any]] = field(default_factory=list)
    row: dict[str, Any] | None = None
    index_updates: list[DeviceIndexUpdate] = field(default_factory=list)
    audience_facts: list[DeviceFacts] = field(default_factory=list)
    #: Index answers a reinstall waits for before the device's next postbacks run (also on `state`).
    awaiting_index_answers: int = 0
    #: `calls[0]` is an identify carrying only lifetime revenue and purchase count (coalescable).
    ride_along: bool = False
    change: StageChange | None = None
    revenue_reporting: float | None = None
    unconverted_currency: str | None = None


def process_postback(
    raw: RawPostback, state: AttributionProfile, device_key: str, config: ProfileConfig, now: str
) -> PostbackOutcome:
    """What the worker sends for `raw` on device `device_key` whose profile is `state` (pure).

    `now` stamps the audience facts (the audiences agent orders a member's changes by it).
    """
    mapped = map_postback(raw, config.profile, config.identity.namespace)
    if isinstance(mapped, DeadLetter):
        return PostbackOutcome(state=state, dead_letter=mapped)
    attributed, first_install = apply_event(state, mapped)
    who = identify_device(mapped, state, attributed, device_key, config.identity)
    out = attributed_outputs(mapped, who.identity, who.state, first_install, config.lifecycle)
    new = with_att(out.profile, mapped)
    answers = sum(1 for u in who.index_updates if u.kind == "observed" and u.reprocess_for)
    awaiting = 0
    if mapped.kind == "reinstall" and new.first_touch is None and answers:
        # Wait for the index to say whether this reinstall inherits its original install's first touch,
        # so the device's next purchases carry the install campaign (see docs/identity.md).
        awaiting = answers
        new = new.model_copy(update={"awaiting_index_answers": answers})
    return PostbackOutcome(
        state=new,
        event=mapped,
        calls=out.calls,
        row=out.row,
        index_updates=who.index_updates,
        audience_facts=device_facts(state, new, device_key, now),
        awaiting_index_answers=awaiting,
        ride_along=out.ride_along,
        change=out.change,
        revenue_reporting=out.revenue_reporting,
        unconverted_currency=out.unconverted_currency,
    )
