"""What the lifecycle rules need besides the device's state: the profile's rules, rates, window, tiers."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.lifecycle.currency import Rates, load_rates
from app.lifecycle.rules import LifecycleRules
from app.sections import DEFAULT_LTV_TIERS, CurrencySettings, parse_tiers


@dataclass(frozen=True)
class LifecycleConfig:
    """Everything `apply_lifecycle` reads that is not per-device state (built once per mapping profile,
    when the profiles are loaded: `app.pipeline.core.ProfileConfigs`)."""

    rates: Rates
    rules: LifecycleRules = field(default_factory=LifecycleRules)
    winback_days: float = 14.0
    tiers: tuple[tuple[str, float], ...] = tuple(parse_tiers(DEFAULT_LTV_TIERS))


def load_config_rates(settings: CurrencySettings) -> Rates:
    """The rates the process converts with (read once at start; `RatesError` says what to fix)."""
    return load_rates(settings.kseg_currency_rates_file, settings.kseg_reporting_currency)
