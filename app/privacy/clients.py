"""The outside targets of a privacy request: Segment's Public API regulations and Kochava's Data Subject
Request API (scrub). Each call returns what happened in kseg's terms or raises `TargetError` saying
whether a retry can help. Vendor facts: docs/reference.md#privacy-apis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

#: Segment's regulation types per request type (workspace level).
REGULATION_TYPES = {"delete": "SUPPRESS_WITH_DELETE", "suppress": "SUPPRESS_ONLY", "unsuppress": "UNSUPPRESS"}
#: Segment's overall statuses that end a regulation, and whether each counts as done.
SEGMENT_FINAL = {
    "FINISHED": True,
    "PARTIAL_SUCCESS": False,
    "FAILED": False,
    "INVALID": False,
    "NOT_SUPPORTED": False,
}
#: Kochava `job_status` values taken as a finished scrub (assumed: Kochava's page shows only `queued`).
KOCHAVA_DONE = frozenset({"completed", "complete", "done", "finished", "success"})
KOCHAVA_FAILED = frozenset({"failed", "error", "rejected"})


class TargetError(Exception):
    """A failed call: `retry` says whether trying again later can succeed (5xx, 429, network)."""

    def __init__(self, reason: str, retry: bool = True) -> None:
        super().__init__(reason)
        self.reason, self.retry = reason, retry


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500 or status == 408


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], body: Any, timeout: float
) -> tuple[int, Any]:
    try:
        async with session.request(
            method,
            url,
            data=orjson.dumps(body) if body is not None else None,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as r:
            raw = await r.read()
            status = r.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise TargetError(f"unreachable: {type(exc).__name__}") from exc
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        data = None
    return status, data


def _error_text(data: Any) -> str:
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("message", ""))[:200]
        return str(data.get("message") or data.get("error") or "")[:200]
    return ""


@dataclass(frozen=True)
class SegmentRegulations:
    """`POST /regulations` and `GET /regulations/{id}` of Segment's Public API (workspace level)."""

    base_url: str
    token: str
    timeout: float = 15.0

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    async def create(self, session: aiohttp.ClientSession, kind: str, user_ids: list[str]) -> str:
        """Create the regulation of a `kind` request for `user_ids`; its regulateId."""
        body = {"regulationType": REGULATION_TYPES[kind], "subjectType": "USER_ID", "subjectIds": user_ids}
        status, data = await _call(
            session, "POST", f"{self.base_url}/regulations", self._headers(), body, self.timeout
        )
        if status >= 300:
            raise TargetError(f"Segment answered {status} {_error_text(data)}".strip(), _retryable(status))
        regulate_id = (data or {}).get("data", {}).get("regulateId") if isinstance(data, dict) else None
        if not isinstance(regulate_id, str) or not regulate_id:
            raise TargetError("Segment's answer has no data.regulateId", retry=True)
        return regulate_id

    async def status(
        self, session: aiohttp.ClientSession, regulate_id: str
    ) -> tuple[str, list[dict[str, Any]]]:
        """(overallStatus, per-destination statuses) of a regulation."""
        url = f"{self.base_url}/regulations/{regulate_id}"
        status, data = await _call(session, "GET", url, self._headers(), None, self.timeout)
        if status >= 300:
            raise TargetError(f"Segment answered {status} {_error_text(data)}".strip(), _retryable(status))
        regulation = (data or {}).get("data", {}).get("regulation") if isinstance(data, dict) else None
        if not isinstance(regulation, dict) or not isinstance(regulation.get("overallStatus"), str):
            raise TargetError("Segment's answer has no data.regulation.overallStatus", retry=True)
        destinations = [
            {k: d.get(k) for k in ("name", "status", "errString", "finishedAt")}
            for stream in regulation.get("streamStatus") or []
            if isinstance(stream, dict)
            for d in stream.get("destinationStatus") or []
            if isinstance(d, dict)
        ]
        return regulation["overallStatus"], destinations


@dataclass(frozen=True)
class KochavaScrub:
    """`POST /accounts/{account}/apps/{app}/privacy/scrub` of Kochava's Data Subject Request API."""

    base_url: str
    account_id: str
    app_id: str
    key: str
    id_types: tuple[str, ...]
    status_path: str = ""
    timeout: float = 15.0

    def _headers(self) -> dict[str, str]:
        return {"Authentication-Key": self.key, "Content-Type": "application/json"}

    def device_ids(self, typed_ids: list[str]) -> list[dict[str, str]]:
        """The scrub body's ids: every typed id of an accepted type (KOCHAVA_PRIVACY_ID_TYPES)."""
        out = []
        for typed in typed_ids:
            kind, _, value = typed.partition(":")
            if kind in self.id_types and value:
                out.append({"id_type": kind, "id_value": value})
        return out

    async def scrub(
        self, session: aiohttp.ClientSession, device_ids: list[dict[str, str]]
    ) -> tuple[str, str]:
        """(job_id, job_status) of a queued scrub."""
        url = f"{self.base_url}/accounts/{self.account_id}/apps/{self.app_id}/privacy/scrub"
        status, data = await _call(
            session, "POST", url, self._headers(), {"device_ids": device_ids}, self.timeout
        )
        if status >= 300:
            raise TargetError(f"Kochava answered {status} {_error_text(data)}".strip(), _retryable(status))
        if not isinstance(data, dict) or data.get("status") != "OK" or not data.get("job_id"):
            raise TargetError(
                f"Kochava did not queue the scrub: {_error_text(data) or 'no job_id'}", retry=True
            )
        return str(data["job_id"]), str(data.get("job_status") or "queued")

    async def job_status(self, session: aiohttp.ClientSession, job_id: str) -> str:
        """The job's `job_status` from KOCHAVA_PRIVACY_STATUS_PATH (assumed endpoint; docs/privacy.md)."""
        path = self.status_path.format(account_id=self.account_id, app_id=self.app_id, job_id=job_id)
        status, data = await _call(
            session, "GET", f"{self.base_url}{path}", self._headers(), None, self.timeout
        )
        if status >= 300:
            raise TargetError(
                f"Kochava status answered {status} {_error_text(data)}".strip(), _retryable(status)
            )
        if not isinstance(data, dict) or not data.get("job_status"):
            raise TargetError("Kochava's status answer has no job_status", retry=True)
        return str(data["job_status"]).lower()
