"""Reading a request body safely: a size limit before and after decompression, a read deadline, and
our own `Content-Encoding` decoding, so a hostile body is a precise 4xx and never a 500.

aiohttp's own decompression is switched off (`auto_decompress=False` in `build_app`): its errors
surface as a 500 from deep inside the parser, and it does not bound the inflated size (a 64 KiB gzip
bomb inflates to gigabytes).
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import ClientPayloadError, web

from app.receiver.errors import ClientError

#: zlib `wbits` per accepted coding: gzip framing, zlib framing (what "deflate" means in HTTP) and,
#: for the clients that send raw deflate under that name, a fallback to raw.
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
ACCEPTED_ENCODINGS = ("identity", *_WBITS)


def _too_large(limit: int) -> ClientError:
    return ClientError(413, "body_too_large", f"The body is over {limit} bytes.", {"limit": limit})


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    """Decompress one layer, never producing more than `limit` + 1 bytes."""
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit:
        raise _too_large(limit)
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError("truncated or trailing data")
    return out


def decode(body: bytes, encoding_header: str | None, limit: int) -> bytes:
    """The body with every `Content-Encoding` layer removed (applied in order, so removed in reverse)."""
    codings = [c.strip().lower() for c in (encoding_header or "").split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        wbits = _WBITS.get(coding)
        if wbits is None:
            raise ClientError(
                400,
                "unsupported_content_encoding",
                "Content-Encoding must be gzip, deflate or identity (or absent).",
                {"accepted": list(ACCEPTED_ENCODINGS)},
            )
        try:
            body = _inflate(body, wbits, limit)
        except ClientError:
            raise
        except (zlib.error, ValueError):
            try:
                if coding != "deflate":
                    raise
                body = _inflate(body, -zlib.MAX_WBITS, limit)
            except (zlib.error, ValueError) as exc:
                raise ClientError(
                    400,
                    "invalid_content_encoding",
                    f"The body does not decode as {coding}: send it compressed as declared, or drop "
                    "the Content-Encoding header.",
                ) from exc
    return body


async def _read_upto(request: web.Request, most: int) -> bytes:
    """Chunks until end of body or `most` bytes (`StreamReader.read(n)` returns after one chunk)."""
    chunks: list[bytes] = []
    size = 0
    while size < most:
        chunk = await request.content.read(most - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The decoded body, at most `limit` bytes both on the wire and after decompression.

    413 when larger, 408 when the client does not finish sending within `timeout` seconds, 400 when
    the declared encoding does not decode.
    """
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        raw = await asyncio.wait_for(_read_upto(request, limit + 1), timeout)
    except TimeoutError as exc:
        raise ClientError(
            408, "body_timeout", f"The body did not arrive within {timeout:g} s; send it in one go."
        ) from exc
    except (ConnectionError, ClientPayloadError) as exc:
        # The client closed the connection (or broke the framing) before the body ended: its mistake,
        # counted like any other refusal, even though nobody is left to read the answer.
        raise ClientError(
            400,
            "body_incomplete",
            "The connection closed before the body was complete; send the whole body.",
        ) from exc
    if len(raw) > limit:
        raise _too_large(limit)
    return decode(raw, request.headers.get("Content-Encoding"), limit)
