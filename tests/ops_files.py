"""Reading the operations files in docker/ (alert rules, dashboard) for tests."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.harness import ROOT

DOCKER = ROOT / "docker"
_METRIC = re.compile(r"\b((?:kseg|faust)_[a-z0-9_]+)")
#: Suffixes Prometheus exposition adds to a family's samples.
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((DOCKER / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DOCKER / "grafana" / "dashboards" / "kseg.json").read_text())
    return result


def expressions() -> list[str]:
    exprs = [rule["expr"] for rule in alert_rules()]
    exprs += [t["expr"] for panel in dashboard()["panels"] for t in panel["targets"]]
    return exprs


def family(sample: str) -> str:
    """`kseg_dead_letters_total` → `kseg_dead_letters` (the name after `# TYPE`)."""
    for suffix in _SUFFIXES:
        if sample.endswith(suffix):
            return sample[: -len(suffix)]
    return sample


def referenced_families() -> set[str]:
    return {family(name) for expr in expressions() for name in _METRIC.findall(expr)}
