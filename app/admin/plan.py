"""The difference between the topic catalogue and a cluster, as a list of changes (pure: no Kafka here).

`kseg topics plan` prints it; `kseg topics apply` carries out the safe changes and refuses the others.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from app.sections import KafkaSettings
from app.topics import TopicSpec

Action = Literal["create", "alter_configs", "add_partitions", "refuse"]


@dataclass(frozen=True)
class ActualTopic:
    """What the cluster says about one topic."""

    name: str
    partitions: int
    replication: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One difference and what `apply` does about it."""

    topic: str
    action: Action
    detail: str

    def line(self) -> str:
        mark = {"create": "+", "alter_configs": "~", "add_partitions": "~", "refuse": "!"}[self.action]
        return f"  {mark} {self.topic:<40} {self.detail}"


def diff(specs: list[TopicSpec], actual: dict[str, ActualTopic], settings: KafkaSettings) -> list[Change]:
    """Every change that would make the cluster match the catalogue, in catalogue order."""
    changes: list[Change] = []
    for spec in specs:
        name = spec.full_name(settings)
        want_partitions = spec.partition_count(settings)
        want_configs = spec.topic_configs(settings)
        have = actual.get(name)
        if have is None:
            configs = ", ".join(f"{k}={v}" for k, v in sorted(want_configs.items()))
            changes.append(
                Change(
                    name,
                    "create",
                    f"create: {want_partitions} partitions, replication {spec.replication_factor(settings)}"
                    + (f", {configs}" if configs else ""),
                )
            )
            continue
        if have.partitions != want_partitions:
            changes.append(_partition_change(spec, name, have.partitions, want_partitions))
        if have.replication != spec.replication_factor(settings):
            changes.append(
                Change(
                    name,
                    "refuse",
                    f"replication {have.replication} -> {spec.replication_factor(settings)}: "
                    "kseg does not move replicas; use kafka-reassign-partitions.sh or your console",
                )
            )
        wrong = {k: v for k, v in want_configs.items() if have.configs.get(k) != v}
        if wrong:
            detail = ", ".join(
                f"{k}: {have.configs.get(k, '(unset)')} -> {v}" for k, v in sorted(wrong.items())
            )
            changes.append(Change(name, "alter_configs", detail))
    return changes


def _partition_change(spec: TopicSpec, name: str, have: int, want: int) -> Change:
    if want < have:
        return Change(
            name,
            "refuse",
            f"partitions {have} -> {want}: Kafka cannot remove partitions; "
            f"set KSEG_TOPIC_PARTITIONS={have} or migrate to a new generation",
        )
    if spec.keyed:
        return Change(
            name,
            "refuse",
            f"partitions {have} -> {want}: keyed topic; adding partitions re-maps keys and splits each "
            f"device's state and order. Run `kseg topics migrate --partitions {want}` instead",
        )
    return Change(name, "add_partitions", f"partitions {have} -> {want}")


def co_partition_problems(
    specs: list[TopicSpec], actual: dict[str, ActualTopic], settings: KafkaSettings
) -> list[str]:
    """Groups of co-partitioned topics whose partition counts disagree with each other or with the
    count this process is configured for (faust would declare its tables with that count)."""
    groups: dict[str, dict[str, int]] = defaultdict(dict)
    for spec in specs:
        if spec.co_partitioned is None:
            continue
        name = spec.full_name(settings)
        if name in actual:
            groups[spec.co_partitioned][name] = actual[name].partitions
        groups[spec.co_partitioned][f"configured (KSEG_TOPIC_PARTITIONS or topics.yaml) for {name}"] = (
            spec.partition_count(settings)
        )
    problems = []
    for group, counts in sorted(groups.items()):
        if len(set(counts.values())) > 1:
            listed = ", ".join(
                f"{name}={n}" for name, n in counts.items() if not name.startswith("configured")
            )
            configured = sorted({n for name, n in counts.items() if name.startswith("configured")})
            problems.append(
                f"co-partitioned group {group!r} disagrees: {listed}; configured {configured}. "
                "Every topic of a group must have the same partition count or device state splits: "
                "fix KSEG_TOPIC_PARTITIONS, or run `kseg topics migrate --partitions N`."
            )
    return problems
