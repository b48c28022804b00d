"""The README's settings table lists every setting kseg reads (the table is where operators look)."""

from __future__ import annotations

import re

from app.config import Settings
from tests.harness import ROOT


def table_names() -> set[str]:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split(" | ")[0])}


def test_every_setting_is_in_the_readme_table() -> None:
    missing = sorted(name.upper() for name in Settings.model_fields if name.upper() not in table_names())
    assert not missing, f"add these to README.md's settings table: {missing}"


def test_warehouse_batch_wait_is_described_as_the_idle_timeout() -> None:
    row = next(
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if "`KSEG_WAREHOUSE_BATCH_WAIT`" in line
    )
    assert "idle" in row.lower() and "to fill a batch" not in row.replace(
        "never holds records back to fill", ""
    )
