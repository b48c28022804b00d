"""`kseg digest run` as a real process against the Reporting API emulator: the ways a run must fail
plainly, exit non-zero and write nothing."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.config import Settings
from app.topics import DEADLETTER, OUTBOX, SPEND, ensure_topics
from tests.emulators.kochava_reporting import KochavaReportingEmulator
from tests.harness import ROOT, read_topic

pytestmark = pytest.mark.integration

KEY, GUID = "digest-key", "kodigest-guid"


@pytest.fixture
async def emu() -> AsyncIterator[KochavaReportingEmulator]:
    async with KochavaReportingEmulator(KEY, GUID, queue_seconds=0.1, run_seconds=0.2) as e:
        e.set_rows([{"date": "2026-11-30", "network": "Meta", "campaign": "spring", "installs": "3"}])
        yield e


@pytest.fixture
async def env(broker: str, emu: KochavaReportingEmulator, tmp_path: Path) -> dict[str, str]:
    app_id = f"t{uuid.uuid4().hex[:10]}"
    await ensure_topics(Settings(kafka_bootstrap_servers=broker, kseg_app_id=app_id, kseg_topic_partitions=2))
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": broker,
        "KSEG_EMBEDDED_BROKER": "true",
        "KSEG_APP_ID": app_id,
        "KSEG_DATA_DIR": str(tmp_path),
        "KOCHAVA_API_KEY": KEY,
        "KOCHAVA_APP_GUID": GUID,
        "KOCHAVA_REPORTING_URL": emu.url,
        "KOCHAVA_POLL_FIRST_WAIT": "0.1",
        "KOCHAVA_POLL_MAX_WAIT": "0.2",
        "KOCHAVA_REPORTING_RETRIES": "2",
        "PYTHONUNBUFFERED": "1",
    }


async def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "digest", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def assert_nothing_written(broker: str, app_id: str) -> None:
    for topic in (SPEND, OUTBOX, DEADLETTER):
        assert await read_topic(broker, f"{app_id}.{topic}", timeout=5) == []


async def test_wrong_key_is_a_plain_error_with_no_retries_and_nothing_written(broker, emu, env) -> None:
    code, out, err = await run_cli({**env, "KOCHAVA_API_KEY": "not-the-key"}, "run", "--date", "2026-11-30")
    assert code == 1, (out, err)
    assert 'Kochava answered "App does not exist.": KOCHAVA_API_KEY or KOCHAVA_APP_GUID is wrong' in err
    assert "Traceback" not in err and out == ""
    assert emu.calls["summary"] == 1 and emu.reports == {}  # refused once, never retried
    await assert_nothing_written(broker, env["KSEG_APP_ID"])


async def test_a_report_stuck_in_running_ends_after_the_bounded_wait(broker, emu, env) -> None:
    emu.stick_next()
    started = time.monotonic()
    code, out, err = await run_cli({**env, "KOCHAVA_REPORT_TIMEOUT": "3"}, "run", "--date", "2026-11-30")
    assert code == 1, (out, err)
    assert "still running after 3 s (KOCHAVA_REPORT_TIMEOUT)" in err and "[report_timeout]" in err
    assert time.monotonic() - started < 100
    assert emu.calls["progress"] >= 3
    await assert_nothing_written(broker, env["KSEG_APP_ID"])


async def test_columns_prints_what_reportcolumns_answers_and_marks_the_map(broker, env) -> None:
    async with KochavaReportingEmulator(KEY, GUID, rename={"installs": "install_count"}) as renamed:
        code, out, err = await run_cli({**env, "KOCHAVA_REPORTING_URL": renamed.url}, "columns")
    assert code == 0, err
    assert "  install_count\n" in out
    assert "installs          <- installs" in out and "MISSING" in out
    code, _, err = await run_cli({**env, "KOCHAVA_REPORTING_URL": renamed.url}, "columns")
    assert code == 1  # the emulator is gone: a clear error, not a traceback
    assert "did not answer usefully after 3 attempts" in err and "Traceback" not in err


async def test_missing_settings_say_which(env) -> None:
    code, _, err = await run_cli({k: v for k, v in env.items() if k != "KOCHAVA_API_KEY"}, "run")
    assert code == 1 and "KOCHAVA_API_KEY and KOCHAVA_APP_GUID must both be set" in err
