"""What kseg's HTTP sinks share below their retry policies: one pooled aiohttp session with explicit
timeouts, one POST that returns every HTTP answer and turns every transport failure into
`TransportError` (the shared "no HTTP status" error of `app/sinks/errors.py`)."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

from app.sinks.errors import TransportError
from app.sinks.policy import transport_error_kind

USER_AGENT = "kseg/0.1 (+aiohttp)"
#: Error bodies are kept for dead letters and logs, truncated to this.
MAX_ERROR_BODY = 4096


@dataclass(frozen=True)
class HttpResult:
    """What the API answered: status, headers and (truncated) body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class HttpPoster:
    """A lazily created session (DNS cached 5 min only: API hosts' IPs change, and a stale one shows up as
    5xx) and `post()`. Deliberately dumb: no retries and no interpretation of the status."""

    def __init__(
        self,
        timeout: float,
        *,
        connect_timeout: float | None = None,
        max_connections: int = 10,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.timeout = aiohttp.ClientTimeout(
            total=timeout,
            connect=min(timeout, connect_timeout if connect_timeout is not None else 10.0),
            sock_read=timeout,
        )
        self._max_connections = max_connections
        self._session = session
        self._owns_session = session is None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
            self._owns_session = True
        return self._session

    async def post(self, url: str, data: bytes, headers: dict[str, str]) -> HttpResult:
        """One POST; any HTTP status is returned, timeouts/connection errors raise `TransportError`."""
        session = self._get_session()
        try:
            async with session.post(url, data=data, headers=headers, timeout=self.timeout) as resp:
                body = await resp.content.read(MAX_ERROR_BODY) if resp.status >= 300 else await resp.read()
                return HttpResult(resp.status, resp.headers, body[:MAX_ERROR_BODY])
        except Exception as exc:
            kind = transport_error_kind(exc)
            if kind is None:
                raise
            raise TransportError(kind, exc) from exc

    async def close(self) -> None:
        if self._session is not None and self._owns_session and not self._session.closed:
            await self._session.close()
