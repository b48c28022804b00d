"""faust's changelogs go in real batches on every broker; only on the embedded broker, whose end offsets
count a last batch's first record, does table recovery read the real ends (the running proof, a SIGKILL
and a takeover, is tests/integration/test_changelog_recovery.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import Settings
from app.worker.app import build_faust_app
from app.worker.recovery import ExactEndRecovery


def settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, kafka_bootstrap_servers="127.0.0.1:9", kseg_data_dir=tmp_path, **kw
    )


def test_changelogs_are_batched_on_both_brokers_and_only_the_embedded_one_reads_real_ends(
    tmp_path: Path,
) -> None:
    kafka = build_faust_app(settings(tmp_path))
    embedded = build_faust_app(settings(tmp_path, kseg_embedded_broker=True))
    assert kafka.conf.producer_max_batch_size == embedded.conf.producer_max_batch_size == 16384
    assert kafka.changelog_ends is None  # type: ignore[attr-defined]
    assert embedded.changelog_ends is not None  # type: ignore[attr-defined]
    assert isinstance(embedded.tables.recovery, ExactEndRecovery)


def test_one_record_changelogs_remain_a_setting(tmp_path: Path) -> None:
    app = build_faust_app(settings(tmp_path, kseg_embedded_broker=True, kseg_changelog_batch_bytes=1))
    assert app.conf.producer_max_batch_size == 1
