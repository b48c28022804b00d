"""`python -m bench.core_bench` runs the processing agent's real steps over the pipeline bench's backlog:
tiny here, to keep it working (what it produces, never how fast)."""

from __future__ import annotations

import pytest

from bench import core_bench


def test_every_postback_gets_an_outcome_and_its_outputs() -> None:
    records = core_bench.backlog(40)
    out = core_bench.drain(records, core_bench.step_config(), batch_max=16)
    assert len(records) == 40
    # Every postback is named in a processing receipt (at least one per micro-batch of 16).
    assert len(out.outcomes) == 40 and out.receipts >= 3
    # The device index answered: its notices were handled, and no reinstall is left parked.
    assert out.notices > 0 and set(out.outcomes.values()) == {"mapped"}
    mapped = sum(1 for outcome in out.outcomes.values() if outcome == "mapped")
    # A mapped postback sends at least its outbox record and its warehouse row.
    assert out.sends >= 2 * mapped + out.receipts and out.outputs > 0
    assert out.table  # each changed device's profile, as the table stores it


def test_the_command_reports_both_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert core_bench.main(["-n", "30", "-r", "1"]) == 0
    text = capsys.readouterr().out
    assert "kseg steps" in text and "baseline" in text and "postbacks: 30" in text
    assert core_bench.main(["-n", "20", "--profile", "--top", "5"]) == 0
    assert "handle_record" in capsys.readouterr().out
