"""Running tests on several pytest-xdist workers at once: free ports no two workers share, and a lock that
lets a timing-sensitive test run alone.

Ports. `bind(0)` hands out a port from the kernel's ephemeral range, the range every outgoing connection
also takes its source port from. Between the moment a test reads such a port and the moment its child
process binds it, a client socket or another worker's `bind(0)` can take the same port, and the child then
fails to bind or, worse, the test talks to another worker's server. So each xdist worker takes ports from a
block of its own below the ephemeral range (the kernel never hands those out by itself), starting at a
random offset (two pytest sessions on one machine rarely meet) and skipping any port that cannot be bound
right now.

Exclusive tests. A few tests measure group timing (two workers rebalancing on a broker of their own, a
SIGKILLed worker's tables coming back); on a 2-core machine other workers' processes would take the CPU
those timings depend on. Every test holds a lock shared by the workers of the
session while it runs (setup, call, teardown); an exclusive test holds it alone. A turnstile in front gives
the exclusive test priority: once it waits, no new test starts until it has run. The turnstile alone lets an
ordinary test slip in between two exclusive ones (a released flock goes to any of its waiters, and the next
exclusive test then waits, alone, for that one to end), so an exclusive test also marks itself waiting and an
ordinary test starts only when none is: the exclusive tests run back to back.

Scheduling. `--dist loadgroup` hands tests out one at a time as workers free up, in collection order
(after the multi-test groups), except that the tests of one module of `ONE_WORKER_MODULES` or of
`tests/unit/` go to one worker together (their module-scoped fixtures, a wheel build or a broker, are built
once). The exclusive tests are collected first, then the longest ones (marked `long`), so that no long test
starts last while the other workers have nothing left to do. The `xdist_group` mark would say the groups per
module, but pytest-xdist 3.8 ignores it on pytest 9.2 (pytest-dev/pytest-xdist#1386), so the scheduler reads
node ids.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from xdist.scheduler import LoadGroupScheduling

#: The lowest port the pool uses: above the registered services most machines run (5432, 6379, 8080, 9092).
POOL_START = 10_000
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux default 32768)."""
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def worker_block(worker: str | None, count: int, stop: int) -> range:
    """The ports of xdist worker `worker` ("gw0", "gw1", ...; None when not under xdist) among `count`
    workers: one slice of [POOL_START, stop) each, disjoint from every other worker's."""
    index = int(worker[2:]) if worker and worker.startswith("gw") else 0
    count = max(count, index + 1)
    size = (stop - POOL_START) // count
    if size < 50:
        raise RuntimeError(
            f"{count} workers leave {size} ports each below the ephemeral range ({stop}): too few"
        )
    first = POOL_START + index * size
    return range(first, first + size)


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on, holds or lingers (TIME_WAIT) on `port`: no SO_REUSEADDR here, so the
    check is stricter than the servers' own bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _ports() -> Iterator[int]:
    block = worker_block(
        os.environ.get("PYTEST_XDIST_WORKER"),
        int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")),
        ephemeral_start(),
    )
    start = random.randrange(len(block))
    for i in itertools.count():
        yield block[(start + i) % len(block)]


_next_port = _ports()


def free_port(host: str = "127.0.0.1") -> int:
    """A port no other test of this session will be given and no process binds now."""
    for _ in range(1000):
        port = next(_next_port)
        if bindable(port, host):
            return port
    raise RuntimeError("no bindable port in this worker's block after 1000 tries")


#: Every port `kseg run` binds by default (besides the embedded broker's, a free one unless set).
KSEG_RUN_PORTS = (
    "KSEG_HTTP_PORT",
    "KSEG_WORKER_WEB_PORT",
    "KSEG_SINKS_WEB_PORT",
    "KSEG_WAREHOUSE_WEB_PORT",
    "KSEG_CONSOLE_PORT",
)


def kseg_run_ports() -> dict[str, str]:
    """A free port for each of `KSEG_RUN_PORTS`: two `kseg run`s at once (tests, the bench smoke) never
    meet on a default port."""
    return {name: str(free_port()) for name in KSEG_RUN_PORTS}


def lock_paths(worker_basetemp: str | None, run_id: str) -> tuple[Path, Path, Path]:
    """The turnstile, the run lock and the exclusive tests' waiting mark shared by the workers of one xdist
    session: in the session's base temporary directory (a worker's own is `<base>/popen-gwN`), which pytest
    cleans up like any other."""
    if worker_basetemp:
        base = Path(worker_basetemp).parent
    else:
        base = Path(tempfile.gettempdir()) / f"kseg-xdist-{run_id}"
    base.mkdir(parents=True, exist_ok=True)
    return base / "exclusive.turnstile", base / "exclusive.run", base / "exclusive.waiting"


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def nobody_holds(path: Path) -> bool:
    """True when no one holds any flock on `path` (checked by taking it exclusively, without waiting)."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


@contextlib.contextmanager
def run_slot(
    turnstile: Path, run: Path, exclusive: bool, waiting: Path | None = None, poll: float = 0.2
) -> Iterator[None]:
    """Hold the session's run lock: shared for an ordinary test, alone for an exclusive one (which keeps the
    turnstile until it is done, so tests that arrive meanwhile wait behind it). With `waiting`, an exclusive
    test holds it (shared) from the moment it waits, and an ordinary test that gets the turnstile while any
    does lets it go again: it starts only once no exclusive test waits or runs."""
    if exclusive:
        with contextlib.ExitStack() as held:
            if waiting is not None:
                held.enter_context(_flock(waiting, fcntl.LOCK_SH))
            held.enter_context(_flock(turnstile, fcntl.LOCK_EX))
            held.enter_context(_flock(run, fcntl.LOCK_EX))
            yield
        return
    with contextlib.ExitStack() as held:
        while True:
            with _flock(turnstile, fcntl.LOCK_EX):
                if waiting is None or nobody_holds(waiting):
                    held.enter_context(_flock(run, fcntl.LOCK_SH))
                    break
            time.sleep(poll)
        yield


#: Modules whose tests share an expensive module-scoped fixture (the installed wheel: `pip wheel` builds
#: inside the checkout, so two workers building at once could also trip over each other).
ONE_WORKER_MODULES = frozenset({"tests/integration/test_installed_wheel.py"})
#: Directories whose tests are handed out a module at a time: quick tests, module-scoped brokers.
BY_MODULE = ("tests/unit/",)


def module_group(nodeid: str) -> str | None:
    """The module whose tests `nodeid` is handed out with, or None when it goes out on its own."""
    module = nodeid.split("::", 1)[0]
    return module if module in ONE_WORKER_MODULES or module.startswith(BY_MODULE) else None


class ModuleGroupScheduling(LoadGroupScheduling):
    """`--dist loadgroup` with the module groups above (see the module docstring)."""

    def _split_scope(self, nodeid: str) -> str:
        return module_group(nodeid) or super()._split_scope(nodeid)


def exclusive_first(
    items: list[pytest.Item],
    exclusive: Callable[[pytest.Item], bool],
    long: Callable[[pytest.Item], bool] = lambda item: False,
) -> None:
    """Move the exclusive tests to the front, in place, then the `long` ones: the scheduler hands them out
    first, so the exclusive tests run alone at the start instead of waiting, mid-run, for every other
    worker's running test to end, and the longest of the others start next instead of last."""
    items.sort(key=lambda item: (not exclusive(item), not long(item)))
