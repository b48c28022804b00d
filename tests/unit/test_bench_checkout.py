"""The bench's `today` scenario runs an older kseg's worker from a checkout of its commit
(`bench.run.checkout`): here, a checkout of HEAD has this tree's files, and an unknown commit is None."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import run
from tests.harness import ROOT


def _head() -> str:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.fail("git is not installed: the bench's today scenario needs it")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_checkout_holds_the_commits_tree(tmp_path: Path) -> None:
    head = _head()
    tree = run.checkout(head, tmp_path / "code")
    assert tree == tmp_path / "code"
    cli = (tree / "app" / "cli.py").read_text()
    committed = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{head}:app/cli.py"], capture_output=True, text=True, check=True
    ).stdout
    assert cli == committed
    # A second call reuses the tree instead of extracting it again.
    (tree / "marker").write_text("kept")
    assert run.checkout(head, tree) == tree and (tree / "marker").exists()


def test_an_unknown_commit_is_no_checkout(tmp_path: Path) -> None:
    assert run.checkout("0" * 40, tmp_path / "none") is None
    assert not (tmp_path / "none" / "app").exists()


def test_a_run_without_the_today_scenario_has_no_verdict_on_its_target() -> None:
    figures = {"cpu_ms_per_postback": 1.2, "worker_events_per_s": 900.0}
    # `--smoke` and `--only` runs without `today`: no verdict for the target it measures; the others stay.
    smoke = run.check(figures, ["ingest", "pipeline"])
    assert "cpu_per_postback_vs_today" not in smoke and smoke["worker_events_per_s"] == "missed"
    # A run that had `today` but got no figure from it (a shallow clone) says the figure is missing.
    assert run.check(figures, ["pipeline", "today"])["cpu_per_postback_vs_today"] == "missing"
    assert run.check(figures | {"cpu_per_postback_vs_today": 0.3})["cpu_per_postback_vs_today"] == "met"
