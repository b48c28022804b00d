"""The one way kseg starts its own roles as processes: `kseg run`, the benchmarks and the test harness.

Each role is a separate `python -m app.cli ROLE` process (a crash shows up as its exit, and SIGKILL tests
stay honest), started with PDEATHSIG so even a SIGKILLed parent leaves no orphan behind, and in a session
of its own: a terminal's Ctrl-C reaches only the parent, which stops its children in dependency order
(all at once, the broker would go down while the worker makes its final commit).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from app.broker.embedded import die_with_parent


def spawn_role(
    role: str | list[str],
    env: Mapping[str, str],
    log_path: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `kseg ROLE` (a sub-command, or its argument list); its output goes to `log_path` when given,
    else to this process's stdout/stderr."""
    args = [role] if isinstance(role, str) else role
    out = log_path.open("ab") if log_path is not None else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
    finally:
        if out is not None:
            out.close()


def stop_all(children: Iterable[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM every running child, wait up to `timeout` in all, then SIGKILL what is left."""
    children = list(children)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
