"""The console's pure rules: the reconciliation gap and its flag, the studio's difference, the settings'
token list, and the metric the alert reads."""

from __future__ import annotations

from datetime import date

import pytest
from prometheus_client import CollectorRegistry

from app.console.metrics import ConsoleMetrics
from app.console.queries import gaps
from app.console.studio import difference
from app.metrics import sample
from app.sections import console_token_roles


def test_a_gap_over_the_threshold_is_flagged_and_delivered_counts_before_received() -> None:
    rows = [
        {"date": date(2026, 1, 2), "network": "N", "campaign": "A", "kochava_installs": 100, "received": 100,
         "delivered": 90},
        {"date": date(2026, 1, 2), "network": "N", "campaign": "B", "kochava_installs": 100, "received": 96,
         "delivered": None},
        {"date": date(2026, 1, 2), "network": "N", "campaign": "C", "kochava_installs": None, "received": 3,
         "delivered": 3},
        {"date": date(2026, 1, 1), "network": "N", "campaign": "A", "kochava_installs": 10, "received": 12,
         "delivered": 12},
    ]  # fmt: skip
    out = gaps(rows, 5.0)
    assert [(r["gap"], r["gap_pct"], r["flagged"]) for r in out] == [
        (10, 10.0, True),  # 10 of Kochava's 100 never reached Segment
        (4, 4.0, False),  # no receipts: what was received counts, 4 % is within 5 %
        (None, None, False),  # no Kochava figure for that day: nothing to reconcile
        (-2, 20.0, True),  # more than Kochava reported (duplicates?) is a gap too
    ]
    registry = CollectorRegistry()
    ConsoleMetrics.on(registry).reconciled(out, 5.0)
    assert sample("kseg_reconcile_gap_percent", registry, network="N", campaign="A") == 10.0
    assert sample("kseg_reconcile_gap_percent", registry, network="N", campaign="B") == 4.0
    assert (
        sample("kseg_reconcile_flagged", registry) == 2
        and sample("kseg_reconcile_threshold_percent", registry) == 5
    )


def test_the_difference_names_each_changed_leaf_and_ignores_the_clock() -> None:
    left = {"segment": [{"event": "Order Completed", "timestamp": "t1", "properties": {"revenue": 5}}]}
    right = {"segment": [{"event": "Purchase Made", "timestamp": "t2", "properties": {}}], "extra": 1}
    assert difference(left, right) == [
        ("extra", "_missing_", 1),
        ("segment[0].event", "Order Completed", "Purchase Made"),
        ("segment[0].properties.revenue", 5, "_missing_"),
    ]
    assert difference(left, left) == []


def test_console_tokens_parse_and_their_errors_never_show_a_token() -> None:
    assert console_token_roles("viewer=aaaaaaaa, operator=bbbbbbbb,viewer=cccccccc") == {
        "aaaaaaaa": "viewer", "bbbbbbbb": "operator", "cccccccc": "viewer",
    }  # fmt: skip
    for bad in (
        "admin=secret-token",
        "operator=short",
        "secret-token-without-role",
        "viewer=dup-token,operator=dup-token",
    ):
        with pytest.raises(ValueError) as info:
            console_token_roles(bad)
        assert (
            "KSEG_CONSOLE_TOKENS entry" in str(info.value)
            and "secret" not in str(info.value)
            and "dup-token" not in str(info.value)
        )
