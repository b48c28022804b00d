"""One JSON POST to Kochava's tracking host, over a shared aiohttp session with explicit timeouts.

No retries and no reading of the status (that is `sender` + the shared `policy`); transport failures
become `TransportError` (the shared "no HTTP status" error of kseg's HTTP sinks).
"""

from __future__ import annotations

from typing import Any

import orjson

from app.sinks.http import USER_AGENT, HttpPoster, HttpResult


def refused(result: HttpResult) -> bool:
    """A 2xx whose JSON says `"success": "0"`/false: Kochava took the request but not the event."""
    try:
        data = orjson.loads(result.body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("success") in ("0", 0, False)


class KochavaHttpClient(HttpPoster):
    """Posts `{tracking_url}{path}` with a JSON body."""

    def __init__(self, tracking_url: str, timeout: float = 10.0, *, max_connections: int = 10) -> None:
        super().__init__(timeout, max_connections=max_connections)
        self.base = tracking_url.rstrip("/")
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}

    async def post_json(self, path: str, body: dict[str, Any]) -> HttpResult:
        """One POST; any HTTP status is returned, timeouts/connection errors raise `TransportError`."""
        return await self.post(self.base + path, orjson.dumps(body), self._headers)
