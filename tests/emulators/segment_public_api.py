"""A strict local emulator of Segment's Public API regulation endpoints, for kseg's privacy tests.

Endpoints (docs/reference.md#segment-public-api-regulations): ``POST /regulations`` and
``GET /regulations/{regulateId}``, JSON, ``Authorization: Bearer <Public API token>``.

Strict about what kseg sends: a wrong or missing token is 401; a body that is not a JSON object, has a
field Segment does not define, a `regulationType` outside the workspace-level types, a `subjectType` other
than `USER_ID`/`OBJECT_ID`, an empty or non-string subject id, more than 5,000 ids or more than 4 MB is 400
(``{"errors": [{"type": ..., "message": ...}]}``). More than `per_minute` creates in a minute (Segment: 600)
is 429 with ``X-RateLimit-Reset``. Each status read moves a regulation one step along `progression`
(INITIALIZED → RUNNING → FINISHED by default; set it to end in FAILED to see a failed destination).

Faults: ``fail_next(n, status)`` answers `status` to the next n requests without recording them.

    async with SegmentPublicApiEmulator(token="pat") as emu:
        ...  # POST f"{emu.url}/regulations"
        assert emu.regulations[0]["regulationType"] == "SUPPRESS_WITH_DELETE"
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.emulators.common import FaultBudget, LoopbackServer

WORKSPACE_TYPES = frozenset(
    {
        "DELETE_INTERNAL",
        "DELETE_ONLY",
        "SUPPRESS_ONLY",
        "SUPPRESS_WITH_DELETE",
        "SUPPRESS_WITH_DELETE_INTERNAL",
        "UNSUPPRESS",
    }
)
SUBJECT_TYPES = frozenset({"USER_ID", "OBJECT_ID"})
MAX_SUBJECTS = 5000
MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_PROGRESSION = ("INITIALIZED", "RUNNING", "FINISHED")


@dataclass(kw_only=True)
class Fault(FaultBudget):
    status: int = 503


@dataclass
class Regulation:
    regulate_id: str
    body: dict[str, Any]
    progression: tuple[str, ...]
    reads: int = 0
    destinations: list[dict[str, Any]] = field(default_factory=list)

    def status(self) -> str:
        return self.progression[min(self.reads, len(self.progression) - 1)]


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"errors": [{"type": kind, "message": message}]}
    return web.json_response(body, status=status, headers=headers)


class SegmentPublicApiEmulator(LoopbackServer):
    def __init__(
        self,
        token: str = "test-public-api-token",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        per_minute: int = 600,
        progression: tuple[str, ...] = DEFAULT_PROGRESSION,
    ) -> None:
        self.token, self.host, self.port = token, host, port
        self.per_minute = per_minute
        self.progression = progression
        self.regulations: list[dict[str, Any]] = []
        self.by_id: dict[str, Regulation] = {}
        self.rejected: list[tuple[int, str]] = []
        self.status_reads = 0
        self._creates: list[float] = []
        self._faults: list[Fault] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        self._faults.append(Fault(count=count, status=status))

    def fail_for(self, seconds: float, status: int = 503) -> None:
        self._faults.append(Fault(duration=seconds, status=status))

    def _fault(self) -> int | None:
        now = time.monotonic()
        self._faults = [f for f in self._faults if f.active(now)]
        if not self._faults:
            return None
        fault = self._faults[0]
        fault.consume()
        return fault.status

    def _auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if header != f"Bearer {self.token}":
            self.rejected.append((401, "unauthorized"))
            return _error(
                401, "unauthorized", "A valid Public API token is required (Authorization: Bearer)."
            )
        return None

    def _refuse(self, kind: str, message: str) -> web.Response:
        self.rejected.append((400, kind))
        return _error(400, kind, message)

    async def create(self, request: web.Request) -> web.Response:
        denied = self._auth(request)
        if denied:
            return denied
        fault = self._fault()
        if fault is not None:
            return _error(fault, "fault", "injected fault")
        if request.content_type not in ("application/json", "application/vnd.segment.v1+json"):
            self.rejected.append((415, "content_type"))
            return _error(415, "unsupported_media_type", "Send application/json.")
        raw = await request.read()
        if len(raw) > MAX_BODY_BYTES:
            return self._refuse("too_large", "The body is over 4 MB.")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._refuse("invalid_json", "The body is not JSON.")
        if not isinstance(body, dict):
            return self._refuse("invalid_body", "The body must be an object.")
        unknown = set(body) - {"regulationType", "subjectType", "subjectIds"}
        if unknown:
            return self._refuse("unknown_field", f"Unknown fields: {sorted(unknown)}.")
        if body.get("regulationType") not in WORKSPACE_TYPES:
            return self._refuse(
                "invalid_regulation_type", "regulationType is not a workspace regulation type."
            )
        if body.get("subjectType") not in SUBJECT_TYPES:
            return self._refuse("invalid_subject_type", "subjectType must be USER_ID or OBJECT_ID.")
        ids = body.get("subjectIds")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            return self._refuse("invalid_subject_ids", "subjectIds must be a non-empty list of strings.")
        if len(ids) > MAX_SUBJECTS:
            return self._refuse("too_many_subjects", "At most 5,000 subject ids per call.")
        now = time.time()
        self._creates = [t for t in self._creates if now - t < 60]
        if len(self._creates) >= self.per_minute:
            self.rejected.append((429, "rate_limited"))
            reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._creates[0] + 60))
            return _error(429, "rate_limited", "Too many requests.", {"X-RateLimit-Reset": reset})
        self._creates.append(now)
        regulate_id = uuid.uuid4().hex[:20]
        self.by_id[regulate_id] = Regulation(regulate_id, body, self.progression)
        self.regulations.append(body)
        remaining = str(self.per_minute - len(self._creates))
        return web.json_response(
            {"data": {"regulateId": regulate_id}}, headers={"X-RateLimit-Remaining": remaining}
        )

    async def status(self, request: web.Request) -> web.Response:
        denied = self._auth(request)
        if denied:
            return denied
        fault = self._fault()
        if fault is not None:
            return _error(fault, "fault", "injected fault")
        regulation = self.by_id.get(request.match_info["regulate_id"])
        if regulation is None:
            return _error(404, "not_found", "No such regulation.")
        self.status_reads += 1
        overall = regulation.status()
        regulation.reads += 1
        destination = {"name": "Segment", "status": overall, "errString": "", "finishedAt": None}
        if overall == "FAILED":
            destination["errString"] = "destination does not support deletion"
        body = {
            "data": {
                "regulation": {
                    "id": regulation.regulate_id,
                    "overallStatus": overall,
                    "regulationType": regulation.body["regulationType"],
                    "streamStatus": [{"id": "s1", "destinationStatus": [destination]}],
                }
            }
        }
        return web.json_response(body)

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES + 1024)
        app.router.add_post("/regulations", self.create)
        app.router.add_get("/regulations/{regulate_id}", self.status)
        return app
