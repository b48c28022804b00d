"""A short smoke run of the benchmark suite keeps every figure produced (not their speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.harness import ROOT

EVERY_FIGURE = (
    "receiver_accepted_per_s",
    "bare_aiohttp_accepted_per_s",
    "receiver_ratio",
    "receiver_cpu_s_per_1k",
    "bare_aiohttp_cpu_s_per_1k",
    "worker_events_per_s",
    "worker_cpu_s_per_1k",
    "worker_records_per_event",
    "split_worker_events_per_s",
    "split_worker_cpu_s_per_1k",
    "split_sinks_cpu_s_per_1k",
    "split_cpu_ms_per_postback",
    "passthrough_events_per_s",
    "passthrough_cpu_s_per_1k",
    "faust_one_events_per_s",
    "faust_one_cpu_s_per_1k",
    "faust_shape_events_per_s",
    "faust_shape_cpu_s_per_1k",
    "faust_shape_records_per_event",
    "faust_shape_read_back_per_event",
    "worker_ratio",
    "worker_vs_faust_shape",
    "faust_shape_ratio",
    "faust_one_ratio",
    "workers2_events_per_s",
    "workers2_cpu_s_per_1k",
    "workers2_scaling",
    "workers2_undelivered",
    "workers2_group_rejoins",
    "e2e_rate",
    "e2e_p50_ms",
    "e2e_p95_ms",
    "e2e_p99_ms",
    "e2e_cold_p99_ms",
    "e2e_1000_p99_ms",
    "spike_base_rate",
    "spike_lost",
    "spike_peak_lag",
    "spike_drain_seconds",
    "events_per_segment_request",
    "segment_request_ratio",
    "worker_peak_rss_mb",
    "receiver_peak_rss_mb",
)


# Not exclusive: it asserts that every figure is produced and every postback delivered, never a speed, and
# its waits are generous (SMOKE's drain timeout); alone it left most of the 2 cores idle for ~4 minutes.
@pytest.mark.long
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
    assert results["split_pipeline_undelivered"] == 0  # the worker without sinks + `kseg sinks`
    assert results["workers2_delivered"] > 0
    # the latency target's rate is half the worker throughput measured in the same run
    assert results["e2e_rate"] == round(results["worker_events_per_s"] / 2, 1)
    assert results["spike_base_rate"] == results["e2e_rate"]  # the spike is 10x that same steady rate
    assert set(report["targets"].values()) <= {"met", "missed"}
    text = (tmp_path / "latest.md").read_text()
    assert "| worker_ratio |" in text
    assert "## Side by side" in text and "| kseg worker, 2 processes |" in text
