"""A strict local emulator of Segment's HTTP Tracking API, for kseg's tests and benchmarks.

Why it exists: the Segment sink must be tested over real HTTP (status codes, headers, gzip, dropped
connections, timeouts) without a network or a real write key, and with faults on demand.

**Deliberately stricter than Segment.** Segment answers 200 to almost everything and drops invalid
events *after* the 200 (docs/reference.md#segment-silent-200). In strict mode (the default) this emulator
answers **400 with the reason** instead, for: an invalid message, a batch of more than 2,500 items,
a message over 32 KB, a missing `timestamp`. That turns a silent loss in production into a failing test.
`strict=False` (`--lenient`) imitates Segment: 200, and the bad messages land in `dropped`, not `messages`.
Other deliberate choices:

- request bodies are limited to 500,000 bytes *after* decompression (Segment's 500 KB is undocumented
  as to gzip, so we test the stricter reading);
- Basic auth must carry the write key as user name and an **empty** password; `writeKey` in the JSON
  body is accepted too;
- a request whose client went away while a `slow` fault was sleeping is counted as `abandoned` and its
  messages are *not* recorded (deterministic; use a `drop` fault with `after_accept=True` to emulate
  "Segment got it but the answer was lost").

Use in-process::

    async with SegmentEmulator(write_key="wk") as emu:
        emu.fail_next(2, status=429, retry_after=0.1)
        ...  # post to f"{emu.url}/v1/batch"
        assert emu.stats()["messages"] == 10

or as a process (prints ``listening on http://127.0.0.1:PORT`` once ready; ``--port 0`` picks a free port)::

    python -m tests.emulators.segment_api --port 8765 --write-key wk --record accepted.jsonl

Control endpoints: ``GET /_emulator/stats``, ``GET /_emulator/messages``, ``POST /_emulator/faults``
(JSON, see `SegmentEmulator.configure`), ``DELETE /_emulator/faults``, ``POST /_emulator/reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import math
import sys
import time
import zlib
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, Self

import orjson
from aiohttp import web

from tests.emulators.common import FaultBudget, LoopbackServer, serve_until_stopped

MAX_REQUEST_BYTES = 500_000
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_ITEMS = 2_500
MAX_MESSAGE_ID_CHARS = 99
MESSAGE_TYPES = frozenset({"track", "identify", "alias", "group", "page", "screen"})
SINGLE_PATHS = ("track", "identify", "alias", "group", "page", "screen")

FaultKind = Literal["status", "slow", "drop"]


@dataclass
class Fault(FaultBudget):
    """One injected fault, applied to the next `count` requests or to every request for `duration` s.

    - ``status``: answer `status` without recording anything; with `retry_after` set the answer
      carries `Retry-After` (and, for 429, `X-RateLimit-Reset`), without it neither header;
    - ``slow``: sleep `delay` seconds, then process the request normally (or answer `status` if set);
    - ``drop``: close the connection without any response; with `after_accept` the messages are
      recorded first (Segment got them, the client never learns it).
    """

    kind: FaultKind = "status"
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    after_accept: bool = False

    def __post_init__(self) -> None:
        if self.kind == "status" and self.status is None:
            self.status = 500
        super().__post_init__()

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Fault:
        """Build a fault from the control API's JSON (`{"kind": "status", "status": 429, ...}`)."""
        allowed = {"kind", "status", "retry_after", "delay", "after_accept", "count", "duration"}
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        kind = raw.get("kind", "status")
        if kind not in ("status", "slow", "drop"):
            raise ValueError(f"unknown fault kind {kind!r}")
        return cls(**raw)


@dataclass
class RequestRecord:
    """What one request looked like, for assertions (e.g. sentAt changes per attempt).

    `status` is None when no answer was sent (dropped or abandoned connection)."""

    path: str
    status: int | None
    message_ids: list[str]
    gzip: bool
    sent_at: str | None
    body_bytes: int
    at: float


