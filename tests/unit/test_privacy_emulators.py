"""The privacy emulators are strict: auth, validation, limits, 429 and status progression, over real HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.emulators.kochava_privacy import KochavaPrivacyEmulator
from tests.emulators.segment_public_api import SegmentPublicApiEmulator


async def call(method: str, url: str, body: Any = None, **headers: str) -> tuple[int, Any, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body, headers=headers) as r,
    ):
        return r.status, await r.json(content_type=None), dict(r.headers)


async def test_segment_regulations_auth_validation_limit_and_progression() -> None:
    async with SegmentPublicApiEmulator(token="pat", per_minute=2) as emu:
        url = f"{emu.url}/regulations"
        good = {"regulationType": "SUPPRESS_WITH_DELETE", "subjectType": "USER_ID", "subjectIds": ["u1"]}
        assert (await call("POST", url, good))[0] == 401
        assert (await call("POST", url, good, Authorization="Bearer wrong"))[0] == 401
        auth = {"Authorization": "Bearer pat"}
        for bad in (
            {**good, "regulationType": "SUPPRESS_AND_DELETE"},  # the old name
            {**good, "subjectType": "ANONYMOUS_ID"},  # source level only
            {**good, "subjectIds": []},
            {**good, "subjectIds": ["u"] * 5001},
            {**good, "extra": True},
        ):
            status, body, _ = await call("POST", url, bad, **auth)
            assert status == 400, (bad, body)
        status, body, _ = await call("POST", url, good, **auth)
        assert status == 200
        regulate_id = body["data"]["regulateId"]
        assert (await call("POST", url, good, **auth))[0] == 200
        status, _, headers = await call("POST", url, good, **auth)
        assert status == 429 and "X-RateLimit-Reset" in headers
        statuses = [
            (await call("GET", f"{url}/{regulate_id}", **auth))[1]["data"]["regulation"]["overallStatus"]
            for _ in range(4)
        ]
        assert statuses == ["INITIALIZED", "RUNNING", "FINISHED", "FINISHED"]
        assert (await call("GET", f"{url}/nope", **auth))[0] == 404
        emu.fail_next(1, status=503)
        assert (await call("GET", f"{url}/{regulate_id}", **auth))[0] == 503


async def test_kochava_scrub_auth_path_body_limit_and_progression() -> None:
    async with KochavaPrivacyEmulator(
        key="k", id_types=frozenset({"idfa", "adid"}), max_ids=2, per_minute=8
    ) as emu:
        url = f"{emu.url}/accounts/{emu.account_id}/apps/{emu.app_id}/privacy/scrub"
        good = {"device_ids": [{"id_type": "idfa", "id_value": "A"}]}
        assert (await call("POST", url, good))[0] == 401
        auth = {"Authentication-Key": "k"}
        assert (await call("POST", f"{emu.url}/accounts/1/apps/2/privacy/scrub", good, **auth))[0] == 404
        for bad in (
            {"device_ids": []},
            {"device_ids": [{"id_type": "idfv", "id_value": "V"}]},  # not an accepted type here
            {"device_ids": [{"id_type": "idfa", "id_value": ""}]},
            {"device_ids": [{"id_type": "idfa", "id_value": str(n)} for n in range(3)]},
            {**good, "other": 1},
        ):
            status, body, _ = await call("POST", url, bad, **auth)
            assert status == 400, (bad, body)
        status, body, _ = await call("POST", url, good, **auth)
        assert status == 200 and body["status"] == "OK" and body["job_status"] == "queued"
        job = body["job_id"]
        progression = [(await call("GET", f"{url}/{job}", **auth))[1].get("job_status") for _ in range(2)]
        assert progression[0] == "queued"
        status, _, headers = await call("POST", url, good, **auth)
        assert status == 429 and headers["Retry-After"] == "60"
