"""What a load run saw: counts by outcome, achieved rate and latency percentiles.

Why a dedicated type: bench scripts, tests and the CLI all read the same numbers, and the counts must
add up (every sent request ends as accepted, 503, another status or a client error) so a silent loss
in the runner shows up as a broken invariant instead of a nicer-looking throughput.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending list; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class LoadReport:
    """Counters filled by the runner while it runs, then frozen by `finish()`."""

    url: str = ""
    target_rate: float = 0.0
    duration: float = 0.0
    concurrency: int = 0
    spike: str | None = None
    sent: int = 0
    accepted: int = 0
    rejected_503: int = 0
    other_statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # kind -> count: timeout, connection, ...
    client_saturated: int = 0  # due but skipped: all `concurrency` slots were busy
    send_seconds: float = 0.0  # length of the sending window
    elapsed_seconds: float = 0.0  # including the drain of in-flight requests
    latencies_s: list[float] = field(default_factory=list, repr=False)
    _sorted: list[float] | None = field(default=None, repr=False)

    # -- recording (runner) -----------------------------------------------------------------------
    def record_response(self, status: int, latency_s: float) -> None:
        self.latencies_s.append(latency_s)
        self._sorted = None
        if status == 200:
            self.accepted += 1
        elif status == 503:
            self.rejected_503 += 1
        else:
            self.other_statuses[status] += 1

    def record_error(self, kind: str) -> None:
        self.errors[kind] += 1

    # -- derived ----------------------------------------------------------------------------------
    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def completed(self) -> int:
        """Requests with an outcome; equals `sent` once the run finished."""
        return self.accepted + self.rejected_503 + sum(self.other_statuses.values()) + self.error_count

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.send_seconds if self.send_seconds > 0 else 0.0

    @property
    def accepted_rate(self) -> float:
        return self.accepted / self.send_seconds if self.send_seconds > 0 else 0.0

    def latency_ms(self, pct: float) -> float | None:
        if self._sorted is None:
            self._sorted = sorted(self.latencies_s)
        value = percentile(self._sorted, pct)
        return None if value is None else value * 1000.0

    def latency_summary(self) -> dict[str, float | None]:
        return {
            "p50": self.latency_ms(50),
            "p95": self.latency_ms(95),
            "p99": self.latency_ms(99),
            "max": self.latency_ms(100),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no raw latencies)."""
        return {
            "url": self.url,
            "target_rate": self.target_rate,
            "duration_s": self.duration,
            "concurrency": self.concurrency,
            "spike": self.spike,
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected_503": self.rejected_503,
            "other_statuses": {str(k): v for k, v in sorted(self.other_statuses.items())},
            "errors": dict(sorted(self.errors.items())),
            "error_count": self.error_count,
            "client_saturated": self.client_saturated,
            "send_seconds": round(self.send_seconds, 3),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "achieved_rate": round(self.achieved_rate, 1),
            "accepted_rate": round(self.accepted_rate, 1),
            "latency_ms": {k: None if v is None else round(v, 3) for k, v in self.latency_summary().items()},
        }

    def format_table(self) -> str:
        """Human-readable summary for the terminal."""

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f} ms"

        lat = self.latency_summary()
        others = ", ".join(f"{k}: {v}" for k, v in sorted(self.other_statuses.items())) or "-"
        errs = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "-"
        rows = [
            (
                "target",
                f"{self.target_rate:g} req/s for {self.duration:g} s, concurrency {self.concurrency}"
                + (f", spike {self.spike}" if self.spike else ""),
            ),
            ("sent", str(self.sent)),
            ("accepted (200)", str(self.accepted)),
            ("503", str(self.rejected_503)),
            ("other statuses", others),
            ("errors", f"{self.error_count} ({errs})"),
            ("client saturated", str(self.client_saturated)),
            ("achieved rate", f"{self.achieved_rate:.1f} req/s (accepted {self.accepted_rate:.1f}/s)"),
            ("latency p50/p95", f"{ms(lat['p50'])} / {ms(lat['p95'])}"),
            ("latency p99/max", f"{ms(lat['p99'])} / {ms(lat['max'])}"),
            ("elapsed", f"{self.elapsed_seconds:.2f} s (send window {self.send_seconds:.2f} s)"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)

    def progress_line(self, elapsed: float, in_flight: int, since: int = 0) -> str:
        """One-line status for stderr while the run goes on.

        p95 covers latencies recorded from index `since` on (the last interval), so the line shows
        the current state and sorting stays cheap on long runs.
        """
        window = percentile(sorted(self.latencies_s[since:]), 95)
        p95 = None if window is None else window * 1000.0
        return (
            f"[loadgen] t={elapsed:5.1f}s sent={self.sent} ok={self.accepted} 503={self.rejected_503} "
            f"other={sum(self.other_statuses.values())} err={self.error_count} "
            f"sat={self.client_saturated} inflight={in_flight} "
            f"rate={self.sent / elapsed if elapsed > 0 else 0.0:.0f}/s "
            f"p95={'-' if p95 is None else f'{p95:.1f}ms'}"
        )
