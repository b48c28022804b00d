"""The alert rules and dashboard parse, and every alert has its runbook line."""

from __future__ import annotations

import re

from tests.harness import ROOT
from tests.ops_files import alert_rules, dashboard, referenced_families

RUNBOOK = (ROOT / "docs" / "operations.md").read_text()


def _runbook_sections() -> dict[str, list[str]]:
    """`### Name` headings under `## Alerts` → their non-empty lines."""
    alerts = RUNBOOK.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    sections: dict[str, list[str]] = {}
    for block in alerts.split("\n### ")[1:]:
        name, *body = block.splitlines()
        sections[name.strip()] = [line for line in body if line.strip()]
    return sections


def test_every_alert_is_well_formed_and_points_at_its_runbook_line() -> None:
    rules = alert_rules()
    sections = _runbook_sections()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    required = {
        "KsegConsumerLagGrowing", "KsegDeadLetters", "KsegSegmentAuthFailing", "KsegReceiver503s",
        "KsegWarehouseLoaderLag", "KsegDigestFailed",
    }  # fmt: skip
    assert required <= set(names)
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"
        assert len(sections.get(rule["alert"], [])) == 1, (
            f"{rule['alert']}: one runbook line in operations.md"
        )
    assert set(sections) == set(names), "runbook entries without an alert"


def test_dashboard_panels_query_prometheus_and_are_laid_out() -> None:
    board = dashboard()
    assert board["uid"] == "kseg-overview"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 10
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])


def test_metric_names_follow_the_exposed_families() -> None:
    families = referenced_families()
    assert {
        "kseg_consumer_lag",
        "kseg_dead_letters",
        "kseg_receiver_rejected",
        "faust_total_events",
    } <= families
    assert all(re.fullmatch(r"(kseg|faust)_[a-z0-9_]+", f) for f in families)
