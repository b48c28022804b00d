"""Run an in-process emulator as a command: start it, print its URL, stop on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any


async def serve_until_signal(emu: Any) -> None:
    """Start `emu`, print `listening on <url>` (what scripts wait for), stop it on SIGINT or SIGTERM."""
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
