"""A strict local emulator of Kochava's inbound S2S event API and IdentityLink, for kseg's tests.

Endpoints (docs/reference.md#kochava-s2s-and-identitylink): ``POST /track/json`` and
``POST /v1/cpi/identityLink.php``, JSON bodies.

**Deliberately stricter than Kochava**, which answers 200 to a lot and drops events later (free accounts
drop them silently): here every problem is a 400 with ``{"success": "0", "error": code, "message": ...}``:

- `/track/json`: `kochava_app_id` must equal the configured app GUID; `action` is `"install"` or `"event"`;
  `kochava_device_id` a non-empty string; `device_ids` an object of non-empty strings with no junk
  (all-zero or placeholder) value; `usertime` **epoch seconds** (an int or a digit string, not ms, not ISO);
  for `action: "event"`, `data.event_name` a non-empty string and `data.event_data` an object when present;
  `app_tracking_transparency.att` a bool when the block is present. An `idfa` without that block is
  accepted but counted as `idfa_dropped` (Kochava drops it).
- `/v1/cpi/identityLink.php`: `kochava_app_id` as above; `device_id` a non-empty object of non-empty strings;
  `data` a non-empty object of non-empty string values (e.g. `app_userid`).
- Success is 200 ``{"success":"1"}``.

Faults (`fail_next`, `fail_for`, `slow_next`, or ``POST /_emulator/faults``): answer a status (5xx, 429 with
`Retry-After`) without recording, or sleep `delay` seconds (a client timeout) before answering normally.

In-process::

    async with KochavaEmulator(app_guid="kochava-app") as emu:
        emu.fail_next(3, status=503)
        ...  # POST to f"{emu.url}/track/json"
        assert len(emu.events) == 1

As a process (prints ``listening on http://127.0.0.1:PORT``)::

    python -m tests.emulators.kochava_api --port 0 --app-guid kochava-app

Control endpoints: ``GET /_emulator/stats``, ``GET /_emulator/requests`` (accepted bodies by endpoint),
``POST /_emulator/faults``, ``DELETE /_emulator/faults``, ``POST /_emulator/reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.emulators.common import FaultBudget, LoopbackServer, serve_until_stopped

TRACK_PATH = "/track/json"
IDENTITY_LINK_PATH = "/v1/cpi/identityLink.php"
MAX_BODY_BYTES = 1_000_000
#: Plausible epoch seconds: 2001-09-09 .. 2286-11-20. Milliseconds (13 digits) fall outside.
MIN_EPOCH, MAX_EPOCH = 1_000_000_000, 9_999_999_999
_JUNK = re.compile(r"^[0\-]*$")
_PLACEHOLDERS = frozenset({"null", "none", "undefined", "unknown", "-1", "nil"})


@dataclass
class Fault(FaultBudget):
    """Answer `status` (maybe with `Retry-After`) or sleep `delay` s, for `count` requests or `duration` s."""

    status: int | None = 503
    retry_after: float | None = None
    delay: float = 0.0
    path: str | None = None  # only requests to this path; None = both endpoints

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Fault:
        allowed = {"status", "retry_after", "delay", "count", "duration", "path"}
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        return cls(**raw)


class _Reject(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _junk(value: str) -> bool:
    text = value.strip()
    return not text or bool(_JUNK.match(text)) or text.lower() in _PLACEHOLDERS


def _string_map(value: Any, name: str, *, junk_check: bool) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise _Reject(f"missing_{name}", f"`{name}` must be a non-empty object.")
    for key, item in value.items():
        if not isinstance(item, str) or not item.strip():
            raise _Reject(f"invalid_{name}", f"`{name}.{key}` must be a non-empty string.")
        if junk_check and _junk(item):
            raise _Reject("junk_device_id", f"`{name}.{key}` is a zeroed or placeholder id: {item!r}.")
    return value


def usertime_problem(value: Any) -> str | None:
    """None when `value` is epoch seconds (int or digit string), else what is wrong."""
    if isinstance(value, bool):
        return "`usertime` must be epoch seconds, not a bool."
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int):
        return "`usertime` must be epoch seconds (an integer), e.g. 1735689600."
    if not MIN_EPOCH <= value <= MAX_EPOCH:
        return f"`usertime` {value} is not epoch seconds (milliseconds?)."
    return None


def track_problem(body: Any, app_guid: str) -> tuple[str, str] | None:
    """(code, message) for an invalid `/track/json` body, else None."""
    try:
        if not isinstance(body, dict):
            raise _Reject("invalid_json", "The body must be a JSON object.")
        if body.get("kochava_app_id") != app_guid:
            raise _Reject("unknown_app", "App does not exist: `kochava_app_id` is not this app's GUID.")
        if body.get("action") not in ("install", "event"):
            raise _Reject("invalid_action", '`action` must be "install" or "event".')
        device = body.get("kochava_device_id")
        if not isinstance(device, str) or _junk(device):
            raise _Reject("missing_kochava_device_id", "`kochava_device_id` must be a non-empty string.")
        if "device_ids" in body:
            _string_map(body["device_ids"], "device_ids", junk_check=True)
        problem = usertime_problem(body.get("usertime"))
        if problem:
            raise _Reject("invalid_usertime", problem)
        att = body.get("app_tracking_transparency")
        if att is not None and (not isinstance(att, dict) or not isinstance(att.get("att"), bool)):
            raise _Reject("invalid_att", "`app_tracking_transparency.att` must be a bool.")
        if body["action"] == "event":
            data = body.get("data")
            if not isinstance(data, dict):
                raise _Reject("missing_data", "An event needs `data` {event_name, event_data}.")
            name = data.get("event_name")
            if not isinstance(name, str) or not name.strip():
                raise _Reject("missing_event_name", "`data.event_name` must be a non-empty string.")
            if "event_data" in data and not isinstance(data["event_data"], dict):
                raise _Reject("invalid_event_data", "`data.event_data` must be an object.")
    except _Reject as reject:
        return reject.code, reject.message
    return None


def identity_link_problem(body: Any, app_guid: str) -> tuple[str, str] | None:
    """(code, message) for an invalid IdentityLink body, else None."""
    try:
        if not isinstance(body, dict):
            raise _Reject("invalid_json", "The body must be a JSON object.")
        if body.get("kochava_app_id") != app_guid:
            raise _Reject("unknown_app", "App does not exist: `kochava_app_id` is not this app's GUID.")
        _string_map(body.get("device_id"), "device_id", junk_check=True)
        _string_map(body.get("data"), "data", junk_check=False)
    except _Reject as reject:
        return reject.code, reject.message
    return None


class KochavaEmulator(LoopbackServer):
    """The two endpoints over real HTTP, with accepted bodies kept in `events` and `identity_links`."""

    handler_cancellation = False  # a client timing out does not undo what Kochava already kept

    def __init__(self, app_guid: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app_guid = app_guid
        self.host = host
        self.port = port
        self.events: list[dict[str, Any]] = []
        self.identity_links: list[dict[str, Any]] = []
        self.status_counts: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.idfa_dropped = 0
        self.faults: list[Fault] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(TRACK_PATH, self._handle_track)
        app.router.add_post(IDENTITY_LINK_PATH, self._handle_identity_link)
        app.router.add_get("/_emulator/stats", self._handle_stats)
        app.router.add_get("/_emulator/requests", self._handle_requests)
        app.router.add_post("/_emulator/faults", self._handle_faults)
        app.router.add_delete("/_emulator/faults", self._handle_clear)
        app.router.add_post("/_emulator/reset", self._handle_reset)
        return app

    # ---- faults -------------------------------------------------------------------------------
    def fail_next(self, n: int = 1, *, status: int = 503, retry_after: float | None = None) -> None:
        self.faults.append(Fault(status=status, retry_after=retry_after, count=n))

    def fail_for(self, seconds: float, *, status: int = 503, retry_after: float | None = None) -> None:
        self.faults.append(Fault(status=status, retry_after=retry_after, duration=seconds))

    def slow_next(self, n: int = 1, *, delay: float) -> None:
        """Sleep `delay` s before answering normally: a client with a shorter timeout sees a timeout."""
        self.faults.append(Fault(status=None, delay=delay, count=n))

    def clear_faults(self) -> None:
        self.faults.clear()

    def reset(self) -> None:
        self.events.clear()
        self.identity_links.clear()
        self.status_counts.clear()
        self.rejections.clear()
        self.idfa_dropped = 0
        self.faults.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "events": len(self.events),
            "identity_links": len(self.identity_links),
            "status_counts": dict(self.status_counts),
            "rejections": dict(self.rejections),
            "idfa_dropped": self.idfa_dropped,
            "faults": len(self.faults),
        }

    def _take_fault(self, path: str) -> Fault | None:
        now = time.monotonic()
        self.faults = [f for f in self.faults if f.active(now)]
        for fault in self.faults:
            if fault.path is None or fault.path == path:
                fault.consume()
                return fault
        return None

    # ---- handlers -----------------------------------------------------------------------------
    async def _answer(self, request: web.Request, kind: str) -> web.Response:
        raw = await request.read()  # read first: a slow answer still means Kochava got the request
        fault = self._take_fault(request.path)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = f"{fault.retry_after:g}"
                self.status_counts[str(fault.status)] += 1
                return web.json_response(
                    {"success": "0", "error": "injected_fault"}, status=fault.status, headers=headers
                )
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if kind == "track":
            problem = track_problem(body, self.app_guid)
        else:
            problem = identity_link_problem(body, self.app_guid)
        if problem is not None:
            code, message = problem
            self.status_counts["400"] += 1
            self.rejections[code] += 1
            return web.json_response({"success": "0", "error": code, "message": message}, status=400)
        assert isinstance(body, dict)
        if kind == "track":
            if "idfa" in (body.get("device_ids") or {}) and "app_tracking_transparency" not in body:
                self.idfa_dropped += 1
            self.events.append(body)
        else:
            self.identity_links.append(body)
        self.status_counts["200"] += 1
        return web.json_response({"success": "1"})

    async def _handle_track(self, request: web.Request) -> web.Response:
        return await self._answer(request, "track")

    async def _handle_identity_link(self, request: web.Request) -> web.Response:
        return await self._answer(request, "identity_link")

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _handle_requests(self, request: web.Request) -> web.Response:
        return web.json_response({"events": self.events, "identity_links": self.identity_links})

    async def _handle_faults(self, request: web.Request) -> web.Response:
        try:
            raw = await request.json()
            fault = Fault.from_json(raw)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": "invalid_fault", "message": str(exc)}, status=400)
        self.faults.append(fault)
        return web.json_response({"faults": len(self.faults)})

    async def _handle_clear(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"faults": 0})

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})


async def _serve(args: argparse.Namespace) -> None:
    emu = KochavaEmulator(args.app_guid, host=args.host, port=args.port)
    await serve_until_stopped(emu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulators.kochava_api",
        description="Strict local Kochava S2S /track/json and IdentityLink endpoints.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--app-guid", required=True, help="the only kochava_app_id accepted")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
