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
from tests.warehouse_support import LoaderProcess, sql, warehouse_pg

__all__ = ["warehouse_pg"]  # a fixture

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


def install(device: str, **ids: str) -> dict[str, str]:
    return {
        "event_name": "_install",
        "kochava_device_id": device,
        "network_name": "Net",
        "timestamp": "1735689600",
        **ids,
    }


def purchase(device: str, n: int) -> dict[str, str]:
    return {
        "event_name": "Purchase",
        "kochava_device_id": device,
        "event_value": "4.99",
        "currency": "USD",
        "order_id": f"o-{device}-{n}",
        "timestamp": str(1735690000 + n),
    }


def engage_identify(entered: bool, at: str, user: str) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": user,
        "messageId": f"engage-{user}-{entered}-{at}",
        "timestamp": at,
        "traits": {"high_ltv_paid_social": entered},
        "context": {
            "personas": {
                "computation_class": "audience",
                "computation_id": "aud_2Nx",
                "computation_key": "high_ltv_paid_social",
                "namespace": "spa_1",
                "space_id": "spa_1",
            }
        },
    }


async def deliver(p: Pipeline, payload: Any) -> tuple[int, dict[str, Any]]:
    """POST a Segment webhook delivery signed like Segment (HMAC-SHA1 of the body)."""
    raw = orjson.dumps(payload)
    sig = hmac.new(SECRET.encode(), raw, hashlib.sha1).hexdigest()
    status, body, _ = await p.post("/v1/segment/webhook", raw, token=None, headers={"X-Signature": sig})
    return status, body


def audience_devices(kochava: KochavaEmulator, name: str) -> list[str]:
    """Devices Kochava got `name` for, for the Engage audience (kseg's own audiences also move)."""
    return [
        e["kochava_device_id"]
        for e in kochava.events
        if e["data"]["event_name"] == name
        and e["data"]["event_data"]["audience_key"] == "high_ltv_paid_social"
    ]


DEVICES = {"KIPD1": {"idfv": IDFV_1, "idfa": IDFA_1}, "KIPD2": {"adid": ADID_2}}
OTHER = "KIPD9"  # another user's device: nothing of it may go


async def person_everywhere(
    p: Pipeline, kochava: KochavaEmulator, segment: SegmentEmulator, url: str
) -> None:
    """u1 with two devices (installs, purchases, an audience), u9 with one; all of it in the warehouse."""
    for device, ids in DEVICES.items():
        assert (await p.get(install(device, **ids)))[0] == 200
        status, body, _ = await p.post(
            "/v1/identity/links", {"user_id": "u1", "kochava_device_id": device, **ids}, token=LINK_TOKEN
        )
        assert status == 200, body
        assert (await p.get(purchase(device, 1)))[0] == 200
    assert (await p.get(install(OTHER)))[0] == 200
    assert (
        await p.post("/v1/identity/links", {"user_id": "u9", "kochava_device_id": OTHER}, token=LINK_TOKEN)
    )[0] == 200
    await wait_for(
        lambda: (
            {"KIPD1", "KIPD2"} <= {x["device_id"].get("kochava_device_id") for x in kochava.identity_links}
        ),
        60,
        "IdentityLink for both devices",
    )
    assert (await deliver(p, engage_identify(True, "2026-01-01T10:00:00Z", "u1")))[0] == 200
    await wait_for(
        lambda: sorted(audience_devices(kochava, "Audience Entered")) == ["KIPD1", "KIPD2"],
        60,
        "Audience Entered for both devices",
    )
    await wait_for(
        lambda: (
            sql(
                url,
                "SELECT count(*) FROM kseg_events WHERE kochava_device_id = ANY(%s)",
                (["KIPD1", "KIPD2", OTHER],),
            )[0][0]
            >= 5
        ),
        60,
        "warehouse rows of both users",
    )
    await wait_for(
        lambda: (
            sql(url, "SELECT count(*) FROM kseg_postbacks WHERE device_key = ANY(%s)", (list(DEVICES),))[0][0]
            >= 4
        ),
        60,
        "the trace's postbacks of u1",
    )


def rows_of(url: str, devices: list[str]) -> int:
    found = sql(
        url,
        "SELECT count(*) FROM kseg_events WHERE kochava_device_id = ANY(%s) OR user_id = 'u1'",
        (devices,),
    )
    return int(found[0][0])


