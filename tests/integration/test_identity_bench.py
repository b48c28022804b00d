"""`python -m bench.identity_bench --smoke` keeps working: every metric and population count is produced.

Behaviour only: the targets themselves (0 wrong merges, ...) are checked by the real bench run, not here.
"""

from __future__ import annotations

import numbers
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.harness import ROOT

METRICS = (
    "wrong_merge_rate",
    "duplicate_profile_rate",
    "attribution_carried",
    "purchases_enriched",
    "junk_id_leaks",
    "resale_wrong_merges",
    "calls_tying_two_people",
    "message_ids_reused",
    "buyer_events_attributed",
)
POPULATION = ("users", "personal_devices", "logged_in_users", "shared_devices", "reinstalls")


@pytest.mark.long
def test_identity_bench_smoke_produces_every_metric(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            *(sys.executable, "-m", "bench.identity_bench", "--smoke", "--json"),
            *("--out", str(tmp_path), "--work", str(tmp_path / "work")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode in (0, 1), run.stderr[-3000:]  # 1 = a target missed, still a full report
    report = orjson.loads((tmp_path / "identity-latest.json").read_bytes())
    assert orjson.loads(run.stdout) == report

    for name in METRICS:
        value = report["metrics"].get(name)
        assert isinstance(value, numbers.Real) and not isinstance(value, bool), (name, value)
        assert value >= 0, (name, value)
    assert set(report["targets"]) == set(METRICS)
    assert set(report["targets"].values()) <= {"met", "missed"}
    for name in POPULATION:
        assert report["population"][name] > 0, (name, report["population"])

    details = report["details"]
    assert report["meta"]["drained"], run.stderr[-3000:]
    assert details["tracks_missing"] == 0
    assert details["postbacks_accepted"] > 0 and details["purchases"] > 0
    assert details["links_accepted"] > 0 and details["tying_calls"] > 0
    assert details["junk_only_links_accepted"] == 0  # the links API answers 400, whatever else happens
    assert "| wrong_merge_rate |" in (tmp_path / "identity-latest.md").read_text()
