"""What the lifecycle rules need besides the device's state: the profile's rules, rates, window, tiers."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.config import Settings
from app.lifecycle.currency import Rates, load_rates
from app.lifecycle.rules import LifecycleRules

#: Default `KSEG_LTV_TIERS`: tier name = lowest lifetime revenue (reporting currency) of the tier.
DEFAULT_LTV_TIERS = "low=0,medium=20,high=100"


def parse_tiers(text: str) -> list[tuple[str, float]]:
    """`low=0,medium=20,high=100` → [(name, threshold)] ascending; `ValueError` saying what is wrong."""
    tiers: list[tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name or " " in name:
            raise ValueError(f"tier {part!r} must be name=threshold, e.g. high=100")
        try:
            threshold = float(value)
        except ValueError:
            raise ValueError(f"tier {name!r}: threshold {value.strip()!r} is not a number") from None
        if threshold < 0 or threshold != threshold:
            raise ValueError(f"tier {name!r}: threshold must be a number >= 0")
        tiers.append((name, threshold))
    if not tiers:
        raise ValueError("at least one tier is needed, e.g. low=0,medium=20,high=100")
    names = [n for n, _ in tiers]
    if len(set(names)) != len(names):
        raise ValueError("tier names must be unique")
    thresholds = [t for _, t in tiers]
    if thresholds != sorted(thresholds) or len(set(thresholds)) != len(thresholds):
        raise ValueError("tier thresholds must strictly increase from left to right")
    return tiers


@dataclass(frozen=True)
class LifecycleConfig:
    """Everything `apply_lifecycle` reads that is not per-device state."""

    rates: Rates
    rules: LifecycleRules = field(default_factory=LifecycleRules)
    winback_days: float = 14.0
    tiers: tuple[tuple[str, float], ...] = tuple(parse_tiers(DEFAULT_LTV_TIERS))


def load_config_rates(settings: Settings) -> Rates:
    """The rates the process converts with (read once at start; `RatesError` says what to fix)."""
    return load_rates(settings.kseg_currency_rates_file, settings.kseg_reporting_currency)


def lifecycle_config(rules: LifecycleRules, settings: Settings, rates: Rates) -> LifecycleConfig:
    """One profile's lifecycle rules with the process's settings and rates."""
    return LifecycleConfig(
        rates=rates,
        rules=rules,
        winback_days=settings.kseg_winback_suppress_days,
        tiers=tuple(parse_tiers(settings.kseg_ltv_tiers)),
    )