class _Reject(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _is_iso8601(value: Any) -> bool:
    if not isinstance(value, str) or len(value) < 10:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def message_problem(msg: Any, *, require_timestamp: bool = True) -> str | None:
    """The first reason Segment would drop (or we refuse) this message, or None when it is fine.

    Written independently of kseg's own `app.sinks.segment.validation` on purpose: the emulator is
    the oracle, so it must not share the code it checks.
    """
    if not isinstance(msg, dict):
        return "message is not a JSON object"
    kind = msg.get("type")
    if kind not in MESSAGE_TYPES:
        return f"type must be one of {sorted(MESSAGE_TYPES)}, got {kind!r}"
    mid = msg.get("messageId")
    if not isinstance(mid, str) or not mid.strip():
        return "messageId must be a non-empty string"
    if len(mid) > MAX_MESSAGE_ID_CHARS:
        return f"messageId must be shorter than 100 characters ({len(mid)})"
    if ("timestamp" in msg or require_timestamp) and not _is_iso8601(msg.get("timestamp")):
        return "timestamp must be an ISO-8601 string"
    for key in ("userId", "anonymousId"):
        if msg.get(key) is not None and not isinstance(msg[key], str):
            return f"id_not_string: {key} must be a string"
    if kind == "alias":
        if not (_nonempty_str(msg.get("userId")) and _nonempty_str(msg.get("previousId"))):
            return "alias needs non-empty string userId and previousId"
    elif not (_nonempty_str(msg.get("userId")) or _nonempty_str(msg.get("anonymousId"))):
        return "no_user_anon_id: userId or anonymousId is required"
    if kind == "track":
        if "event" not in msg:
            return "event_not_defined"
        if not _nonempty_str(msg["event"]):
            return "event_not_string: event must be a non-empty string"
    if kind == "group" and not _nonempty_str(msg.get("groupId")):
        return "group needs a non-empty string groupId"
    for key in ("properties", "traits"):
        if key in msg and not isinstance(msg[key], dict):
            return f"{key}_not_object"
    context = msg.get("context")
    if context is not None:
        if not isinstance(context, dict):
            return "context must be an object"
        device = context.get("device")
        if device is not None:
            if not isinstance(device, dict):
                return "context.device must be an object"
            if "advertisingId" in device and not isinstance(device["advertisingId"], str):
                return "device_advertisingid_should_be_string"
    size = len(orjson.dumps(msg))
    if size > MAX_MESSAGE_BYTES:
        return f"message is {size} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
    return None


def _is_poison(msg: Any) -> bool:
    return (
        isinstance(msg, dict)
        and isinstance(msg.get("properties"), dict)
        and msg["properties"].get("poison") is True
    )


class SegmentEmulator(LoopbackServer):
    """In-process aiohttp server speaking Segment's Tracking API, with recording and fault injection."""

    def __init__(
        self,
        write_key: str = "test-write-key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        strict: bool = True,
        require_timestamp: bool = True,
        poison: bool = False,
        rate_limit: float | None = None,
        record_path: str | Path | None = None,
        store_messages: bool = True,
    ) -> None:
        self.write_key = write_key
        self.host = host
        self.port = port
        self.strict = strict
        self.require_timestamp = require_timestamp
        self.poison = poison
        self.rate_limit = rate_limit
        self.store_messages = store_messages
        self._record_path = Path(record_path) if record_path else None
        self._record_file: IO[bytes] | None = None
        self.faults: deque[Fault] = deque()
        self._recent: deque[float] = deque()
        self.reset()

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL (no `/v1`), the value kseg's `SEGMENT_ENDPOINT` takes."""
        if self._runner is None:
            raise RuntimeError("emulator not started")
        return f"http://{self.host}:{self.port}"

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/batch", self._handle_batch)
        app.router.add_post("/v1/import", self._handle_batch)
        for name in SINGLE_PATHS:
            app.router.add_post(f"/v1/{name}", self._handle_single)
        app.router.add_get("/_emulator/stats", self._handle_stats)
        app.router.add_get("/_emulator/messages", self._handle_messages)
        app.router.add_post("/_emulator/faults", self._handle_faults)
        app.router.add_delete("/_emulator/faults", self._handle_clear_faults)
        app.router.add_post("/_emulator/reset", self._handle_reset)
        return app

    async def start(self) -> Self:
        if self._record_path is not None:
            self._record_file = self._record_path.open("ab")
        return await super().start()

    async def stop(self) -> None:
        await super().stop()
        if self._record_file is not None:
            self._record_file.close()
            self._record_file = None

    # ---- recording ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every recorded request and message (faults and settings are kept)."""
        self.messages: list[dict[str, Any]] = []
        self.dropped: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[RequestRecord] = []
        self.requests_by_status: Counter[int] = Counter()
        self.by_message_id: Counter[str] = Counter()
        self.message_count = 0
        self.dropped_connections = 0
        self.abandoned = 0

    def stats(self) -> dict[str, Any]:
        """Counts for assertions and for `GET /_emulator/stats`."""
        return {
            "requests": sum(self.requests_by_status.values()) + self.dropped_connections + self.abandoned,
            "requests_by_status": {str(k): v for k, v in sorted(self.requests_by_status.items())},
            "dropped_connections": self.dropped_connections,
            "abandoned": self.abandoned,
            "messages": self.message_count,
            "unique_message_ids": len(self.by_message_id),
            "duplicate_messages": self.message_count - len(self.by_message_id),
            "silently_dropped": len(self.dropped),
            "pending_faults": len(self.faults),
        }

    def _accept(self, batch: list[dict[str, Any]]) -> None:
        for msg in batch:
            self.by_message_id[msg["messageId"]] += 1
        self.message_count += len(batch)
        if self.store_messages:
            self.messages.extend(batch)
        if self._record_file is not None:
            self._record_file.write(b"".join(orjson.dumps(m) + b"\n" for m in batch))
            self._record_file.flush()

    # ---- faults ------------------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> None:
        self.faults.append(fault)

    def fail_next(self, n: int = 1, *, status: int = 500, retry_after: float | None = None) -> None:
        """Answer the next `n` requests with `status` (429 should come with `retry_after`)."""
        self.add_fault(Fault("status", status=status, retry_after=retry_after, count=n))

    def fail_for(self, seconds: float, *, status: int = 503, retry_after: float | None = None) -> None:
        """Answer every request with `status` for the next `seconds`."""
        self.add_fault(Fault("status", status=status, retry_after=retry_after, duration=seconds))

    def slow_next(self, n: int = 1, *, delay: float) -> None:
        """Sleep `delay` seconds before answering each of the next `n` requests."""
        self.add_fault(Fault("slow", delay=delay, count=n))

    def drop_next(self, n: int = 1, *, after_accept: bool = False) -> None:
        """Close the connection without answering the next `n` requests."""
        self.add_fault(Fault("drop", after_accept=after_accept, count=n))

    def clear_faults(self) -> None:
        self.faults.clear()

    def configure(self, body: dict[str, Any]) -> None:
        """Apply a control-API JSON body: `{"faults": [...], "poison": bool, "rate_limit": R|null,
        "strict": bool, "clear": bool}`; each fault is `Fault.from_json`."""
        faults = [Fault.from_json(f) for f in body.get("faults", [])]
        if body.get("clear"):
            self.clear_faults()
        self.faults.extend(faults)
        if "poison" in body:
            self.poison = bool(body["poison"])
        if "rate_limit" in body:
            self.rate_limit = None if body["rate_limit"] is None else float(body["rate_limit"])
        if "strict" in body:
            self.strict = bool(body["strict"])

    def _take_fault(self) -> Fault | None:
        now = time.monotonic()
        while self.faults and not self.faults[0].active(now):
            self.faults.popleft()
        for fault in self.faults:
            if fault.active(now):
                fault.consume()
                return fault
        return None

    def _rate_limited(self) -> float | None:
        """Seconds until a slot frees when over `rate_limit` requests in the last second, else None."""
        if not self.rate_limit:
            return None
        now = time.monotonic()
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.rate_limit:
            return max(0.001, 1.0 - (now - self._recent[0]))
        self._recent.append(now)
        return None

    # ---- HTTP handlers -----------------------------------------------------------------------
    def _error(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        self.requests_by_status[status] += 1
        return web.json_response({"code": code, "message": message}, status=status, headers=headers)

    def _fault_response(self, status: int, retry_after: float | None) -> web.Response:
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = _fmt_seconds(retry_after)
            if status == 429:
                headers["X-RateLimit-Reset"] = _fmt_seconds(retry_after)
        return self._error(status, "injected_fault", f"injected {status}", headers)

    def _authorized(self, request: web.Request, body: Any) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, sep, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return bool(sep) and user == self.write_key and password == ""
        return isinstance(body, dict) and body.get("writeKey") == self.write_key

    async def _read_body(self, request: web.Request) -> bytes:
        raw = await request.read()
        # aiohttp decompresses gzip request bodies itself; decode here only if it did not.
        if request.headers.get("Content-Encoding", "").lower() == "gzip" and raw[:2] == b"\x1f\x8b":
            inflater = zlib.decompressobj(wbits=31)
            try:
                raw = inflater.decompress(raw, MAX_REQUEST_BYTES + 1)
            except zlib.error as exc:
                raise _Reject(400, "invalid_gzip", f"invalid gzip body: {exc}") from exc
        if len(raw) > MAX_REQUEST_BYTES:
            raise _Reject(400, "request_too_large", f"request body over {MAX_REQUEST_BYTES} bytes")
        return raw

    async def _handle_batch(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, single=None)

    async def _handle_single(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, single=request.path.rsplit("/", 1)[-1])

    async def _handle(self, request: web.Request, single: str | None) -> web.StreamResponse:
        wait = self._rate_limited()
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            headers = {"Retry-After": str(seconds), "X-RateLimit-Reset": str(seconds)}
            return self._error(429, "rate_limited", "too many requests", headers)
        fault = self._take_fault()
        try:
            raw = await self._read_body(request)
        except _Reject as rej:
            return self._error(rej.status, rej.code, rej.message)
        record = _peek(request, raw)
        self.requests.append(record)
        if fault is not None and fault.kind == "slow":
            try:
                await asyncio.sleep(fault.delay)
            except asyncio.CancelledError:
                self.abandoned += 1
                raise
            if request.transport is None or request.transport.is_closing():
                self.abandoned += 1
                raise asyncio.CancelledError
        if fault is not None and fault.status is not None and fault.kind != "drop":
            record.status = fault.status
            return self._fault_response(fault.status, fault.retry_after)
        if fault is not None and fault.kind == "drop" and not fault.after_accept:
            return self._drop(request)
        try:
            batch, _ = self._parse(request, raw, single)
        except _Reject as rej:
            record.status = rej.status
            return self._error(rej.status, rej.code, rej.message)
        record.status = 200
        self._accept(batch)
        if fault is not None and fault.kind == "drop":
            return self._drop(request)
        self.requests_by_status[200] += 1
        return web.json_response({"success": True})

    def _drop(self, request: web.Request) -> web.StreamResponse:
        self.dropped_connections += 1
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError  # aiohttp then writes nothing: the client sees a disconnect

    def _parse(
        self, request: web.Request, raw: bytes, single: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _Reject(400, "invalid_json", f"invalid JSON: {exc}") from exc
        if not self._authorized(request, body):
            raise _Reject(401, "unauthorized", "invalid or missing write key")
        if not isinstance(body, dict):
            raise _Reject(400, "invalid_request", "body must be a JSON object")
        sent_at = body.get("sentAt")
        if sent_at is not None and not _is_iso8601(sent_at):
            raise _Reject(400, "invalid_request", "sentAt must be an ISO-8601 string")
        if single is not None:
            msg = {k: v for k, v in body.items() if k != "writeKey"}
            msg["type"] = single
            batch: list[Any] = [msg]
        else:
            items = body.get("batch")
            if not isinstance(items, list):
                raise _Reject(400, "invalid_request", "batch must be an array")
            if not items:
                raise _Reject(400, "empty_batch", "batch is empty")
            if len(items) > MAX_BATCH_ITEMS:
                if self.strict:
                    raise _Reject(400, "batch_too_large", f"{len(items)} items, over {MAX_BATCH_ITEMS}")
                self.dropped.extend(("batch_too_large", m) for m in items)
                return [], sent_at
            batch = items
        good: list[dict[str, Any]] = []
        for index, msg in enumerate(batch):
            problem = message_problem(msg, require_timestamp=self.require_timestamp)
            if problem is not None:
                if self.strict:
                    raise _Reject(400, "invalid_message", f"batch[{index}]: {problem}")
                self.dropped.append((problem, msg))
                continue
            good.append(msg)
        if self.poison:
            for index, msg in enumerate(good):
                if _is_poison(msg):
                    raise _Reject(400, "poison", f"batch[{index}] ({msg['messageId']}) is poison")
        return good, sent_at

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _handle_messages(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.messages), content_type="application/json")

    async def _handle_faults(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            self.configure(body)
        except (ValueError, TypeError) as exc:
            return web.json_response({"code": "bad_fault", "message": str(exc)}, status=400)
        return web.json_response({"pending_faults": len(self.faults), "poison": self.poison})

    async def _handle_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"pending_faults": 0})

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})


