"""Issue 6: a short smoke run of the benchmark suite keeps it working (figures present, not their speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.harness import ROOT

EVERY_FIGURE = (
    "receiver_accepted_per_s",
    "bare_aiohttp_accepted_per_s",
    "receiver_ratio",
    "worker_events_per_s",
    "passthrough_events_per_s",
    "worker_ratio",
    "e2e_p50_ms",
    "e2e_p95_ms",
    "e2e_p99_ms",
    "e2e_low_p99_ms",
    "spike_lost",
    "spike_peak_lag",
    "spike_drain_seconds",
    "events_per_segment_request",
    "segment_request_ratio",
    "worker_peak_rss_mb",
    "receiver_peak_rss_mb",
)


def test_benchmark_smoke_produces_every_figure(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = orjson.loads((tmp_path / "latest.json").read_bytes())
    results = report["results"]
    missing = [name for name in EVERY_FIGURE if results.get(name) is None]
    assert not missing, f"figures without a value: {missing}\n{run.stderr[-3000:]}"
    assert results["pipeline_delivered"] == results["pipeline_events"]
    assert set(report["targets"].values()) <= {"met", "missed"}
    assert "| worker_ratio |" in (tmp_path / "latest.md").read_text()
