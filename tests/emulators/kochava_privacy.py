"""A strict local emulator of Kochava's Data Subject Request API (scrub), for kseg's privacy tests.

Endpoint (docs/reference.md#kochava-data-subject-request-api):
``POST /accounts/{accountID}/apps/{appID}/privacy/scrub`` with ``Authentication-Key`` and
``{"device_ids": [{"id_type": ..., "id_value": ...}], "email"?: ...}`` → ``{"status": "OK", "response":
"200", "job_status": "queued", "job_id": ...}``.

Strict: a wrong or missing key is 401; another account or app, or a non-numeric id, is 404; a body that is
not an object, a field other than `device_ids`/`email`, an empty `device_ids`, an entry without both
strings, an `id_type` outside `id_types`, or more than `max_ids` ids is 400 (``{"status": "Error",
"error": ...}``). More than `per_minute` calls a minute is 429 with ``Retry-After``.

**Assumed** (Kochava's page is cut off; kseg makes these configurable): which id types are accepted, and a
status endpoint ``GET /accounts/{accountID}/apps/{appID}/privacy/scrub/{job_id}`` whose `job_status` moves
one step along `progression` per read (queued → processing → completed).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.emulators.common import FaultBudget, LoopbackServer

DEFAULT_ID_TYPES = frozenset({"kochava_device_id", "idfa", "idfv", "adid", "android_id"})
STATUS_PATH = "/accounts/{account_id}/apps/{app_id}/privacy/scrub/{job_id}"


@dataclass(kw_only=True)
class Fault(FaultBudget):
    status: int = 503


def _error(status: int, code: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"status": "Error", "response": str(status), "error": code}, status=status, headers=headers
    )


class KochavaPrivacyEmulator(LoopbackServer):
    def __init__(
        self,
        *,
        account_id: str = "1234",
        app_id: str = "5678",
        key: str = "test-kochava-key",
        id_types: frozenset[str] = DEFAULT_ID_TYPES,
        max_ids: int = 100,
        per_minute: int = 600,
        progression: tuple[str, ...] = ("queued", "processing", "completed"),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.account_id, self.app_id, self.key = account_id, app_id, key
        self.id_types, self.max_ids, self.per_minute = id_types, max_ids, per_minute
        self.progression = progression
        self.host, self.port = host, port
        self.scrubs: list[dict[str, Any]] = []
        self.jobs: dict[str, int] = {}
        self.rejected: list[tuple[int, str]] = []
        self._calls: list[float] = []
        self._faults: list[Fault] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        self._faults.append(Fault(count=count, status=status))

    def fail_for(self, seconds: float, status: int = 503) -> None:
        self._faults.append(Fault(duration=seconds, status=status))

    def _checks(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authentication-Key") != self.key:
            self.rejected.append((401, "unauthorized"))
            return _error(401, "invalid_authentication_key")
        now = time.monotonic()
        self._faults = [f for f in self._faults if f.active(now)]
        if self._faults:
            self._faults[0].consume()
            return _error(self._faults[0].status, "injected_fault")
        info = request.match_info
        if (info["account_id"], info["app_id"]) != (self.account_id, self.app_id):
            self.rejected.append((404, "unknown_app"))
            return _error(404, "unknown_account_or_app")
        wall = time.time()
        self._calls = [t for t in self._calls if wall - t < 60]
        if len(self._calls) >= self.per_minute:
            self.rejected.append((429, "rate_limited"))
            return _error(429, "rate_limited", {"Retry-After": "60"})
        self._calls.append(wall)
        return None

    def _refuse(self, code: str) -> web.Response:
        self.rejected.append((400, code))
        return _error(400, code)

    async def scrub(self, request: web.Request) -> web.Response:
        denied = self._checks(request)
        if denied:
            return denied
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._refuse("invalid_json")
        if not isinstance(body, dict):
            return self._refuse("invalid_body")
        if set(body) - {"device_ids", "email"}:
            return self._refuse("unknown_field")
        ids = body.get("device_ids")
        if not isinstance(ids, list) or not ids:
            return self._refuse("device_ids_required")
        if len(ids) > self.max_ids:
            return self._refuse("too_many_device_ids")
        for entry in ids:
            if not isinstance(entry, dict) or set(entry) != {"id_type", "id_value"}:
                return self._refuse("invalid_device_id_entry")
            if not all(isinstance(entry[k], str) and entry[k] for k in ("id_type", "id_value")):
                return self._refuse("invalid_device_id_entry")
            if entry["id_type"] not in self.id_types:
                return self._refuse("unsupported_id_type")
        if "email" in body and not (isinstance(body["email"], str) and "@" in body["email"]):
            return self._refuse("invalid_email")
        job_id = uuid.uuid4().hex[:16]
        self.jobs[job_id] = 0
        self.scrubs.append(body)
        return web.json_response(
            {"status": "OK", "response": "200", "job_status": "queued", "job_id": job_id}
        )

    async def job(self, request: web.Request) -> web.Response:
        denied = self._checks(request)
        if denied:
            return denied
        job_id = request.match_info["job_id"]
        if job_id not in self.jobs:
            return _error(404, "unknown_job")
        step = self.jobs[job_id]
        self.jobs[job_id] = step + 1
        status = self.progression[min(step, len(self.progression) - 1)]
        return web.json_response({"status": "OK", "job_id": job_id, "job_status": status})

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/accounts/{account_id}/apps/{app_id}/privacy/scrub", self.scrub)
        app.router.add_get(STATUS_PATH.replace("{job_id}", "{job_id}"), self.job)
        return app
