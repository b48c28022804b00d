"""A small, dependency-free Prometheus text-format registry shared by the receiver and the worker.

Every path that does not deliver an event increments a labelled counter (stream-design-notes §8).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable

LabelKey = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, str] | None) -> LabelKey:
    return tuple(sorted((labels or {}).items()))


def _fmt(key: LabelKey, extra: Iterable[tuple[str, str]] = ()) -> str:
    items = list(key) + list(extra)
    if not items:
        return ""
    body = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in items
    )
    return "{" + body + "}"


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self.values: dict[LabelKey, float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        with self._lock:
            self.values[_labels(labels)] += amount

    def get(self, **labels: str) -> float:
        return self.values.get(_labels(labels), 0.0)

    def total(self) -> float:
        return sum(self.values.values())

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_fmt(k)} {v:g}" for k, v in sorted(self.values.items())]
        return lines


Reader = Callable[[], dict[LabelKey, float]]


class Gauge:
    """A value set directly or read from `fn` at scrape time (`kind="counter"` for cumulative values)."""

    def __init__(self, name: str, help_text: str, fn: Reader | None = None, kind: str = "gauge") -> None:
        self.name, self.help, self.fn, self.kind = name, help_text, fn, kind
        self.values: dict[LabelKey, float] = {}

    def set(self, value: float, **labels: str) -> None:
        self.values[_labels(labels)] = value

    def render(self) -> list[str]:
        values = self.fn() if self.fn else self.values
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        lines += [f"{self.name}{_fmt(k)} {v:g}" for k, v in sorted(values.items())]
        return lines


class Histogram:
    DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.name, self.help, self.buckets = name, help_text, buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines += [f"{self.name}_sum {self.sum:g}", f"{self.name}_count {self.count}"]
        return lines


class Registry:
    def __init__(self) -> None:
        self.metrics: list[Counter | Gauge | Histogram] = []

    def counter(self, name: str, help_text: str) -> Counter:
        metric = Counter(name, help_text)
        self.metrics.append(metric)
        return metric

    def gauge(self, name: str, help_text: str, fn: Reader | None = None, kind: str = "gauge") -> Gauge:
        metric = Gauge(name, help_text, fn, kind)
        self.metrics.append(metric)
        return metric

    def histogram(self, name: str, help_text: str) -> Histogram:
        metric = Histogram(name, help_text)
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        return "\n".join(line for m in self.metrics for line in m.render()) + "\n"


def label_key(**labels: str) -> LabelKey:
    return _labels(labels)
