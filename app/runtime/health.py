"""Liveness and readiness of every kseg process (receiver, worker, warehouse loader): one JSON shape.

`GET /healthz` answers 200 `{"status": "alive"}` while the process serves HTTP. `GET /readyz` answers
`{"ready": bool, "blocked": {component: reason}, ...details}`: 200 when nothing blocks, else 503 with every
reason, so an operator (and `kseg run`, compose and the tests) reads why in one place, whichever process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ALIVE: dict[str, str] = {"status": "alive"}


@dataclass
class Health:
    """What keeps a process from being ready, by component (e.g. Segment answered 401, no database)."""

    blocked_reasons: dict[str, str] = field(default_factory=dict)

    def block(self, component: str, reason: str) -> None:
        self.blocked_reasons[component] = reason

    def unblock(self, component: str) -> None:
        self.blocked_reasons.pop(component, None)

    @property
    def ready(self) -> bool:
        return not self.blocked_reasons


def readiness(blocked: Mapping[str, str], **details: Any) -> tuple[dict[str, Any], int]:
    """The /readyz body and status: ready exactly when nothing blocks; `details` are the process's figures."""
    ready = not blocked
    return {"ready": ready, "blocked": dict(blocked), **details}, 200 if ready else 503


async def healthz(_request: web.Request) -> web.Response:
    """/healthz of an aiohttp process (the worker answers the same body through faust's web)."""
    return web.json_response(ALIVE)


def readyz_response(blocked: Mapping[str, str], **details: Any) -> web.Response:
    """/readyz of an aiohttp process."""
    body, status = readiness(blocked, **details)
    return web.json_response(body, status=status)
