"""Unit tests never see a `.env` in the working directory (the developer's own), unless they ask for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings


def test_a_dotenv_in_the_working_directory_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("KSEG_APP_ID=from-a-developers-dotenv\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KSEG_APP_ID", raising=False)
    assert Settings().kseg_app_id != "from-a-developers-dotenv"
    # The file is still read when a test names it: the isolation is the default, not a removal.
    assert Settings(_env_file=".env").kseg_app_id == "from-a-developers-dotenv"  # type: ignore[call-arg]
