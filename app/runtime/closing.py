"""Closes the worker's long-lived clients (the sinks' HTTP sessions) when the faust app stops.

A mode Service added with `faust_app.add_dependency`, like the output producer: it stops after the
agents that use the clients, so no delivery in flight loses its session, and aiohttp no longer reports
"Unclosed client session" when the worker exits.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mode import Service

log = logging.getLogger(__name__)


class Closing(Service):
    """The close functions registered by the domains, called in reverse order on stop."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def add(self, close: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(close)

    async def on_stop(self) -> None:
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:  # one failing close must not keep the others open
                log.exception("closing %r failed", close)
