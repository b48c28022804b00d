"""What the lifecycle rules need besides the device's state: the profile's rules, rates, window, tiers."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.lifecycle.currency import Rates, load_rates
from app.lifecycle.rules import LifecycleRules
from app.sections import DEFAULT_LTV_TIERS, CurrencySettings, LifecycleSettings, parse_tiers


@dataclass(frozen=True)
class LifecycleConfig:
    """Everything `apply_lifecycle` reads that is not per-device state."""

    rates: Rates
    rules: LifecycleRules = field(default_factory=LifecycleRules)
    winback_days: float = 14.0
    tiers: tuple[tuple[str, float], ...] = tuple(parse_tiers(DEFAULT_LTV_TIERS))


def load_config_rates(settings: CurrencySettings) -> Rates:
    """The rates the process converts with (read once at start; `RatesError` says what to fix)."""
    return load_rates(settings.kseg_currency_rates_file, settings.kseg_reporting_currency)


def lifecycle_config(rules: LifecycleRules, settings: LifecycleSettings, rates: Rates) -> LifecycleConfig:
    """One profile's lifecycle rules with the process's settings and rates."""
    return LifecycleConfig(
        rates=rates,
        rules=rules,
        winback_days=settings.kseg_winback_suppress_days,
        tiers=tuple(parse_tiers(settings.kseg_ltv_tiers)),
    )