@pytest.mark.long
async def test_delete_by_user_id_erases_everywhere_and_holds_after_restart(
    make_pipeline: Any,
    segment: SegmentEmulator,
    kochava: KochavaEmulator,
    public_api: SegmentPublicApiEmulator,
    scrub: KochavaPrivacyEmulator,
    warehouse_pg: Any,
    dump_logs: list[Pipeline],
) -> None:
    url = warehouse_pg.url
    p = await make_pipeline(
        segment.url,
        SEGMENT_WEBHOOK_SECRET=SECRET,
        KOCHAVA_APP_GUID=GUID,
        KOCHAVA_TRACKING_URL=kochava.url,
        KSEG_WAREHOUSE_URL=url,
        **privacy_env(public_api, scrub),
    ).start()
    dump_logs.append(p)
    loader = LoaderProcess(p, url).start()
    await loader.wait_ready()
    await person_everywhere(p, kochava, segment, url)

    # Segment and Kochava are down for a while: the request waits, it is not lost.
    public_api.fail_for(3, status=503)
    scrub.fail_next(2, status=429)
    status, answer, _ = await p.post(
        PATH, {"type": "delete", "user_id": "u1", "reference": "case-1"}, token=PRIVACY_TOKEN
    )
    assert status == 202, answer
    request_id = answer["request_id"]
    record = await wait_status(p, request_id, "done", 120)

    covered = record["covered"]
    assert covered["user_ids"] == ["u1"]
    assert {"KIPD1", "KIPD2"} <= set(covered["device_keys"]) and OTHER not in covered["device_keys"]
    assert {
        f"idfv:{IDFV_1}",
        f"idfa:{IDFA_1}",
        f"adid:{ADID_2}",
        "kochava_device_id:KIPD1",
        "kochava_device_id:KIPD2",
    } <= set(covered["typed_ids"])

    # Segment: one regulation, the delete type, by userId; read back until FINISHED.
    assert public_api.regulations == [
        {"regulationType": "SUPPRESS_WITH_DELETE", "subjectType": "USER_ID", "subjectIds": ["u1"]}
    ]
    segment_target = record["targets"]["segment"]
    assert segment_target["status"] == "done" and segment_target["detail"]["overall_status"] == "FINISHED"
    assert any(h["target"] == "segment" and h["status"] == "failed" for h in record["history"])  # the outage

    # Kochava: one scrub with every id of both devices, after the 429s; the job id is recorded.
    assert len(scrub.scrubs) == 1
    sent = {(d["id_type"], d["id_value"]) for d in scrub.scrubs[0]["device_ids"]}
    assert {
        ("kochava_device_id", "KIPD1"),
        ("kochava_device_id", "KIPD2"),
        ("idfv", IDFV_1),
        ("idfa", IDFA_1),
        ("adid", ADID_2),
    } <= sent
    assert ("kochava_device_id", OTHER) not in sent
    assert record["targets"]["kochava"]["detail"]["job_id"] in scrub.jobs
    assert record["targets"]["kochava"]["status"] == "done"

    # The membership's exit went to Kochava for both devices.
    await wait_for(
        lambda: sorted(audience_devices(kochava, "Audience Exited")) == ["KIPD1", "KIPD2"],
        60,
        "Audience Exited for both devices",
    )
    # The warehouse holds nothing of u1 any more, and all of u9.
    assert rows_of(url, ["KIPD1", "KIPD2"]) == 0
    assert sql(url, "SELECT count(*) FROM kseg_events WHERE kochava_device_id = %s", (OTHER,))[0][0] >= 1
    rows = record["targets"]["warehouse"]["detail"]["rows"]
    assert rows["kseg_events"] >= 4 and rows["kseg_postbacks"] >= 4, rows
    for table in ("kseg_postbacks", "kseg_processing"):
        left = sql(url, f"SELECT count(*) FROM {table} WHERE device_key = ANY(%s)", (list(DEVICES),))
        assert left == [(0,)], table
    assert sql(url, "SELECT count(*) FROM kseg_postbacks WHERE device_key = %s", (OTHER,))[0][0] >= 1
    assert record["kafka_gone_by"] and record["targets"]["kafka_logs"]["status"] == "done"
    stored = sql(url, "SELECT status, type FROM kseg_privacy_requests WHERE request_id = %s", (request_id,))
    assert stored == [("done", "delete")]

    # After a restart (state recovered from the changelogs), a new postback from either device produces
    # nothing and counts as suppressed.
    p.kill("worker-1", signal.SIGTERM)
    await p.start_worker()
    before_calls = len(segment.messages)
    for device in DEVICES:
        assert (await p.get(purchase(device, 2)))[0] == 200
    assert (await p.get(purchase(OTHER, 2)))[0] == 200  # the control: still flows
    await wait_for(
        lambda: any(
            m.get("context", {}).get("kseg", {}).get("kochava_device_id") == OTHER
            for m in segment.messages[before_calls:]
        ),
        60,
        "the other user's purchase",
    )
    text = await p.worker_metrics()
    assert metric(text, "kseg_privacy_dropped_total", reason="deleted", kind="postback") == 2
    assert not [
        m
        for m in segment.messages[before_calls:]
        if m.get("userId") == "u1" or m.get("context", {}).get("kseg", {}).get("kochava_device_id") in DEVICES
    ]
    assert rows_of(url, ["KIPD1", "KIPD2"]) == 0
    # No dead letter carries the ids.
    dead = sql(url, "SELECT count(*) FROM kseg_events WHERE kochava_device_id = ANY(%s)", (list(DEVICES),))
    assert dead == [(0,)]


