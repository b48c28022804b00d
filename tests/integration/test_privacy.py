"""Privacy requests through the real receiver, broker, worker (and loader) processes, a real PostgreSQL,
and strict emulators of Segment's Public API, Kochava's scrub and S2S APIs."""

from __future__ import annotations

import hashlib
import hmac
import signal
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.emulators.kochava_api import KochavaEmulator
from tests.emulators.kochava_privacy import STATUS_PATH, KochavaPrivacyEmulator
from tests.emulators.segment_api import SegmentEmulator
from tests.emulators.segment_public_api import SegmentPublicApiEmulator
from tests.harness import LINK_TOKEN, TOKEN, Pipeline, metric, run_cli, wait_for

PRIVACY_TOKEN = "test-privacy-token"
PATH = "/v1/privacy/requests"
SECRET = "webhook-secret"
GUID = "koapp-privacy"
IDFV_1 = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
IDFA_1 = "CD92078A-8246-4BA4-AE5B-76104861E7DE"
ADID_2 = "38400000-8cf0-11bd-b23e-10b96e40000d"


@pytest.fixture
async def public_api() -> AsyncIterator[SegmentPublicApiEmulator]:
    async with SegmentPublicApiEmulator(token="test-pat") as emulator:
        yield emulator


@pytest.fixture
async def scrub() -> AsyncIterator[KochavaPrivacyEmulator]:
    async with KochavaPrivacyEmulator() as emulator:
        yield emulator


@pytest.fixture
async def kochava() -> AsyncIterator[KochavaEmulator]:
    async with KochavaEmulator(GUID) as emulator:
        yield emulator


def privacy_env(
    public_api: SegmentPublicApiEmulator | None, scrub: KochavaPrivacyEmulator | None
) -> dict[str, str]:
    env = {
        "KSEG_PRIVACY_TOKENS": PRIVACY_TOKEN,
        "KSEG_PRIVACY_RETRY_SECONDS": "0.5",
        "KSEG_PRIVACY_RETRY_MAX_SECONDS": "2",
    }
    if public_api is not None:
        env |= {"SEGMENT_PUBLIC_API_TOKEN": public_api.token, "SEGMENT_PUBLIC_API_URL": public_api.url}
    if scrub is not None:
        env |= {
            "KOCHAVA_PRIVACY_URL": scrub.url,
            "KOCHAVA_ACCOUNT_ID": scrub.account_id,
            "KOCHAVA_APP_ID": scrub.app_id,
            "KOCHAVA_PRIVACY_API_KEY": scrub.key,
            "KOCHAVA_PRIVACY_STATUS_PATH": STATUS_PATH,
        }
    return env


async def status_of(p: Pipeline, request_id: str) -> dict[str, Any]:
    code, body, _ = await p.get(
        "", token=None, path=f"{PATH}/{request_id}", headers={"Authorization": f"Bearer {PRIVACY_TOKEN}"}
    )
    assert code == 200, body
    return body


async def wait_status(p: Pipeline, request_id: str, status: str, timeout: float = 90) -> dict[str, Any]:
    last: dict[str, Any] = {}

    async def reached() -> bool:
        last.clear()
        last.update(await status_of(p, request_id))
        return last["status"] == status

    try:
        await wait_for(reached, timeout, f"request {request_id} {status}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; targets: {last.get('targets')}") from None
    return dict(last)


