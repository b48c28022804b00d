"""The topic catalogue, the plan's diff, the co-partition check and the migration's placement."""

from __future__ import annotations

import json

import orjson
import pytest

from app.admin.migrate import key_partition, next_generation, target_partitions
from app.admin.plan import ActualTopic, co_partition_problems, diff
from app.config import Settings
from app.topics import DEADLETTER, RAW, TopicSpec, catalogue, schema_text


def _settings(**kw: object) -> Settings:
    values: dict[str, object] = {"kafka_bootstrap_servers": "k:9092", "kseg_topic_partitions": 4, **kw}
    return Settings(**values)  # type: ignore[arg-type]


def _cluster(settings: Settings, partitions: int = 4) -> dict[str, ActualTopic]:
    return {
        s.full_name(settings): ActualTopic(
            s.full_name(settings),
            s.partitions or partitions,  # a topic that declares its count (mapping.registry: 1) keeps it
            s.replication_factor(settings),
            s.topic_configs(settings),
        )
        for s in catalogue()
    }


def test_catalogue_declares_every_topic_constant_and_the_faust_changelogs() -> None:
    specs = {s.name: s for s in catalogue()}
    assert {RAW, DEADLETTER} <= set(specs)
    settings = _settings()
    assert specs["profiles"].full_name(settings) == "kseg-profiles-changelog"
    assert specs[RAW].full_name(settings) == "kseg.postbacks.raw"
    assert specs["profiles"].topic_configs(settings)["cleanup.policy"] == "compact"
    # min.insync.replicas is capped at the replication factor: 1 on a single broker, 2 on three.
    assert specs[RAW].topic_configs(settings)["min.insync.replicas"] == "1"
    assert specs[RAW].topic_configs(_settings(kseg_topic_replication=3))["min.insync.replicas"] == "2"
    assert specs[RAW].keyed and specs["profiles"].co_partitioned == specs[RAW].co_partitioned == "device"
    assert json.loads(schema_text("warehouse-row.schema.json"))["type"] == "object"


def test_a_matching_cluster_has_no_changes_and_a_missing_topic_is_created() -> None:
    settings = _settings()
    cluster = _cluster(settings)
    assert diff(catalogue(), cluster, settings) == []
    del cluster["kseg.deadletter"]
    changes = diff(catalogue(), cluster, settings)
    assert [(c.topic, c.action) for c in changes] == [("kseg.deadletter", "create")]
    assert "4 partitions" in changes[0].detail and "retention.ms=2592000000" in changes[0].detail


def test_partition_changes_of_keyed_topics_are_refused_with_the_migrate_command() -> None:
    settings = _settings(kseg_topic_partitions=8)
    changes = {c.topic: c for c in diff(catalogue(), _cluster(_settings(), 4), settings)}
    raw = changes["kseg.postbacks.raw"]
    assert raw.action == "refuse" and "kseg topics migrate --partitions 8" in raw.detail
    assert changes["kseg.deadletter"].action == "add_partitions"  # unkeyed: safe to grow
    shrink = {c.topic: c for c in diff(catalogue(), _cluster(settings, 8), _settings())}
    assert shrink["kseg.deadletter"].action == "refuse"
    assert "cannot remove" in shrink["kseg.deadletter"].detail


def test_wrong_configs_are_altered() -> None:
    settings = _settings()
    cluster = _cluster(settings)
    name = "kseg-profiles-changelog"
    cluster[name] = ActualTopic(name, 4, 1, {"cleanup.policy": "delete"})
    changes = diff(catalogue(), cluster, settings)
    assert [(c.topic, c.action) for c in changes] == [(name, "alter_configs")]
    assert "cleanup.policy: delete -> compact" in changes[0].detail


def test_co_partitioned_topics_that_disagree_are_named() -> None:
    settings = _settings()
    cluster = _cluster(settings)
    assert co_partition_problems(catalogue(), cluster, settings) == []
    cluster["kseg-profiles-changelog"] = ActualTopic("kseg-profiles-changelog", 8, 1)
    problems = co_partition_problems(catalogue(), cluster, settings)
    assert len(problems) == 1
    assert "'device'" in problems[0] and "kseg-profiles-changelog=8" in problems[0]
    assert "kseg.postbacks.raw=4" in problems[0]
    # The configured count counts too: a worker set to 8 against 4-partition topics refuses.
    assert co_partition_problems(catalogue(), _cluster(settings), _settings(kseg_topic_partitions=8))


def test_generations() -> None:
    assert next_generation("kseg") == "kseg-g2"
    assert next_generation("kseg-g2") == "kseg-g3"
    assert next_generation("prod-eu-g9") == "prod-eu-g10"


@pytest.mark.parametrize("device", ["KI1", "KI-returning", "KI6D92078A-8246-4BA4-AE5B-76104861E7DC"])
def test_keyed_records_land_where_the_producers_partitioner_puts_them(device: str) -> None:
    """faust stores the profiles table's str keys as JSON (`"KI1"`); the receiver hashed `KI1`."""
    spec = next(s for s in catalogue() if s.name == "profiles")
    old, new = key_partition(device.encode(), 4), key_partition(device.encode(), 8)
    assert target_partitions(spec, orjson.dumps(device), old, 4, 8) == [new]
    devices = next(s for s in catalogue() if s.name == "identity-devices")  # bytes keys: raw
    typed = f"idfv:{device}".encode()
    assert target_partitions(devices, typed, key_partition(typed, 4), 4, 8) == [key_partition(typed, 8)]


def test_source_placed_changelog_records_go_to_every_partition_their_device_can_map_to() -> None:
    spec = TopicSpec("windowed", "a table keyed by event id, placed by device", None, "changelog", True,
                     "device", "source")  # fmt: skip
    for device in (f"KI{i}".encode() for i in range(200)):
        old, new = key_partition(device, 4), key_partition(device, 8)
        assert new in target_partitions(spec, b"event-id", old, 4, 8) == [old, old + 4]
    assert target_partitions(spec, b"e", 1, 4, 6) == list(range(6))  # not a multiple: everywhere
