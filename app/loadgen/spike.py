"""Spike specs (`10x@30s+30s`) and the open-loop send schedule they shape.

Why: Kochava's delivery delay (up to 10 min) releases held postbacks in bursts
(docs/reference.md#kochava-postbacks), so load runs need a rate step at a known time. The schedule is a
closed-form cumulative count, which lets the runner pace by the clock (open loop) without accumulating
drift.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NUM = r"(\d+(?:\.\d+)?)"
_SPEC_RE = re.compile(rf"^\s*{_NUM}\s*x\s*@\s*{_NUM}\s*(ms|s|m)?\s*\+\s*{_NUM}\s*(ms|s|m)?\s*$", re.I)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}


class SpikeSpecError(ValueError):
    """A spike spec that cannot be parsed or makes no sense."""


@dataclass(frozen=True, slots=True)
class SpikeSpec:
    """Multiply the base rate by `multiplier` from `start` for `length` seconds."""

    multiplier: float
    start: float
    length: float

    @property
    def end(self) -> float:
        return self.start + self.length

    def __str__(self) -> str:
        return f"{self.multiplier:g}x@{self.start:g}s+{self.length:g}s"


def parse_spike(text: str) -> SpikeSpec:
    """Parse `<multiplier>x@<start>[ms|s|m]+<length>[ms|s|m]`, e.g. `10x@30s+30s` (unit defaults to s)."""
    match = _SPEC_RE.match(text or "")
    if match is None:
        raise SpikeSpecError(
            f"invalid spike spec {text!r}: expected <multiplier>x@<start>+<length>, e.g. 10x@30s+30s "
            "(multiply the rate by 10 starting at t=30 s for 30 s; units ms, s or m)"
        )
    mult, start, start_unit, length, length_unit = match.groups()
    spec = SpikeSpec(
        multiplier=float(mult),
        start=float(start) * _UNITS[(start_unit or "s").lower()],
        length=float(length) * _UNITS[(length_unit or "s").lower()],
    )
    if spec.multiplier <= 0:
        raise SpikeSpecError(f"invalid spike spec {text!r}: the multiplier must be > 0")
    if spec.length <= 0:
        raise SpikeSpecError(f"invalid spike spec {text!r}: the length must be > 0")
    return spec


class Schedule:
    """When the k-th request is due, for a base rate with an optional spike (piecewise constant)."""

    def __init__(self, rate: float, spike: SpikeSpec | None = None) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a finite number > 0, got {rate}")
        self.rate = rate
        self.spike = spike

    def rate_at(self, t: float) -> float:
        if self.spike is not None and self.spike.start <= t < self.spike.end:
            return self.rate * self.spike.multiplier
        return self.rate

    def cumulative(self, t: float) -> float:
        """Requests due in [0, t] as a real number (the integral of the rate)."""
        total = self.rate * t
        if self.spike is not None:
            overlap = max(0.0, min(t, self.spike.end) - self.spike.start)
            total += self.rate * (self.spike.multiplier - 1.0) * overlap
        return total

    def time_of(self, k: int) -> float:
        """Time at which request `k` (0-based) is due: the inverse of `cumulative`."""
        spike = self.spike
        if spike is None:
            return k / self.rate
        before = self.rate * spike.start
        if k < before:
            return k / self.rate
        during = self.rate * spike.multiplier * spike.length
        if k < before + during:
            return spike.start + (k - before) / (self.rate * spike.multiplier)
        return spike.end + (k - before - during) / self.rate

    def expected_requests(self, duration: float) -> int:
        """Slots due strictly before `duration`: what a run of that length should try to send."""
        return max(0, math.ceil(self.cumulative(duration)))
