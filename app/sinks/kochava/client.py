"""One JSON POST to Kochava's tracking host, over a shared aiohttp session with explicit timeouts.

No retries and no reading of the status (that is `sender` + the shared `policy`); transport failures
become `SegmentTransportError` (the shared "no HTTP status" error of kseg's HTTP sinks).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from app.sinks.segment.client import MAX_ERROR_BODY, USER_AGENT, HttpResult
from app.sinks.segment.policy import SegmentTransportError, transport_error_kind


def refused(result: HttpResult) -> bool:
    """A 2xx whose JSON says `"success": "0"`/false: Kochava took the request but not the event."""
    try:
        data = orjson.loads(result.body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("success") in ("0", 0, False)


class KochavaHttpClient:
    """Posts `{tracking_url}{path}` with a JSON body."""

    def __init__(self, tracking_url: str, timeout: float = 10.0, *, max_connections: int = 10) -> None:
        self.base = tracking_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0), sock_read=timeout)
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        return self._session

    async def post(self, path: str, body: dict[str, Any]) -> HttpResult:
        """One POST; any HTTP status is returned, timeouts/connection errors raise `SegmentTransportError`."""
        session = self._get_session()
        try:
            async with session.post(
                self.base + path, data=orjson.dumps(body), headers=self._headers, timeout=self.timeout
            ) as resp:
                data = await resp.content.read(MAX_ERROR_BODY)
                return HttpResult(resp.status, resp.headers, data)
        except Exception as exc:
            kind = transport_error_kind(exc)
            if kind is None:
                raise
            raise SegmentTransportError(kind, exc) from exc

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
