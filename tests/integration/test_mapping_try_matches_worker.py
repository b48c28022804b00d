"""`kseg mapping try` prints what the worker sends: the same postbacks through a real receiver, broker and
worker (Segment emulator, warehouse topic) and through `kseg mapping try --json` in a real process give
the same Segment calls, byte for byte, and the same warehouse row apart from the receive time.

Each postback is its device's first, as `try` assumes. The deployment sends raw emails as a trait, which
the identity step decides: a preview that stood in for identity would differ there.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson

from tests.emulators.segment_api import SegmentEmulator
from tests.harness import TOKEN, Pipeline, read_topic, run_cli, wait_for

INSTALL = {
    "event_name": "_install",
    "kochava_device_id": "KITRY1",
    "idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "idfv": "3F2504E0-4F89-11D3-9A0C-0305E82C3301",
    "install_id": "inst_try_1",
    "network_name": "Facebook",
    "campaign": "Spring Sale",
    "site_id": "site_42",
    "creative_id": "cr_99",
    "country": "US",
    "user_id": "u-try-1",
    "email": " Someone@Example.COM ",
    "ip": "203.0.113.7",
    "device_ua": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X)",
    "profile": "kochava-default",
    "timestamp": "1735689600",
}
PURCHASE = {
    "event_name": "Purchase",
    "kochava_device_id": "KITRY2",
    "adid": "38400000-8cf0-11bd-b23e-10b96e40000d",
    "event_value": "10",
    "currency": "EUR",
    "order_id": "ord-try-2",
    "network_name": "RetargetCo",
    "attribution_type": "reengagement",
    "timestamp": "1735776000",
}
JSON_EVENT: dict[str, Any] = {
    "event_name": "Level Complete",
    "kochava_device_id": "KITRY3",
    "idfv": "8E1D2C3B-4A59-4687-9A1B-2C3D4E5F6071",
    "level": 12,
    "score": 9001.5,
    "network_name": "TikTok",
    "timestamp": "2025-02-01T12:30:00.250+01:00",
}


def calls_for(segment: SegmentEmulator, device: str) -> list[dict[str, Any]]:
    return [m for m in segment.messages if m["context"]["kseg"].get("kochava_device_id") == device]


async def mapping_try(p: Pipeline, text: str) -> dict[str, Any]:
    code, out, err = await run_cli(p.env, "mapping", "try", "--json", text)
    assert code == 0, err
    assert len(out.splitlines()) == 1  # one compact line
    result: dict[str, Any] = orjson.loads(out)
    return result


async def test_mapping_try_gives_the_worker_s_segment_calls_and_warehouse_row(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await make_pipeline(segment.url, KSEG_ALLOW_RAW_EMAIL_TRAIT="true").start()
    dump_logs.append(p)
    for params in (INSTALL, PURCHASE):
        status, body, _ = await p.get(params)
        assert status == 200, body
    status, body, _ = await p.post("/v1/kochava/postbacks", JSON_EVENT)
    assert status == 200, body

    previews = {
        "KITRY1": await mapping_try(
            p, f"https://kseg.example/v1/kochava/postbacks?{urlencode(INSTALL)}&token={TOKEN}"
        ),
        "KITRY2": await mapping_try(p, urlencode(PURCHASE)),
        "KITRY3": await mapping_try(p, orjson.dumps(JSON_EVENT).decode()),
    }
    assert any(
        c.get("traits", {}).get("email") == "someone@example.com" for c in previews["KITRY1"]["segment"]
    )

    async def rows() -> dict[str, dict[str, Any]] | None:
        found = await read_topic(p.bootstrap, p.topic("warehouse.events"))
        by_device = {row["kochava_device_id"]: row for _, row in found}
        return by_device if set(previews) <= set(by_device) else None

    need = {device: len(preview["segment"]) for device, preview in previews.items()}
    await wait_for(lambda: all(len(calls_for(segment, d)) >= n for d, n in need.items()), 60, "the calls")
    warehouse = await wait_for(rows, 60, "the three warehouse rows")

    for device, preview in previews.items():
        sent = calls_for(segment, device)
        # Byte for byte: orjson keeps each side's key order, so equal bytes mean equal serialisations.
        assert orjson.dumps(sent) == orjson.dumps(preview["segment"]), device
        row = warehouse[device]
        tried = {**preview["warehouse"], "received_at": row["received_at"]}  # the receive times differ
        assert orjson.dumps(tried) == orjson.dumps(row), device