@pytest.mark.long
async def test_device_only_delete_then_segment_webhook_delete_survives_a_kill_mid_fanout(
    make_pipeline: Any,
    segment: SegmentEmulator,
    public_api: SegmentPublicApiEmulator,
    scrub: KochavaPrivacyEmulator,
    dump_logs: list[Pipeline],
) -> None:
    p = await make_pipeline(
        segment.url, SEGMENT_WEBHOOK_SECRET=SECRET, **privacy_env(public_api, scrub)
    ).start()
    dump_logs.append(p)
    for device, ids in DEVICES.items():
        assert (await p.get(install(device, **ids)))[0] == 200
        status, body, _ = await p.post(
            "/v1/identity/links", {"user_id": "u1", "kochava_device_id": device, **ids}, token=LINK_TOKEN
        )
        assert status == 200, body
    await wait_for(
        lambda: {m.get("userId") for m in segment.messages if m["type"] == "identify"} >= {"u1"},
        60,
        "u1 linked",
    )

    # A delete by one device: that device only, and Segment cannot be asked (no userId).
    status, answer, _ = await p.post(
        PATH, {"type": "delete", "devices": {"kochava_device_id": "KIPD1"}}, token=PRIVACY_TOKEN
    )
    assert status == 202, answer
    record = await wait_status(p, answer["request_id"], "done")
    covered = record["covered"]
    assert covered["user_ids"] == [] and "KIPD2" not in covered["device_keys"]
    assert f"adid:{ADID_2}" not in covered["typed_ids"] and f"idfv:{IDFV_1}" in covered["typed_ids"]
    assert record["targets"]["segment"]["status"] == "not_applicable"
    assert "anonymousId" in record["targets"]["segment"]["reason"]
    assert record["targets"]["warehouse"]["status"] == "not_configured"
    assert public_api.regulations == []
    sent = {(d["id_type"], d["id_value"]) for d in scrub.scrubs[0]["device_ids"]}
    assert ("kochava_device_id", "KIPD1") in sent and ("idfv", IDFV_1) in sent
    assert not {v for _, v in sent} & {"KIPD2", ADID_2}
    before = len(segment.messages)
    assert (await p.get(purchase("KIPD1", 5)))[0] == 200
    assert (await p.get(purchase("KIPD2", 5)))[0] == 200  # the user's other device goes on
    await wait_for(
        lambda: any(
            m.get("properties", {}).get("order_id") == "o-KIPD2-5" for m in segment.messages[before:]
        ),
        60,
        "the other device's purchase",
    )
    await wait_for(lambda: _dropped(p), 60, "the erased device's purchase counted as dropped")
    assert not any(m.get("properties", {}).get("order_id") == "o-KIPD1-5" for m in segment.messages)

    # Segment forwards a user deletion to the webhook; Segment's Public API is down, and the worker is
    # killed in the middle of the fan-out: the request finishes after the restart, once.
    public_api.fail_for(3600, status=503)
    delete = {"type": "delete", "userId": "u1", "timestamp": "2026-12-01T00:00:00Z"}
    status, body = await deliver(p, delete)
    assert status == 200 and body["privacy_request_id"], body
    request_id = body["privacy_request_id"]
    assert (await deliver(p, delete))[1]["duplicate"] is True  # Segment's redelivery is the same request
    failing = await wait_for(
        lambda: _segment_failed(p, request_id), 60, "the Segment target failing while Segment is down"
    )
    assert failing["status"] == "in_progress" and failing["channel"] == "segment_webhook"
    p.kill("worker-1")  # SIGKILL: no clean shutdown
    public_api._faults.clear()
    await p.start_worker()
    record = await wait_status(p, request_id, "done", 120)
    assert public_api.regulations == [
        {"regulationType": "SUPPRESS_WITH_DELETE", "subjectType": "USER_ID", "subjectIds": ["u1"]}
    ]
    assert "KIPD2" in record["covered"]["device_keys"]
    assert len(scrub.scrubs) == 2  # one per request: the kill did not repeat a scrub already recorded
    before = len(segment.messages)
    assert (await p.get(purchase("KIPD2", 6)))[0] == 200
    assert (await p.get(purchase(OTHER, 6)))[0] == 200
    await wait_for(
        lambda: any(
            m.get("properties", {}).get("order_id") == f"o-{OTHER}-6" for m in segment.messages[before:]
        ),
        60,
        "the control purchase",
    )
    assert not any(m.get("properties", {}).get("order_id") == "o-KIPD2-6" for m in segment.messages)
    text = await p.worker_metrics()
    assert metric(text, "kseg_privacy_dropped_total", reason="deleted", kind="postback") >= 1


