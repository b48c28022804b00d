"""`kseg run` started twice on one machine, and what its startup screen shows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT, wait_for
from tests.parallel import kseg_run_ports


def _env(tmp_path: Path, ports: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KSEG_", "SEGMENT_"))}
    return (
        env
        | ports
        | {
            "KSEG_DATA_DIR": str(tmp_path),
            "KSEG_APP_ID": "porttest",
            "LOG_LEVEL": "info",
        }
    )


async def test_second_kseg_run_names_the_taken_port_and_starts_nothing(tmp_path: Path) -> None:
    ports = kseg_run_ports()
    port, worker_port = ports["KSEG_HTTP_PORT"], ports["KSEG_WORKER_WEB_PORT"]
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    screen = first_dir / "screen.txt"
    with screen.open("wb") as out:
        first = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run"], cwd=ROOT, env=_env(first_dir, ports),
            stdout=out, stderr=out,
        )  # fmt: skip
    try:
        await wait_for(
            lambda: "kseg run: ready after" in screen.read_text(), 120, "the first run's ready line"
        )
        text = screen.read_text()
        # The startup screen stays readable: the banner, the curl, where logs go, one ready line, and
        # none of faust's or aiokafka's start-up chatter (that goes to the log files).
        assert "curl 'http://127.0.0.1:" in text and f"{(first_dir / 'logs').resolve()}" in text
        assert text.count("kseg run: ready after") == 1
        assert "[^Worker]" not in text and "Joined group" not in text and "INFO" not in text, text
        assert "Joined group" in (first_dir / "logs" / "worker.log").read_text()

        second = subprocess.run(
            [sys.executable, "-m", "app.cli", "run"], cwd=ROOT, env=_env(second_dir, ports),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert f"port {port} on 127.0.0.1 (receiver, KSEG_HTTP_PORT) is already in use" in second.stderr
        assert f"port {worker_port} on 127.0.0.1 (worker, KSEG_WORKER_WEB_PORT)" in second.stderr
        sinks_port = ports["KSEG_SINKS_WEB_PORT"]
        assert f"port {sinks_port} on 127.0.0.1 (sinks, KSEG_SINKS_WEB_PORT)" in second.stderr
        # Nothing was started: no broker log, no child logs, no banner.
        assert not (second_dir / "logs").exists() and "kseg is running" not in second.stderr
        assert first.poll() is None, "the first run must be untouched"
    finally:
        first.send_signal(signal.SIGINT)
        try:
            first.wait(60)
        except subprocess.TimeoutExpired:
            first.kill()