async def test_privacy_api_credentials_validation_record_and_duplicates(
    make_pipeline: Any, dump_logs: list[Pipeline]
) -> None:
    p = await make_pipeline(None, **privacy_env(None, None)).start()
    dump_logs.append(p)
    body = {
        "type": "suppress",
        "user_id": "user-7",
        "devices": {"kochava_device_id": "KIP7"},
        "reference": "T-1",
    }

    # Only a KSEG_PRIVACY_TOKENS token opens the privacy API, and it opens nothing else.
    assert (await p.post(PATH, body, token=None))[0:2] == (
        401,
        {
            "error": "missing_token",
            "message": "Send a KSEG_PRIVACY_TOKENS token as `Authorization: Bearer ...`.",
        },
    )
    for other in (TOKEN, LINK_TOKEN):
        status, answer, _ = await p.post(PATH, body, token=other)
        assert (status, answer["error"]) == (403, "wrong_token_kind"), answer
    assert (await p.post(PATH, body, token="nope"))[1]["error"] == "invalid_token"
    assert (await p.get({"event_name": "_install", "kochava_device_id": "KIX"}, token=PRIVACY_TOKEN))[
        0
    ] == 401
    assert (await p.post("/v1/identity/links", {"user_id": "u", "idfv": IDFV_1}, token=PRIVACY_TOKEN))[
        0
    ] == 401

    # Strict bodies: a precise 400 naming the problem, never a 500.
    for bad, code in (
        ({"type": "erase", "user_id": "u"}, "invalid_type"),
        ({"type": "delete"}, "no_subject"),
        ({"type": "delete", "user_id": "u", "extra": 1}, "unknown_fields"),
        ({"type": "delete", "devices": {"gaid": "x"}}, "unknown_fields"),
        ({"type": "delete", "user_id": 7}, "invalid_field"),
        ({"type": "delete", "user_id": "null"}, "invalid_user_id"),
        (
            {"type": "delete", "devices": {"idfa": "00000000-0000-0000-0000-000000000000"}},
            "invalid_device_id",
        ),
        ({"type": "delete", "user_id": "u", "email": "not-an-email"}, "invalid_email"),
        ({"type": "delete", "user_id": "u", "reference": ""}, "invalid_reference"),
        ([1, 2], "invalid_json"),
    ):
        status, answer, _ = await p.post(PATH, bad, token=PRIVACY_TOKEN)
        assert (status, answer.get("error")) == (400, code), (bad, answer)
    status, answer, _ = await p.post(PATH, b"{", token=PRIVACY_TOKEN)
    assert (status, answer["error"]) == (400, "invalid_json")

    status, answer, _ = await p.post(PATH, body, token=PRIVACY_TOKEN)
    assert status == 202, answer
    request_id = answer["request_id"]
    assert "duplicate" not in answer
    record = await wait_status(p, request_id, "done")
    assert record["type"] == "suppress" and record["channel"] == "api" and record["reference"] == "T-1"
    targets = record["targets"]
    # Nothing configured for Segment: said so, never skipped. A suppress deletes nothing elsewhere.
    assert targets["segment"]["status"] == "not_configured"
    assert targets["suppression"]["status"] == "done"
    for name in ("kseg_state", "warehouse", "kochava", "kafka_logs"):
        assert targets[name]["status"] == "not_applicable", (name, targets[name])
    assert record["covered"]["user_ids"] == ["user-7"]
    assert "KIP7" in record["covered"]["device_keys"]

    # The same request again is the same request: same id, nothing new.
    revision = record["revision"]
    status, again, _ = await p.post(PATH, body, token=PRIVACY_TOKEN)
    assert (status, again["request_id"], again.get("duplicate")) == (202, request_id, True)
    assert (await status_of(p, request_id))["revision"] == revision

    code, missing, _ = await p.get(
        "",
        token=None,
        path=f"{PATH}/pr_000000000000000000000000",
        headers={"Authorization": f"Bearer {PRIVACY_TOKEN}"},
    )
    assert (code, missing["error"]) == (404, "unknown_request")

    # The CLI reads the same record.
    env = {**p.env}
    rc, out, err = await run_cli(env, "privacy", "status", request_id, "--json")
    assert rc == 0, err
    assert orjson.loads(out)["status"] == "done"
    rc, out, err = await run_cli(env, "privacy", "list")
    assert rc == 0 and request_id in out, err
    rc, out, err = await run_cli(
        env,
        "privacy",
        "request",
        "suppress",
        "--user-id",
        "user-7",
        "--kochava-device-id",
        "KIP7",
        "--reference",
        "T-1",
    )
    assert rc == 0, err
    assert orjson.loads(out)["duplicate"] is False  # another channel (cli): another request
