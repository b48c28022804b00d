"""The Kochava Reporting API v1.4 client: authenticated POSTs, the report token flow, the download.

Every call is a POST whose JSON body carries `api_key` and `app_guid`
(docs/reference.md#kochava-reporting-api). Kochava answers
errors in the body (`"status": "Error"`); those are never retried, because retrying a wrong key or a
bad parameter only hides it. 5xx, 429 and timeouts are retried with the Segment sink's own status policy
and jittered backoff (`app.sinks.policy`), a bounded number of times.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from app.sections import DigestSettings, reveal
from app.sinks.policy import (
    Backoff,
    Outcome,
    classify_status,
    retry_wait_from_headers,
    transport_error_kind,
)

APP_DOES_NOT_EXIST = "App does not exist."
USER_AGENT = "kseg-digest/0.1 (+aiohttp)"


class ReportingError(RuntimeError):
    """Kochava refused a call, a report failed, or the API stayed unreachable: the digest stops."""

    #: A short code for the job's summary and metrics.
    code = "reporting_error"


class AppNotFound(ReportingError):
    """Kochava answered "App does not exist.": the API key or the app GUID is wrong."""

    code = "app_does_not_exist"

    def __init__(self) -> None:
        super().__init__(
            'Kochava answered "App does not exist.": KOCHAVA_API_KEY or KOCHAVA_APP_GUID is wrong. '
            "Use the Reporting API key of a user who can see the app (Kochava: Account Options > "
            "API Keys) and the app's GUID, then run again. Nothing was written."
        )


class ReportTimeout(ReportingError):
    """The report did not complete within the bounded wait."""

    code = "report_timeout"


class ReportingUnavailable(ReportingError):
    """5xx, 429 or timeouts on every attempt."""

    code = "reporting_unavailable"


@dataclass(frozen=True)
class PollPolicy:
    """How long to wait for a report: a first wait, then backoff up to `max_wait`, at most `timeout`."""

    first_wait: float = 15.0
    max_wait: float = 10.0
    timeout: float = 1800.0

    def delays(self) -> list[float]:
        """Pauses between polls, in order; their sum never exceeds `timeout` (the bounded wait)."""
        out: list[float] = []
        total, step = 0.0, min(self.first_wait, self.timeout)
        nxt = max(min(1.0, self.max_wait), 0.01)
        while total + step <= self.timeout and len(out) < 100_000:
            out.append(step)
            total += step
            step, nxt = nxt, min(nxt * 2, self.max_wait)
        remainder = self.timeout - total
        if remainder > 0:
            out.append(remainder)
        return out


@dataclass
class CallStats:
    """Counters the job reports: calls, retries and what each retry was for."""

    calls: int = 0
    retries: dict[str, int] = field(default_factory=dict)

    def retried(self, why: str) -> None:
        self.retries[why] = self.retries.get(why, 0) + 1


class ReportingClient:
    """Reporting API calls over one aiohttp session (created lazily, closed by `close()`)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        app_guid: str,
        *,
        request_timeout: float = 30.0,
        retries: int = 5,
        poll: PollPolicy | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not api_key or not app_guid:
            raise ReportingError(
                "KOCHAVA_API_KEY and KOCHAVA_APP_GUID must both be set to read Kochava reports."
            )
        self.base_url = base_url.rstrip("/")
        self._auth = {"api_key": api_key, "app_guid": app_guid}
        self.timeout = aiohttp.ClientTimeout(total=request_timeout)
        self.retries = retries
        self.poll = poll or PollPolicy()
        self.backoff = backoff or Backoff(base=1.0, cap=30.0)
        self.rng = rng or random.Random()
        self.stats = CallStats()
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: DigestSettings) -> ReportingClient:
        return cls(
            settings.kochava_reporting_url,
            reveal(settings.kochava_api_key),
            settings.kochava_app_guid or "",
            request_timeout=settings.kochava_reporting_timeout,
            retries=settings.kochava_reporting_retries,
            poll=PollPolicy(
                settings.kochava_poll_first_wait,
                settings.kochava_poll_max_wait,
                settings.kochava_report_timeout,
            ),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ReportingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers={"User-Agent": USER_AGENT})
        return self._session

    async def _http(self, method: str, url: str, body: dict[str, Any] | None) -> Any:
        """One HTTP exchange with bounded retries on 5xx/429/timeouts; returns the decoded JSON."""
        failures = 0
        while True:
            self.stats.calls += 1
            wait: float | None = None
            try:
                data = None if body is None else orjson.dumps(body)
                headers = {"Content-Type": "application/json"} if body is not None else None
                async with self._get_session().request(method, url, data=data, headers=headers) as resp:
                    raw = await resp.read()
                    outcome = classify_status(resp.status)
                    if outcome is Outcome.SUCCESS or (outcome is not Outcome.RETRY and _is_json(raw)):
                        return _decode(raw, url, resp.status)
                    if outcome is not Outcome.RETRY:
                        text = raw[:300].decode("utf-8", "replace")
                        raise ReportingError(f"Kochava answered HTTP {resp.status} to {url}: {text}")
                    why = f"http_{resp.status}"
                    wait = retry_wait_from_headers(resp.headers)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                kind = transport_error_kind(exc)
                if kind is None:
                    raise
                why = kind
            failures += 1
            if failures > self.retries:
                raise ReportingUnavailable(
                    f"Kochava's Reporting API at {self.base_url} did not answer usefully after "
                    f"{failures} attempts (last: {why}). Check KOCHAVA_REPORTING_URL and Kochava's status, "
                    "then run again."
                )
            self.stats.retried(why)
            await asyncio.sleep(wait if wait is not None else self.backoff.delay(failures, self.rng))

    async def call(self, endpoint: str, fields: dict[str, Any] | None = None) -> Any:
        """POST `{base}/{endpoint}` with the auth fields; raise on an `Error` status in the body."""
        answer = await self._http("POST", f"{self.base_url}/{endpoint}", {**self._auth, **(fields or {})})
        _raise_for_error(answer)
        return answer

    async def report_columns(self, report: str = "summary") -> list[str]:
        """Column names Kochava reports for `report` (what the column map must name)."""
        answer = await self.call("reportcolumns", {"report": report})
        if isinstance(answer, dict):
            for key in ("columns", "data", "report_columns"):
                if isinstance(answer.get(key), list):
                    answer = answer[key]
                    break
        if not isinstance(answer, list):
            raise ReportingError(f"reportcolumns answered an unexpected shape: {str(answer)[:300]}")
        return [str(c.get("name", c)) if isinstance(c, dict) else str(c) for c in answer]

    async def run_report(self, kind: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """Request a report, poll it to `completed` (bounded), download and return its rows."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll.timeout
        delays = iter(self.poll.delays())
        token = await self._request_token(kind, body, delays, deadline)
        while True:
            answer = await self.call("progress", {"token": token})
            status = str(answer.get("status", "")) if isinstance(answer, dict) else ""
            if status == "completed":
                url = answer.get("report")
                if not isinstance(url, str) or not url:
                    raise ReportingError(f"report {token} completed without a download URL: {answer}")
                return _rows(await self._http("GET", url, None), url)
            if status not in ("queued", "running"):
                raise ReportingError(f"report {token} has an unknown status {status!r}: {answer}")
            await self._pause(delays, deadline, f"report {token} still {status}")

    async def _request_token(self, kind: str, body: dict[str, Any], delays: Any, deadline: float) -> str:
        """The report token; while an identical request is still queued/running Kochava gives none,
        so wait for that one to finish and ask again (then a new token is issued)."""
        while True:
            answer = await self.call(kind, body)
            token = answer.get("report_token") if isinstance(answer, dict) else None
            if isinstance(token, str) and token:
                return token
            status = answer.get("status") if isinstance(answer, dict) else None
            if status not in ("queued", "running"):
                raise ReportingError(f"{kind} request returned neither a token nor a status: {answer}")
            await self._pause(delays, deadline, f"an identical {kind} request is still {status}")

    async def _pause(self, delays: Any, deadline: float, what: str) -> None:
        delay = next(delays, None)
        remaining = deadline - asyncio.get_running_loop().time()
        if delay is None or remaining <= 0:
            raise ReportTimeout(
                f"{what} after {self.poll.timeout:g} s (KOCHAVA_REPORT_TIMEOUT); the day is not digested. "
                "Kochava may be slow: run again later, or raise KOCHAVA_REPORT_TIMEOUT."
            )
        await asyncio.sleep(min(delay, remaining))


def _is_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


def _decode(raw: bytes, url: str, status: int) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ReportingError(
            f"Kochava answered HTTP {status} to {url} with a body that is not JSON: {raw[:200]!r}"
        ) from None


def _raise_for_error(answer: Any) -> None:
    if not isinstance(answer, dict):
        return
    error = answer.get("error")
    if str(answer.get("status", "")).lower() != "error" and not error:
        return
    message = str(error or answer.get("message") or answer)
    if message.strip() == APP_DOES_NOT_EXIST:
        raise AppNotFound()
    raise ReportingError(f"Kochava answered Error: {message}")


def _rows(data: Any, url: str) -> list[dict[str, Any]]:
    """A JSON report's rows: a list of objects, or the one list inside a wrapping object."""
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else data
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ReportingError(f"the report at {url} is not a list of rows: {str(data)[:200]}")
    return data
