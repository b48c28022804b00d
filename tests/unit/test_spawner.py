"""How `kseg run` starts and guards its processes, with real processes: own sessions (a terminal's
Ctrl-C reaches only `kseg run`), the PostgreSQL guard that outlives a SIGKILLed parent, the pidfile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.broker.embedded import EmbeddedBroker
from app.spawner import spawn_role
from app.supervisor import previous_run
from tests.harness import ROOT


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_roles_start_in_a_session_of_their_own() -> None:
    child = spawn_role(["--help"], os.environ, log_path=None, cwd=ROOT)
    try:
        assert os.getsid(child.pid) == child.pid and os.getpgid(child.pid) == child.pid
        assert os.getpgid(child.pid) != os.getpgid(0)
    finally:
        child.wait(60)


def test_the_embedded_broker_starts_in_a_session_of_its_own(broker: EmbeddedBroker) -> None:
    assert broker.process is not None
    assert os.getsid(broker.process.pid) == broker.process.pid


def test_the_guard_notices_its_parent_killed(tmp_path: Path) -> None:
    """SIGKILL the process that started the guard: the guard sees EOF and finishes (here no database
    runs on the directory, so it only checks and exits)."""
    script = (
        "import sys, time; from pathlib import Path; from app.supervisor import start_guard; "
        f"g = start_guard(Path({str(tmp_path / 'pg')!r})); print(g.pid, flush=True); time.sleep(120)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert parent.stdout is not None
        guard = int(parent.stdout.readline())
        time.sleep(1.0)
        assert not gone(guard, 0.1), "the guard must wait while its parent lives"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert gone(guard, 30), "the guard outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_previous_run_is_a_pidfile_whose_process_is_gone(tmp_path: Path) -> None:
    pidfile = tmp_path / "kseg-run.pid"
    assert previous_run(pidfile) is None  # none
    pidfile.write_text(f"{os.getpid()}\n")
    assert previous_run(pidfile) is None  # still running
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    assert previous_run(pidfile) == dead.pid
