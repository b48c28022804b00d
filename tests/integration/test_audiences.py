"""Engage audiences and kseg's own audiences reach Kochava for every device of each user, through
the real receiver, broker and worker processes, the Segment emulator and the Kochava emulator."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.emulators.kochava_api import KochavaEmulator
from tests.emulators.segment_api import SegmentEmulator
from tests.harness import LINK_TOKEN, Pipeline, read_topic, wait_for

SECRET = "webhook-secret"
GUID = "koapp-e2e"
IDFV_1 = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
ADID_2 = "38400000-8cf0-11bd-b23e-10b96e40000d"
IDFV_3 = "AB92078A-8246-4BA4-AE5B-76104861E7DD"
IDFA_1 = "CD92078A-8246-4BA4-AE5B-76104861E7DE"


@pytest.fixture
async def kochava() -> AsyncIterator[KochavaEmulator]:
    async with KochavaEmulator(GUID) as emulator:
        yield emulator


def install(device: str, **ids: str) -> dict[str, str]:
    return {
        "event_name": "_install",
        "kochava_device_id": device,
        "network_name": "Net",
        "timestamp": "1735689600",
        **ids,
    }


def engage_identify(
    entered: bool, at: str, email: str = "ada@example.com", user: str = "u1"
) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": user,
        "messageId": f"engage-{user}-{entered}-{at}-{email}",
        "timestamp": at,
        "traits": {"high_ltv_paid_social": entered, "email": email},
        "context": {
            "personas": {
                "computation_class": "audience",
                "computation_id": "aud_2Nx",
                "computation_key": "high_ltv_paid_social",
                "namespace": "spa_1",
                "space_id": "spa_1",
            }
        },
        "integrations": {"All": False, "Webhooks": True},
    }


def engage_track(entered: bool, at: str, user: str) -> dict[str, Any]:
    call = engage_identify(entered, at, user=user)
    del call["traits"]
    call.update(
        type="track",
        event="Audience Entered" if entered else "Audience Exited",
        properties={"audience_key": "high_ltv_paid_social", "high_ltv_paid_social": entered},
    )
    return call


async def deliver(p: Pipeline, payload: Any, signature: str | None = None) -> tuple[int, dict[str, Any]]:
    """POST a delivery signed like Segment (HMAC-SHA1 of the body, or of element 0 of a batch)."""
    raw = orjson.dumps(payload)
    signed = orjson.dumps(payload[0]) if isinstance(payload, list) else raw
    sig = signature or hmac.new(SECRET.encode(), signed, hashlib.sha1).hexdigest()
    status, body, _ = await p.post("/v1/segment/webhook", raw, token=None, headers={"X-Signature": sig})
    return status, body


def audience_events(kochava: KochavaEmulator, name: str) -> list[dict[str, Any]]:
    return [e for e in kochava.events if e["data"]["event_name"] == name]


async def wait_events(kochava: KochavaEmulator, name: str, n: int, what: str, timeout: float) -> list[Any]:
    """Wait until Kochava holds exactly `n` events called `name`; returns them."""
    events: list[Any] = await wait_for(
        lambda: len(audience_events(kochava, name)) == n and audience_events(kochava, name), timeout, what
    )
    return events


def devices_of(events: list[dict[str, Any]]) -> list[str]:
    return sorted(e["kochava_device_id"] for e in events)


async def start(
    make_pipeline: Any, segment: SegmentEmulator, kochava: KochavaEmulator, **env: str
) -> Pipeline:
    return await make_pipeline(
        segment.url,
        SEGMENT_WEBHOOK_SECRET=SECRET,
        KOCHAVA_APP_GUID=GUID,
        KOCHAVA_TRACKING_URL=kochava.url,
        **env,
    ).start()


async def link_devices(
    p: Pipeline, kochava: KochavaEmulator, user: str, *devices: tuple[str, dict[str, str]]
) -> None:
    for device, ids in devices:
        assert (await p.get(install(device, **ids)))[0] == 200
    for device, ids in devices:
        status, body, _ = await p.post(
            "/v1/identity/links", {"user_id": user, "kochava_device_id": device, **ids}, token=LINK_TOKEN
        )
        assert status == 200, body
    wanted = {d for d, _ in devices}
    await wait_for(
        lambda: wanted <= {x["device_id"].get("kochava_device_id") for x in kochava.identity_links},
        60,
        f"IdentityLink for {sorted(wanted)}",
    )


def kseg(p: Pipeline, *args: str) -> str:
    env = {**p.env, "KAFKA_BOOTSTRAP_SERVERS": p.bootstrap}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_identify_mode_entry_every_device_dedupe_late_device_exit_identity_link_once(
    make_pipeline: Any, segment: SegmentEmulator, kochava: KochavaEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await start(make_pipeline, segment, kochava)
    dump_logs.append(p)
    ids_1 = {"idfv": IDFV_1, "idfa": IDFA_1}
    await link_devices(p, kochava, "u1", ("KIAUD1", ids_1), ("KIAUD2", {"adid": ADID_2}))

    status, body = await deliver(p, engage_identify(True, "2026-01-01T10:00:00Z"))
    assert status == 200 and body["audience_changes"] == 1, body
    entered = await wait_events(kochava, "Audience Entered", 2, "two Audience Entered events", 60)
    by_device = {e["kochava_device_id"]: e for e in entered}
    assert by_device["KIAUD1"]["device_ids"] == ids_1
    # The iOS postback showed a usable IDFA: ATT authorized, so Kochava keeps the IDFA.
    assert by_device["KIAUD1"]["app_tracking_transparency"] == {"att": True}
    assert by_device["KIAUD2"]["device_ids"] == {"adid": ADID_2}
    assert "app_tracking_transparency" not in by_device["KIAUD2"]
    for event in entered:
        assert event["kochava_app_id"] == GUID and event["action"] == "event"
        assert event["usertime"] == 1767261600
        assert event["data"]["event_data"] == {
            "audience_key": "high_ltv_paid_social",
            "audience_id": "aud_2Nx",
            "audience_source": "segment",
        }

    # Engage re-sends the change, and the first sync sends one call per identifier: no extra events.
    assert (await deliver(p, engage_identify(True, "2026-01-01T10:00:00Z")))[0] == 200
    assert (await deliver(p, engage_identify(True, "2026-01-01T10:00:05Z", email="ada@work.example")))[
        0
    ] == 200
    # A device linked after the entry enters too (and gets its IdentityLink); a repeated link does not.
    await link_devices(p, kochava, "u1", ("KIAUD3", {"idfv": IDFV_3}))
    assert (
        await p.post("/v1/identity/links", {"user_id": "u1", "kochava_device_id": "KIAUD1"}, token=LINK_TOKEN)
    )[0] == 200
    await wait_for(
        lambda: len(audience_events(kochava, "Audience Entered")) >= 3, 60, "the late device's entry"
    )

    assert (await deliver(p, engage_identify(False, "2026-01-02T10:00:00Z")))[0] == 200
    exited = await wait_events(kochava, "Audience Exited", 3, "Audience Exited for the three devices", 60)
    assert devices_of(exited) == ["KIAUD1", "KIAUD2", "KIAUD3"]
    # An older entry arriving after the exit never overrides it. A later change of another audience for the
    # same member shares its key (so its partition, in order): once that one arrived, the stale one was seen.
    assert (await deliver(p, engage_identify(True, "2026-01-01T23:00:00Z")))[0] == 200
    other = engage_identify(True, "2026-01-03T10:00:00Z")
    other["context"]["personas"].update(computation_id="aud_other", computation_key="churn_risk")
    other["traits"] = {"churn_risk": True}
    assert (await deliver(p, other))[0] == 200
    await wait_for(
        lambda: (
            len([e for e in kochava.events if e["data"]["event_data"]["audience_key"] == "churn_risk"]) == 3
        ),
        60,
        "the other audience's entries",
    )
    high_ltv = [
        e
        for e in audience_events(kochava, "Audience Entered")
        if e["data"]["event_data"]["audience_id"] == "aud_2Nx"
    ]
    assert devices_of(high_ltv) == ["KIAUD1", "KIAUD2", "KIAUD3"]
    await link_devices(p, kochava, "u2", ("KIAUD9", {"idfv": "1B92078A-8246-4BA4-AE5B-76104861E7D9"}))
    links = sorted(
        (x["device_id"]["kochava_device_id"], x["data"]["app_userid"]) for x in kochava.identity_links
    )
    assert links == [("KIAUD1", "u1"), ("KIAUD2", "u1"), ("KIAUD3", "u1"), ("KIAUD9", "u2")]
    assert kochava.rejections == {} and kochava.idfa_dropped == 0

    # The exports read the membership table's changelog: a file a person can upload.
    listing = kseg(p, "audiences", "list")
    churn = next(line for line in listing.splitlines() if line.startswith("churn_risk"))
    assert churn.split()[1:5] == ["segment", "aud_other", "1", "3"], listing
    assert next(x for x in listing.splitlines() if x.startswith("high_ltv_paid_social")).split()[3] == "0"
    assert kseg(p, "audiences", "export", "churn_risk", "--format", "mobile-ids").split() == [IDFA_1, ADID_2]
    rows = kseg(p, "audiences", "export", "churn_risk", "--format", "kochava").splitlines()
    assert rows[0] == "device_id_type,device_id"
    assert sorted(rows[1:]) == sorted(
        [
            "kochava_device_id,KIAUD1",
            f"idfa,{IDFA_1}",
            f"idfv,{IDFV_1}",
            "kochava_device_id,KIAUD2",
            f"adid,{ADID_2}",
            "kochava_device_id,KIAUD3",
            f"idfv,{IDFV_3}",
        ]
    )


async def test_batched_track_mode_bad_signature_is_401_and_nothing_recorded(
    make_pipeline: Any, segment: SegmentEmulator, kochava: KochavaEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await start(make_pipeline, segment, kochava)
    dump_logs.append(p)
    await link_devices(p, kochava, "t1", ("KITRK1", {"idfv": IDFV_1}))
    await link_devices(p, kochava, "t2", ("KITRK2", {"adid": ADID_2}))
    batch = [
        engage_track(True, "2026-02-01T10:00:00Z", "t1"),
        engage_track(True, "2026-02-01T10:00:01Z", "t2"),
    ]

    status, body = await deliver(p, batch, signature="0" * 40)
    assert status == 401 and body["error"] == "invalid_signature"
    records = await read_topic(p.bootstrap, p.topic("audiences.changes"))
    assert [v for _, v in records if v["kind"] == "membership_change"] == []

    status, body = await deliver(p, batch)
    assert status == 200 and body["audience_changes"] == 2, body
    entered = await wait_events(kochava, "Audience Entered", 2, "both users' devices entering", 60)
    assert devices_of(entered) == ["KITRK1", "KITRK2"]


async def test_kochava_outage_holds_only_kochava_then_everything_arrives_once(
    make_pipeline: Any, segment: SegmentEmulator, kochava: KochavaEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await start(make_pipeline, segment, kochava)
    dump_logs.append(p)
    await link_devices(p, kochava, "o1", ("KIOUT1", {"idfv": IDFV_1}), ("KIOUT2", {"adid": ADID_2}))
    kochava.fail_for(3600, status=503, retry_after=0.5)
    assert (await deliver(p, engage_identify(True, "2026-03-01T10:00:00Z", user="o1")))[0] == 200
    await wait_for(lambda: kochava.status_counts["503"] >= 4, 60, "Kochava answering 503 to the retries")

    # Kochava is down, yet ingest and Segment delivery go on.
    event = {
        "event_name": "Level Complete",
        "kochava_device_id": "KIOUT1",
        "n": "1",
        "timestamp": "1735690001",
    }
    assert (await p.get(event))[0] == 200
    await wait_for(
        lambda: any(m.get("event") == "Level Completed" for m in segment.messages), 60, "Segment delivery"
    )
    assert audience_events(kochava, "Audience Entered") == []

    kochava.clear_faults()
    entered = await wait_events(kochava, "Audience Entered", 2, "the entries after recovery", 90)
    assert devices_of(entered) == ["KIOUT1", "KIOUT2"]
    letters = await read_topic(p.bootstrap, p.topic("deadletter"))
    assert [v for _, v in letters if v.get("stage") in ("kochava", "audiences")] == []
    assert (
        'kseg_audience_devices_total{audience="high_ltv_paid_social",outcome="sent"} 2.0'
        in await p.worker_metrics()
    )


async def test_conversion_postback_puts_every_device_of_the_user_in_the_suppression_audience(
    make_pipeline: Any, segment: SegmentEmulator, kochava: KochavaEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await start(make_pipeline, segment, kochava)
    dump_logs.append(p)
    await link_devices(p, kochava, "s1", ("KISUP1", {"idfv": IDFV_1}), ("KISUP2", {"adid": ADID_2}))
    subscribe = {
        "event_name": "Subscribe",
        "kochava_device_id": "KISUP1",
        "event_value": "9.99",
        "currency": "USD",
        "timestamp": "1735700000",
    }
    assert (await p.get(subscribe))[0] == 200
    # A converted device nobody is known for is suppressed on its own.
    assert (await p.get(install("KISUP3", adid="48400000-8cf0-11bd-b23e-10b96e40000e")))[0] == 200
    assert (await p.get({**subscribe, "kochava_device_id": "KISUP3", "timestamp": "1735700001"}))[0] == 200

    def suppressed() -> list[dict[str, Any]]:
        return [
            e
            for e in audience_events(kochava, "Audience Entered")
            if e["data"]["event_data"]["audience_key"] == "kseg_ad_suppression"
        ]

    events = await wait_for(lambda: len(suppressed()) == 3 and suppressed(), 60, "the suppression audience")
    assert devices_of(events) == ["KISUP1", "KISUP2", "KISUP3"]
    assert {e["data"]["event_data"]["audience_source"] for e in events} == {"kseg"}
    assert {e["data"]["event_data"]["audience_id"] for e in events} == {"kseg_ad_suppression"}
    # A second conversion changes nothing: the member is already in. Its device facts (if any) are on the
    # member's partition before its Segment call is delivered; an Engage change for the same member sent
    # after that is processed after them, so once its events arrived the conversion's were seen.
    assert (await p.get({**subscribe, "timestamp": "1735700500"}))[0] == 200
    await wait_for(
        lambda: sum(m.get("event") == "Subscription Started" for m in segment.messages) == 3,
        60,
        "the conversions at Segment",
    )
    assert (await deliver(p, engage_identify(True, "2026-05-01T10:00:00Z", user="s1")))[0] == 200
    await wait_for(
        lambda: (
            len([e for e in kochava.events if e["data"]["event_data"]["audience_source"] == "segment"]) == 2
        ),
        60,
        "the sentinel Engage entry",
    )
    assert len(suppressed()) == 3
