"""The sinks' shared stats export: what each sink's `SinkStats` shows on the worker's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from app.metrics import sample
from app.sinks.stats import SinkStats, SinkStatsCollector


def test_failing_since_is_exported_for_both_sinks_and_is_zero_when_healthy() -> None:
    registry = CollectorRegistry()
    segment, kochava = SinkStats(), SinkStats()
    registry.register(SinkStatsCollector("segment", "Segment", segment))
    registry.register(SinkStatsCollector("kochava", "Kochava", kochava))
    assert sample("kseg_segment_failing_since_seconds", registry) == 0.0
    segment.failing(1_700_000_000.0)
    segment.failing(1_700_000_900.0)  # still the same outage: the clock keeps its start
    kochava.failing(1_700_000_500.0)
    assert sample("kseg_segment_failing_since_seconds", registry) == 1_700_000_000.0
    assert sample("kseg_kochava_failing_since_seconds", registry) == 1_700_000_500.0
    segment.answered()
    assert sample("kseg_segment_failing_since_seconds", registry) == 0.0


def test_the_existing_sink_metric_names_are_kept() -> None:
    registry = CollectorRegistry()
    stats = SinkStats(retries=3, delivered=7, bisections=1, auth_failures=1, retry_after_waits=2, rate=50.0)
    stats.requests_by_status.update({"200": 2, "429": 1})
    stats.dead_letters_by_reason["kochava_rejected_400"] += 1
    registry.register(SinkStatsCollector("segment", "Segment", stats))
    registry.register(SinkStatsCollector("kochava", "Kochava", stats))
    for sink in ("segment", "kochava"):
        assert sample(f"kseg_{sink}_requests_total", registry, status="429") == 1
        assert sample(f"kseg_{sink}_retries_total", registry) == 3
    assert sample("kseg_segment_delivered_total", registry) == 7
    assert sample("kseg_segment_bisections_total", registry) == 1
    assert sample("kseg_segment_auth_failures_total", registry) == 1
    assert sample("kseg_segment_retry_after_waits_total", registry) == 2
    assert sample("kseg_segment_rate_limit", registry) == 50.0
    assert sample("kseg_kochava_dead_letters_total", registry, reason="kochava_rejected_400") == 1
