"""Run an emulator as a process until SIGINT/SIGTERM, announcing its URL (shared by every emulator's main)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any, Protocol


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
