"""The receiver's client error: a 4xx (or 429) answer with a JSON reason and what to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class ClientError(Exception):
    """A 4xx answer: status, a machine-readable code and a sentence saying what to do.

    Never put a credential or a raw identifier into `message` or `details`: they are sent back and
    counted by `code` (docs/security.md).
    """

    status: int
    code: str
    message: str
    details: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            body.update(self.details)
        return web.json_response(
            body, status=self.status, headers=self.headers, dumps=lambda v: orjson.dumps(v).decode()
        )
