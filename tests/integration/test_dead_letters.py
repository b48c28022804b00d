"""Postbacks the receiver accepts but the mapping cannot: typed dead letters, metrics, `kseg dlq` list/replay.

The receiver only checks the token and a device id, so these all get a 200; the worker dead-letters them
with the raw postback, and the good postbacks sent in between still reach Segment.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import orjson

from tests.emulators.segment_api import SegmentEmulator
from tests.harness import ROOT, Pipeline, metric, read_topic, wait_for


def purchase(device: str, **extra: str) -> dict[str, str]:
    return {
        "event_name": "Purchase",
        "kochava_device_id": device,
        "event_value": "4.99",
        "currency": "USD",
        "network_name": "ExampleNetwork",
        "timestamp": "1735776000",
        **extra,
    }


GOOD = [
    {
        "event_name": "_install",
        "kochava_device_id": "KIDLOK1",
        "network_name": "Net",
        "timestamp": "1735689600",
    },
    purchase("KIDLOK2", order_id="ok-2"),
    {"event_name": "Level Complete", "kochava_device_id": "KIDLOK3", "level": "3", "timestamp": "1735776000"},
]

#: reason → (device, params): each postback breaks exactly one mapping rule.
BAD: dict[str, dict[str, str]] = {
    "invalid_revenue": purchase("KIDLBAD1", event_value="-5.00"),
    "invalid_currency": purchase("KIDLBAD2", currency="US"),
    "unparseable_timestamp": purchase("KIDLBAD3", timestamp="yesterday at noon"),
    "unknown_profile": purchase("KIDLBAD4", profile="nope"),
}


async def dead_letters(p: Pipeline) -> list[dict[str, Any]]:
    return [value for _, value in await read_topic(p.bootstrap, p.topic("deadletter"))]


async def kseg(p: Pipeline, *args: str) -> tuple[int, str, str]:
    """Run the real `kseg` CLI against this deployment's broker and app id.

    KSEG_EMBEDDED_BROKER is passed on as the deployment has it: without it `dlq replay` builds an
    idempotent producer, which the embedded broker refuses (InitProducerIdRequest fails).
    """
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": p.bootstrap,
        "KSEG_APP_ID": p.app_id,
        "KSEG_EMBEDDED_BROKER": p.env["KSEG_EMBEDDED_BROKER"],
    }
    env.pop("KSEG_MAPPING_DIR", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_unmappable_postbacks_are_dead_lettered_counted_listed_and_replayed(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p: Pipeline = make_pipeline(segment.url)
    dump_logs.append(p)
    await p.start()

    # Good and bad interleaved: each bad one sits between two good ones.
    bad = list(BAD.items())
    sequence = [GOOD[0], bad[0][1], GOOD[1], bad[1][1], bad[2][1], GOOD[2], bad[3][1]]
    for params in sequence:
        status, body, _ = await p.get(params)
        assert (status, body) == (200, {"message": "success"}), params

    # Three new devices, each: identify (first touch / lifecycle) + its track + Lifecycle Stage Changed.
    await wait_for(lambda: len(segment.messages) >= 9, 30, "the good postbacks at Segment")
    letters = await wait_for(lambda: _at_least(dead_letters(p), 4), 30, "4 dead letters")

    # ---- typed dead letters carrying the raw postback ------------------------------------------
    by_reason = {d["reason"]: d for d in letters}
    assert sorted(by_reason) == sorted(BAD), [d["reason"] for d in letters]
    assert len(letters) == 4
    for reason, params in BAD.items():
        letter = by_reason[reason]
        assert letter["kind"] == "dead_letter" and letter["stage"] == "mapping", letter
        assert letter["error"], letter
        payload = letter["payload"]
        assert payload["kind"] == "postback" and payload["source"] == "get", payload
        assert payload["event_id"] == letter["event_id"]
        raw = {k: v for k, v in params.items() if k != "profile"}
        assert payload["params"] == raw, (reason, payload["params"])
    assert by_reason["invalid_revenue"]["payload"]["params"]["event_value"] == "-5.00"
    assert by_reason["invalid_currency"]["payload"]["params"]["currency"] == "US"
    assert by_reason["unparseable_timestamp"]["payload"]["params"]["timestamp"] == "yesterday at noon"
    for reason in ("invalid_revenue", "invalid_currency", "unparseable_timestamp"):
        assert (by_reason[reason]["profile"], by_reason[reason]["profile_version"]) == (
            "kochava-default",
            "2",
        )
    unknown = by_reason["unknown_profile"]
    assert unknown["profile"] == "nope" and unknown["payload"]["profile"] == "nope"
    assert "nope" in unknown["error"]

    # ---- nothing of the bad ones reached Segment; every good one did ---------------------------
    devices = [m["context"]["kseg"]["kochava_device_id"] for m in segment.messages]
    assert not {params["kochava_device_id"] for params in BAD.values()} & set(devices)
    events = sorted(
        (m["context"]["kseg"]["kochava_device_id"], m["type"], m.get("event"))
        for m in segment.messages
        if m.get("event") != "Lifecycle Stage Changed" and m["type"] != "identify"
    )
    assert events == [
        ("KIDLOK1", "track", "Install Attributed"),
        ("KIDLOK2", "track", "Order Completed"),
        ("KIDLOK3", "track", "Level Completed"),
    ]
    assert sorted(
        m["context"]["kseg"]["kochava_device_id"] for m in segment.messages if m["type"] == "identify"
    ) == [
        "KIDLOK1",
        "KIDLOK2",
        "KIDLOK3",
    ]

    # ---- the worker counts them per stage and reason ------------------------------------------
    metrics = await p.worker_metrics()
    for reason in BAD:
        counted = metric(metrics, "kseg_dead_letters_total", stage="mapping", reason=reason)
        assert counted == 1, f"{reason}: {counted} in:\n{_grep(metrics, 'dead_letters')}"

    # ---- `kseg dlq list --json`: every letter, one JSON object a line --------------------------
    code, out, err = await kseg(p, "dlq", "list", "--json")
    assert code == 0, err
    listed = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    assert sorted((d["reason"], d["event_id"]) for d in listed) == sorted(
        (d["reason"], d["event_id"]) for d in letters
    )
    assert all(d["payload"]["params"] for d in listed)

    # ---- `kseg dlq list --reason invalid_revenue`: the table filtered to one reason ------------
    code, out, err = await kseg(p, "dlq", "list", "--reason", "invalid_revenue")
    assert code == 0, err
    revenue_id = by_reason["invalid_revenue"]["event_id"]
    rows = [line for line in out.splitlines() if revenue_id in line]
    assert len(rows) == 1 and "invalid_revenue" in rows[0] and "mapping" in rows[0], out
    for other in ("invalid_currency", "unparseable_timestamp", "unknown_profile"):
        assert other not in out, out
    assert f"1 dead letter(s) in {p.app_id}.deadletter (invalid_revenue: 1)" in out, out

    # ---- `kseg dlq replay --reason unknown_profile` --------------------------------------------
    # The replay re-sends the raw postback (source "replay", same event id, same profile "nope").
    # The profile is still not loaded, so the worker dead-letters it again: a second letter with the
    # same event id, now from a replayed record, proves the replay went through the live pipeline.
    code, out, err = await kseg(p, "dlq", "replay", "--reason", "unknown_profile")
    assert code == 0, err
    assert "replayed 1 of 1 dead letter(s); 0 had no replayable payload" in out, out

    async def replayed_letters() -> list[dict[str, Any]]:
        return [
            d
            for d in await dead_letters(p)
            if d["reason"] == "unknown_profile" and d["event_id"] == unknown["event_id"]
        ]

    again = await wait_for(
        lambda: _at_least(replayed_letters(), 2), 30, "the replayed postback's dead letter"
    )
    assert len(again) == 2
    assert sorted(d["payload"]["source"] for d in again) == ["get", "replay"]
    assert all(d["payload"]["params"] == unknown["payload"]["params"] for d in again)
    metrics = await p.worker_metrics()
    assert metric(metrics, "kseg_dead_letters_total", stage="mapping", reason="unknown_profile") == 2
    assert len(await dead_letters(p)) == 5  # nothing else was replayed
    assert len(segment.messages) == 9


async def _at_least(coro: Any, n: int) -> list[Any] | None:
    values: list[Any] = await coro
    return values if len(values) >= n else None


def _grep(text: str, needle: str) -> str:
    return "\n".join(line for line in text.splitlines() if needle in line)
