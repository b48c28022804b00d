"""The console's pure rules: the reconciliation gap and its flag, the studio's difference, the settings'
token list, and the metric the alert reads."""

from __future__ import annotations

from datetime import date

import pytest
from prometheus_client import CollectorRegistry

from app.console.metrics import ConsoleMetrics
from app.console.queries import gaps
from app.console.studio import difference, versions_of
from app.mapping.profile import BUILTIN_PROFILE_DIR
from app.mapping.registry import (
    LocalProfile,
    ProfilePointer,
    ProfileVersion,
    RegistryState,
    content_hash,
    local_profiles,
)
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


def _published(text: str, version: str, at: str) -> ProfileVersion:
    text = text.replace('version: "2"', f'version: "{version}"')
    return ProfileVersion(
        name="kochava-default",
        version=version,
        yaml=text,
        sha256=content_hash(text),
        published_at=at,
        author="ana",
    )


def test_the_studio_offers_the_registry_versions_active_first_then_unpublished_local_files() -> None:
    text = (BUILTIN_PROFILE_DIR / "kochava-default.yaml").read_text()
    assert 'version: "2"' in text
    local = local_profiles(None)
    # Nothing published: the local file is what workers run.
    alone = versions_of(RegistryState(), local)
    assert [(v.key, v.label) for v in alone] == [("kochava-default@2", "local file (workers run it)")]

    state = RegistryState()
    for record in (
        _published(text, "3", "2026-12-01T10:00:00Z"),
        _published(text, "4", "2026-12-02T10:00:00Z"),
        _published(text, "5", "2026-12-03T10:00:00Z"),
        _published("not: [valid", "6", "2026-12-04T10:00:00Z"),
        ProfilePointer(kind="active", name="kochava-default", version="4", at="t", author="ana"),
        ProfilePointer(kind="shadow", name="kochava-default", version="5", at="t", author="ana"),
    ):
        state.apply(record)
    seen = [(v.key, v.label) for v in versions_of(state, local)]
    assert seen == [
        ("kochava-default@4", "active"),
        ("kochava-default@5", "shadow"),
        ("kochava-default@3", "published 2026-12-01"),
        ("kochava-default@2", "local file"),
    ]
    assert versions_of(state, local)[0].profile.version == "4"
    # A local file of a version that is published is the published one: offered once.
    same = {"kochava-default": LocalProfile("x.yaml", text, local["kochava-default"].profile)}
    state.apply(_published(text, "2", "2026-11-30T10:00:00Z"))
    offered = [(v.key, v.label) for v in versions_of(state, same)]
    assert [k for k, _ in offered].count("kochava-default@2") == 1
    seed = _published(text, "1", "2026-11-29T10:00:00Z").model_copy(update={"author": "seed"})
    state.apply(seed)
    assert ("kochava-default@1", "local file (seeded)") in [
        (v.key, v.label) for v in versions_of(state, same)
    ]
