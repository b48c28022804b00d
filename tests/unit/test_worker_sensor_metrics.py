"""faust's own sensor metrics behind `CachedLabels`: the same samples as faust's uncached ones, and a
child removed by faust's rebalance clean-up is not kept alive by the cache."""

from __future__ import annotations

from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry

from app.worker.metrics import CachedLabels, faust_metrics


def _ops(registry: CollectorRegistry, table: str, operation: str) -> float | None:
    return registry.get_sample_value("faust_table_operations_total", {"table": table, "operation": operation})


def test_cached_children_count_like_faust_uncached_ones() -> None:
    cached, plain = CollectorRegistry(), CollectorRegistry()
    ours, faust_own = faust_metrics(cached, "faust"), FaustMetrics.create(plain, "faust")
    for metrics in (ours, faust_own):
        for table in ("table.profiles", "table.profiles", "table.identity-devices"):
            metrics.table_operations.labels(table=table, operation="keys_updated").inc()
        metrics.topic_messages_sent.labels(topic="topic.x").inc()
        metrics.total_events.inc()
    assert isinstance(ours.table_operations, CachedLabels)
    assert not isinstance(ours.total_events, CachedLabels)  # no labels: faust's metric as it is
    assert _ops(cached, "table.profiles", "keys_updated") == 2.0
    assert _ops(cached, "table.identity-devices", "keys_updated") == 1.0
    exposed = {
        (s.name, tuple(sorted(s.labels.items())), s.value) for m in cached.collect() for s in m.samples
    }
    expected = {
        (s.name, tuple(sorted(s.labels.items())), s.value) for m in plain.collect() for s in m.samples
    }
    timestamps = {"faust_messages_received_created", "faust_total_events_created"}
    assert {e for e in exposed if not e[0].endswith("_created")} == {
        e for e in expected if not e[0].endswith("_created")
    }
    assert {e[0] for e in exposed} >= timestamps


def test_a_removed_child_is_not_served_from_the_cache() -> None:
    registry = CollectorRegistry()
    metrics = faust_metrics(registry, "faust")
    sent = metrics.topic_messages_sent
    sent.labels(topic="topic.x").inc(5)
    sent.remove("topic.x")  # what faust does to topic metrics on a rebalance
    sent.labels(topic="topic.x").inc()
    assert registry.get_sample_value("faust_topic_messages_sent_total", {"topic": "topic.x"}) == 1.0
    sent.labels(topic="topic.y").inc()
    sent.clear()
    sent.labels(topic="topic.y").inc()
    assert registry.get_sample_value("faust_topic_messages_sent_total", {"topic": "topic.y"}) == 1.0
