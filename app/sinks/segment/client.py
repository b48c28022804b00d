"""One `/v1/batch` POST to Segment, over a shared aiohttp session, with explicit timeouts.

Deliberately dumb: no retries and no interpretation of the status (that is `sender` + `policy`); the
session and the POST itself are `app.sinks.http.HttpPoster`, shared with the Kochava sink.
"""

from __future__ import annotations

import asyncio
import base64
import gzip as gzip_mod
from typing import Any

import aiohttp
import orjson

from app.records import utc_now_iso
from app.sections import SEGMENT_US_ENDPOINT
from app.sinks.http import USER_AGENT, HttpPoster, HttpResult

#: Bodies above this are gzipped in a thread, so a 450 KB batch never stalls the event loop.
_GZIP_IN_THREAD_BYTES = 64 * 1024


class SegmentHttpClient(HttpPoster):
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
        super().__init__(
            timeout, connect_timeout=connect_timeout, max_connections=max_connections, session=session
        )
        self.url = endpoint.rstrip("/") + "/v1/batch"
        self.gzip = gzip
        token = base64.b64encode(f"{write_key}:".encode()).decode("ascii")
        self._headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        if gzip:
            self._headers["Content-Encoding"] = "gzip"

    async def encode(self, batch: list[dict[str, Any]]) -> bytes:
        """The request body, `sentAt` stamped now (each attempt gets a fresh one, like the library)."""
        body = orjson.dumps({"batch": batch, "sentAt": utc_now_iso()})
        if not self.gzip:
            return body
        if len(body) > _GZIP_IN_THREAD_BYTES:
            return await asyncio.to_thread(gzip_mod.compress, body, 6)
        return gzip_mod.compress(body, 6)

    async def post_batch(self, batch: list[dict[str, Any]]) -> HttpResult:
        """One POST; any HTTP status is returned, timeouts/connection errors raise `TransportError`."""
        return await self.post(self.url, await self.encode(batch), self._headers)
