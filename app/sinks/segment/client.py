"""One `/v1/batch` POST to Segment, over a shared aiohttp session, with explicit timeouts.

Deliberately dumb: no retries and no interpretation of the status (that is `sender` + `policy`).
It returns every HTTP answer and turns every transport failure into `SegmentTransportError`.
"""

from __future__ import annotations

import asyncio
import base64
import gzip as gzip_mod
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from app.config import SEGMENT_US_ENDPOINT
from app.records import utc_now_iso
from app.sinks.segment.policy import SegmentTransportError, transport_error_kind

USER_AGENT = "kseg/0.1 (+aiohttp)"
#: Bodies above this are gzipped in a thread, so a 450 KB batch never stalls the event loop.
_GZIP_IN_THREAD_BYTES = 64 * 1024
#: Error bodies are kept for dead letters and logs, truncated to this.
MAX_ERROR_BODY = 4096


@dataclass(frozen=True)
class HttpResult:
    """What Segment answered: status, headers and (truncated) body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class SegmentHttpClient:
    """Posts batches to `{endpoint}/v1/batch` with Basic auth (write key, empty password)."""

    def __init__(
        self,
        write_key: str,
        endpoint: str = SEGMENT_US_ENDPOINT,
        timeout: float = 15.0,
        gzip: bool = True,
        *,
        connect_timeout: float | None = None,
        max_connections: int = 10,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not write_key:
            raise ValueError("write_key is empty: use DryRunWriter when there is no SEGMENT_WRITE_KEY")
        self.url = endpoint.rstrip("/") + "/v1/batch"
        self.gzip = gzip
        self.timeout = aiohttp.ClientTimeout(
            total=timeout,
            connect=min(timeout, connect_timeout if connect_timeout is not None else 10.0),
            sock_read=timeout,
        )
        token = base64.b64encode(f"{write_key}:".encode()).decode("ascii")
        self._headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        if gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._max_connections = max_connections
        self._session = session
        self._owns_session = session is None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # DNS cached 5 min only: Segment's IPs change and a stale one shows up as 5xx (segment.md §1.1).
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
            self._owns_session = True
        return self._session

    async def encode(self, batch: list[dict[str, Any]]) -> bytes:
        """The request body, `sentAt` stamped now (each attempt gets a fresh one, like the library)."""
        body = orjson.dumps({"batch": batch, "sentAt": utc_now_iso()})
        if not self.gzip:
            return body
        if len(body) > _GZIP_IN_THREAD_BYTES:
            return await asyncio.to_thread(gzip_mod.compress, body, 6)
        return gzip_mod.compress(body, 6)

    async def post_batch(self, batch: list[dict[str, Any]]) -> HttpResult:
        """One POST; any HTTP status is returned, timeouts/connection errors raise `SegmentTransportError`."""
        data = await self.encode(batch)
        session = self._get_session()
        try:
            async with session.post(self.url, data=data, headers=self._headers, timeout=self.timeout) as resp:
                body = await resp.content.read(MAX_ERROR_BODY) if resp.status >= 300 else await resp.read()
                return HttpResult(resp.status, resp.headers, body[:MAX_ERROR_BODY])
        except Exception as exc:
            kind = transport_error_kind(exc)
            if kind is None:
                raise
            raise SegmentTransportError(kind, exc) from exc

    async def close(self) -> None:
        if self._session is not None and self._owns_session and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> SegmentHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