async def _segment_failed(p: Pipeline, request_id: str) -> dict[str, Any] | None:
    code, body, _ = await p.get(
        "", token=None, path=f"{PATH}/{request_id}", headers={"Authorization": f"Bearer {PRIVACY_TOKEN}"}
    )
    if code != 200:
        return None
    segment_target = body["targets"].get("segment", {})
    return body if segment_target.get("status") == "failed" else None


async def _dropped(p: Pipeline) -> bool:
    text = await p.worker_metrics()
    return metric(text, "kseg_privacy_dropped_total", reason="deleted", kind="postback") == 1


@pytest.mark.long
async def test_rows_the_loader_had_not_loaded_yet_are_deleted_too(
    make_pipeline: Any, segment: SegmentEmulator, warehouse_pg: Any, dump_logs: list[Pipeline]
) -> None:
    """A deletion while the loader is behind: the rows still in Kafka then are loaded later, so the
    warehouse target waits for the loader to pass them and deletes again before it says done."""
    url = warehouse_pg.url
    p = await make_pipeline(segment.url, KSEG_WAREHOUSE_URL=url, **privacy_env(None, None)).start()
    dump_logs.append(p)
    loader = LoaderProcess(p, url).start()
    await loader.wait_ready()
    assert (await p.get(install("KIPL1")))[0] == 200
    status, body, _ = await p.post(
        "/v1/identity/links", {"user_id": "u1", "kochava_device_id": "KIPL1"}, token=LINK_TOKEN
    )
    assert status == 200, body
    await wait_for(lambda: rows_of(url, ["KIPL1"]) >= 1, 60, "the install's warehouse row")

    p.kill("loader", signal.SIGTERM)  # the loader falls behind: the purchase stays in Kafka
    assert (await p.get(purchase("KIPL1", 1)))[0] == 200
    await wait_for(
        lambda: any(m.get("properties", {}).get("order_id") == "o-KIPL1-1" for m in segment.messages),
        60,
        "the purchase delivered (so its warehouse record is in Kafka)",
    )
    status, answer, _ = await p.post(PATH, {"type": "delete", "user_id": "u1"}, token=PRIVACY_TOKEN)
    assert status == 202, answer
    request_id = answer["request_id"]

    async def waiting_for_loader() -> bool:
        target = (await status_of(p, request_id))["targets"].get("warehouse", {})
        reason = target.get("reason") or ""
        return target.get("status") == "pending" and "waiting for the warehouse loader" in reason

    await wait_for(waiting_for_loader, 60, "the warehouse target waiting for the loader")
    assert rows_of(url, ["KIPL1"]) == 0  # the first pass deleted the install's row

    LoaderProcess(p, url).start()  # the loader catches up and loads the purchase's row ...
    record = await wait_status(p, request_id, "done", 120)
    assert record["targets"]["warehouse"]["status"] == "done"
    assert rows_of(url, ["KIPL1"]) == 0  # ... which the target deleted before saying done
    left = sql(url, "SELECT count(*) FROM kseg_postbacks WHERE device_key = %s", ("KIPL1",))
    assert left == [(0,)]
