"""The session-timeout warning for the embedded broker (why: README "The embedded broker")."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings
from app.worker.app import EMBEDDED_MIN_SESSION_TIMEOUT, session_warning


def settings(tmp_path: Path, embedded: bool, timeout: float) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        kafka_bootstrap_servers="127.0.0.1:9",
        kseg_data_dir=tmp_path,
        kseg_embedded_broker=embedded,
        kseg_session_timeout=timeout,
    )


def test_a_short_session_on_the_embedded_broker_is_named_with_the_fix(tmp_path: Path) -> None:
    warning = session_warning(settings(tmp_path, embedded=True, timeout=4))
    assert warning is not None
    assert "KSEG_SESSION_TIMEOUT=4 " in warning
    assert f"KSEG_SESSION_TIMEOUT={EMBEDDED_MIN_SESSION_TIMEOUT:g} or more" in warning


def test_no_warning_at_the_floor_or_on_apache_kafka(tmp_path: Path) -> None:
    assert session_warning(settings(tmp_path, embedded=True, timeout=EMBEDDED_MIN_SESSION_TIMEOUT)) is None
    assert session_warning(settings(tmp_path, embedded=False, timeout=4)) is None
