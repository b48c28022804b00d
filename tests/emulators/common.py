"""What every emulator shares: a fault's budget (next N requests or D seconds) and the process main loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(kw_only=True)
class FaultBudget:
    """How long an injected fault lasts: the next `count` requests, or every request for `duration` s."""

    count: int | None = 1
    duration: float | None = None
    _until: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.duration is not None:
            self.count = None
            self._until = time.monotonic() + self.duration

    def active(self, now: float) -> bool:
        if self._until is not None:
            return now < self._until
        return self.count is None or self.count > 0

    def consume(self) -> None:
        if self._until is None and self.count is not None:
            self.count -= 1


class _Emulator(Protocol):
    @property
    def url(self) -> str: ...

    async def start(self) -> Any: ...

    async def stop(self) -> None: ...


async def serve_until_stopped(emu: _Emulator) -> None:
    """Start `emu`, print ``listening on <url>`` (what spawners wait for), stop it on a signal."""
    await emu.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(f"listening on {emu.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await emu.stop()
