"""Postback → receiver → Kafka → worker → Segment, through real processes and real HTTP."""

from __future__ import annotations

from typing import Any

import orjson

from tests.emulators.segment_api import SegmentEmulator
from tests.harness import Pipeline, metric, read_topic, wait_for

INSTALL = {
    "event_name": "_install",
    "kochava_device_id": "KI1234ABCD",
    "idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "network_name": "ExampleNetwork",
    "campaign_name": "Spring Launch",
    "site_id": "site_42",
    "creative_id": "cr_99",
    "click_id": "abc123",
    "country": "US",
    "timestamp": "1735689600",
}


def _by_type(messages: list[dict[str, Any]], kind: str, event: str | None = None) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == kind and (event is None or m.get("event") == event)]


async def test_install_reaches_segment_as_identify_and_install_attributed(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p: Pipeline = make_pipeline(segment.url)
    dump_logs.append(p)
    await p.start()

    status, body, _ = await p.get(INSTALL)
    assert (status, body) == (200, {"message": "success"})
    await wait_for(lambda: len(segment.messages) >= 3, 30, "identify + tracks at the Segment emulator")

    identify = _by_type(segment.messages, "identify")
    track = _by_type(segment.messages, "track", "Install Attributed")
    assert len(identify) == 1 and len(track) == 1
    assert (
        _by_type(segment.messages, "track", "Lifecycle Stage Changed")[0]["properties"]["to"] == "installed"
    )
    assert track[0]["properties"]["provider"] == "Kochava"
    assert track[0]["properties"]["campaign"]["source"] == "ExampleNetwork"
    assert track[0]["anonymousId"] == identify[0]["anonymousId"]
    assert track[0]["context"]["device"]["advertisingId"] == INSTALL["idfa"]
    assert track[0]["timestamp"].startswith("2025-01-01T00:00:00")

    rows = await read_topic(p.bootstrap, p.topic("warehouse.events"))
    assert [row["kochava_device_id"] for _, row in rows] == ["KI1234ABCD"]

    # A Kochava retry of the same postback is accepted again but not delivered twice.
    status, _, _ = await p.get(INSTALL)
    assert status == 200
    await wait_for(
        lambda: metric(_sync_metrics(p), "kseg_worker_deduplicated_total") == 1, 20, "dedupe counter"
    )
    assert len(segment.messages) == 3


def _sync_metrics(p: Pipeline) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{p.worker_ports['worker-1']}/metrics", timeout=2) as r:
        return r.read().decode()


async def test_dry_run_writes_batch_bodies_without_a_write_key(
    make_pipeline: Any, dump_logs: list[Pipeline]
) -> None:
    p: Pipeline = make_pipeline(None)
    dump_logs.append(p)
    await p.start()
    status, _, _ = await p.get(INSTALL)
    assert status == 200
    outbox = p.data_dir / "segment-outbox.jsonl"

    def batches() -> list[dict[str, Any]]:
        if not outbox.exists():
            return []
        return [orjson.loads(line) for line in outbox.read_bytes().splitlines() if line.strip()]

    await wait_for(lambda: sum(len(b["batch"]) for b in batches()) >= 2, 30, "dry-run batches")
    messages = [m for b in batches() for m in b["batch"]]
    assert {m["type"] for m in messages} == {"identify", "track"}
    assert "Install Attributed" in {m.get("event") for m in messages}


async def test_bad_input_gets_precise_json_errors(make_pipeline: Any, dump_logs: list[Pipeline]) -> None:
    p: Pipeline = make_pipeline(None)
    dump_logs.append(p)
    await p.start_receiver()

    status, body, _ = await p.get(INSTALL, token=None)
    assert status == 401 and body["error"] == "missing_token"
    status, body, _ = await p.get(INSTALL, token="wrong")
    assert status == 401 and body["error"] == "invalid_token"
    no_device = {k: v for k, v in INSTALL.items() if k not in ("kochava_device_id", "idfa")}
    status, body, _ = await p.get(no_device)
    assert (
        status == 400
        and body["error"] == "missing_device_id"
        and "kochava_device_id" in body["expected_any_of"]
    )
    zero_idfa = {**no_device, "idfa": "00000000-0000-0000-0000-000000000000"}
    status, body, _ = await p.get(zero_idfa)
    assert status == 400 and body["error"] == "missing_device_id"
    status, body, _ = await p.post("/v1/kochava/postbacks", b"x" * (64 * 1024 + 1))
    assert status == 413 and body["error"] == "body_too_large"
    status, body, _ = await p.post("/v1/kochava/postbacks", b"{not json")
    assert status == 400 and body["error"] == "invalid_json"
    status, body, _ = await p.post("/v1/kochava/postbacks", b"[1, 2]")
    assert status == 400 and body["error"] == "invalid_json"
    # Accepted forms: JSON body, form body, Bearer header.
    status, body, _ = await p.post("/v1/kochava/postbacks", INSTALL)
    assert status == 200, body
    form = "&".join(f"{k}={v}" for k, v in INSTALL.items()).encode()
    status, body, _ = await p.post(
        "/v1/kochava/postbacks", form, content_type="application/x-www-form-urlencoded"
    )
    assert status == 200, body
    rows = await read_topic(p.bootstrap, p.topic("postbacks.raw"))
    assert sorted(v["source"] for _, v in rows) == ["post_form", "post_json"]
    assert all(key == b"KI1234ABCD" for key, _ in rows)


async def test_receiver_health_and_readiness(make_pipeline: Any, dump_logs: list[Pipeline]) -> None:
    p: Pipeline = make_pipeline(None)
    dump_logs.append(p)
    await p.start_receiver()
    status, body, _ = await p.get({}, token=None, path="/healthz")
    assert status == 200 and body == {"status": "alive"}
    status, body, _ = await p.get({}, token=None, path="/readyz")
    assert status == 200 and body["ready"] is True
    assert body["blocked"] == {}  # the shape every process answers (app/runtime/health.py)