def _fmt_seconds(value: float) -> str:
    """Integer seconds when whole (the HTTP form), else a decimal so tests can use sub-second waits."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _peek(request: web.Request, raw: bytes) -> RequestRecord:
    """Best-effort record of a request before any check (status filled in later; None = no answer)."""
    ids: list[str] = []
    sent_at = None
    with contextlib.suppress(orjson.JSONDecodeError):
        body = orjson.loads(raw)
        if isinstance(body, dict):
            sent_at = body.get("sentAt") if isinstance(body.get("sentAt"), str) else None
            batch = body.get("batch")
            items: list[Any] = batch if isinstance(batch, list) else [body]
            ids = [str(m.get("messageId")) for m in items if isinstance(m, dict)]
    return RequestRecord(request.path, None, ids, _gz(request), sent_at, len(raw), _t())


def _gz(request: web.Request) -> bool:
    return request.headers.get("Content-Encoding", "").lower() == "gzip"


def _t() -> float:
    return time.monotonic()


async def _serve(args: argparse.Namespace) -> None:
    emu = SegmentEmulator(
        args.write_key,
        host=args.host,
        port=args.port,
        strict=not args.lenient,
        poison=args.poison,
        rate_limit=args.rate_limit,
        record_path=args.record,
        store_messages=not args.no_store,
    )
    await serve_until_stopped(emu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulators.segment_api", description="Strict local Segment Tracking API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--record", help="append each accepted message as a JSON line to this file")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests/s before answering 429")
    parser.add_argument("--poison", action="store_true", help="400 any batch with properties.poison true")
    parser.add_argument("--lenient", action="store_true", help="Segment-like: 200 and drop invalid messages")
    parser.add_argument("--no-store", action="store_true", help="count messages but keep no bodies in memory")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
