"""Reporting-currency conversion: the versioned rate file and `to_reporting` (used by lifecycle and digest).

Amounts in a currency without a rate are never converted with a guess: `to_reporting` answers None and the
caller keeps them apart (never summed as if they were the reporting currency).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

#: The rate file shipped with kseg (KSEG_CURRENCY_RATES_FILE overrides it).
DEFAULT_RATES_FILE = Path(__file__).parent / "rates.yaml"

_CODE_RE = re.compile(r"^[A-Z]{3}$")


class RatesError(ValueError):
    """A rate file that cannot be used; the message says which file and what to fix."""


@dataclass(frozen=True)
class Rates:
    """Value of one unit of each currency in `reporting_currency`, from one version of a rate file."""

    reporting_currency: str
    version: str
    per_unit: dict[str, Decimal] = field(default_factory=dict)
    source: str = ""

    def has(self, currency: str | None) -> bool:
        return currency is not None and currency.upper() in self.per_unit


def to_reporting(amount: float | Decimal | None, currency: str | None, rates: Rates) -> float | None:
    """`amount` of `currency` in the reporting currency (rounded to 6 places), or None without a rate.

    A missing currency means the amount is already in the reporting currency (postbacks that carry no
    currency are taken at face value; see README "Reporting currency").
    """
    if amount is None:
        return None
    code = (currency or rates.reporting_currency).strip().upper()
    rate = rates.per_unit.get(code)
    if rate is None:
        return None
    value = Decimal(str(amount)) * rate
    return float(round(value, 6)) + 0.0


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool):
        raise RatesError(f"{where}: a rate must be a number, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise RatesError(f"{where}: a rate must be a number, got {value!r}") from None
    if not number.is_finite() or number <= 0:
        raise RatesError(f"{where}: a rate must be a positive number, got {value!r}")
    return number


def parse_rates(data: Any, reporting_currency: str, source: str = "<rates>") -> Rates:
    """Validate a rate document ({version, base, rates: {CODE: value of 1 unit in base}}) and re-base it
    on `reporting_currency`."""
    if not isinstance(data, dict):
        raise RatesError(f"{source}: a rate file must be a YAML mapping with version, base and rates")
    version = data.get("version")
    if version is None or not str(version).strip():
        raise RatesError(f"{source}: `version` is missing; give every rate file a version label")
    base = str(data.get("base", "")).strip().upper()
    if not _CODE_RE.match(base):
        raise RatesError(f"{source}: `base` must be a 3-letter ISO 4217 code, got {data.get('base')!r}")
    raw = data.get("rates")
    if not isinstance(raw, dict) or not raw:
        raise RatesError(f"{source}: `rates` must map currency codes to the value of one unit in {base}")
    in_base: dict[str, Decimal] = {base: Decimal(1)}
    for code, value in raw.items():
        text = str(code).strip().upper()
        if not _CODE_RE.match(text):
            raise RatesError(f"{source}: {code!r} is not a 3-letter ISO 4217 code")
        in_base[text] = _decimal(value, f"{source}: rates.{text}")
    target = reporting_currency.strip().upper()
    if target not in in_base:
        raise RatesError(
            f"{source}: no rate for the reporting currency {target}; add it under `rates` "
            f"(value of one {target} in {base}) or set KSEG_REPORTING_CURRENCY to a listed currency"
        )
    divisor = in_base[target]
    per_unit = {code: value / divisor for code, value in in_base.items()}
    return Rates(reporting_currency=target, version=str(version).strip(), per_unit=per_unit, source=source)


def load_rates(path: Path | str | None, reporting_currency: str) -> Rates:
    """The rates of one file (the packaged one when `path` is None); `RatesError` saying what is wrong."""
    file = Path(path) if path else DEFAULT_RATES_FILE
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RatesError(f"{file}: cannot read the rate file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RatesError(f"{file}: YAML error: {exc}") from exc
    return parse_rates(data, reporting_currency, str(file))
