"""The live mapping registry through real processes: `kseg mapping publish | rollback | history` against
running workers (two, then a restarted one and one that joins later), the Segment emulator as the judge.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import orjson

from app.mapping.profile import BUILTIN_PROFILE_DIR
from tests.emulators.segment_api import SegmentEmulator
from tests.harness import Pipeline, metric, run_cli, wait_for

DEFAULT_YAML = (BUILTIN_PROFILE_DIR / "kochava-default.yaml").read_text()


def candidate(version: str, level_name: str) -> str:
    """The packaged profile with another version and another Segment name for `Level Complete`."""
    text = DEFAULT_YAML.replace('version: "2"', f'version: "{version}"', 1)
    return text.replace("Level Complete: Level Completed", f"Level Complete: {level_name}", 1)


def level(device: str, n: int) -> dict[str, str]:
    return {"event_name": "Level Complete", "kochava_device_id": device, "level": str(n)}


def tracks(segment: SegmentEmulator, devices: list[str], n: int) -> list[tuple[str, str, str]]:
    """(device, event, profile version) of every track of round `n` of `devices` Segment received."""
    out = []
    for m in segment.messages:
        kseg = m["context"]["kseg"]
        if (
            m["type"] == "track"
            and kseg["kochava_device_id"] in devices
            and m["properties"].get("level") == str(n)
        ):
            out.append((kseg["kochava_device_id"], m["event"], kseg["profile_version"]))
    return sorted(out)


async def send_levels(p: Pipeline, devices: list[str], n: int) -> None:
    for device in devices:
        status, body, _ = await p.get(level(device, n))
        assert status == 200, body


async def round_of(segment: SegmentEmulator, devices: list[str], n: int) -> list[tuple[str, str, str]]:
    """Round `n`'s tracks, once every device's arrived."""
    return await wait_for(
        lambda: (found := tracks(segment, devices, n)) and len(found) >= len(devices) and found,
        60,
        f"round {n}'s tracks from {devices}",
    )


def log_has(p: Pipeline, worker: str, pattern: str) -> bool:
    path = p.logs[worker]
    return path.exists() and re.search(pattern, path.read_text(errors="replace")) is not None


async def test_publish_rollback_restart_and_a_late_worker(
    make_isolated_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline], tmp_path: Path
) -> None:
    p: Pipeline = make_isolated_pipeline(segment.url)
    dump_logs.append(p)
    await p.start_receiver()
    await p.start_worker("worker-1")
    await p.start_worker("worker-2")
    devices = [f"KIREG{i}" for i in range(8)]

    # Before any publish: the packaged profile (v2).
    await send_levels(p, devices, 1)
    assert await round_of(segment, devices, 1) == [(d, "Level Completed", "2") for d in devices]

    # A broken file and a reused version are refused, each problem with its line, and change nothing.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        candidate("3", "Level Finished").replace("purchase_events: [Purchase]", "purchase_events: 7")
    )
    rc, out, err = await run_cli(p.env, "mapping", "publish", str(broken))
    assert rc == 1, (out, err)
    assert f"{broken}:10: purchase_events" in out, out
    reused = tmp_path / "reused.yaml"
    reused.write_text(DEFAULT_YAML.replace("Level Complete: Level Completed", "Level Complete: Other"))
    rc, out, err = await run_cli(p.env, "mapping", "publish", str(reused))
    assert rc == 1, (out, err)
    assert re.search(rf"{reused}:6: version '2' of 'kochava-default' is already published", out), out
    renamed_fields = tmp_path / "nofields.yaml"
    renamed_fields.write_text(
        candidate("3", "Level Finished").replace("event_name: [event_name]", "event_name: [evt]")
    )
    rc, out, err = await run_cli(p.env, "mapping", "publish", str(renamed_fields))
    assert rc == 1, (out, err)
    assert "golden postback install_get: v2 maps it, this file dead-letters it (missing_event_name" in out, (
        out
    )
    rc, out, _ = await run_cli(p.env, "mapping", "history", "kochava-default")
    assert rc == 0 and "not published yet; workers run the local file v2" in out, out

    # Publish v3: both running workers switch within seconds, without a restart, and say so.
    good = tmp_path / "v3.yaml"
    good.write_text(candidate("3", "Level Finished"))
    rc, out, err = await run_cli(
        p.env, "mapping", "publish", str(good), "--note", "rename level", "--author", "ana"
    )
    assert (rc, out.strip()) == (0, "published kochava-default v3"), (out, err)
    published = time.monotonic()
    for worker in ("worker-1", "worker-2"):
        await wait_for(
            lambda w=worker: log_has(p, w, r"profile kochava-default now v3 \(was v2"), 10, f"{worker} switch"
        )
    switched_within = time.monotonic() - published
    assert switched_within < 5, switched_within
    before = {
        w: metric(await p.worker_metrics(w), "kseg_worker_processed_total", kind="event")
        for w in ("worker-1", "worker-2")
    }
    await send_levels(p, devices, 2)
    assert await round_of(segment, devices, 2) == [(d, "Level Finished", "3") for d in devices]
    after = {
        w: metric(await p.worker_metrics(w), "kseg_worker_processed_total", kind="event")
        for w in ("worker-1", "worker-2")
    }
    assert all(after[w] > before[w] for w in after), (before, after)  # both workers served v3 traffic

    rc, out, _ = await run_cli(p.env, "mapping", "history", "kochava-default")
    assert rc == 0, out
    assert re.search(r"\* 3 .* ana .* rename level", out), out
    assert re.search(r"^  2 .* seed ", out, re.M), out

    # Rollback to the packaged version: outputs carry v2 again.
    rc, out, err = await run_cli(p.env, "mapping", "rollback", "kochava-default", "--to", "2")
    assert (rc, out.strip()) == (0, "kochava-default now at v2 (was v3)"), (out, err)
    for worker in ("worker-1", "worker-2"):
        await wait_for(
            lambda w=worker: log_has(p, w, r"profile kochava-default now v2 \(was v3"),
            10,
            f"{worker} rollback",
        )
    await send_levels(p, devices, 3)
    assert await round_of(segment, devices, 3) == [(d, "Level Completed", "2") for d in devices]

    # Back to v3; a restarted worker and one joining later start with it (the registry is in Kafka).
    rc, out, err = await run_cli(p.env, "mapping", "rollback", "kochava-default", "--to", "3")
    assert rc == 0, (out, err)
    for worker in ("worker-1", "worker-2"):
        await wait_for(lambda w=worker: log_has(p, w, r"now v3 \(was v2"), 10, f"{worker} back to v3")
    p.kill("worker-1")
    p.kill("worker-2")
    await p.start_worker("worker-1")
    await p.start_worker("worker-3")
    for worker in ("worker-1", "worker-3"):
        assert log_has(p, worker, r"profiles: \{'kochava-default': '3'\}"), p.tail(worker)
    await send_levels(p, devices, 4)
    assert await round_of(segment, devices, 4) == [(d, "Level Finished", "3") for d in devices]


async def test_drift_is_reported_and_quarantined_events_replay_once_the_profile_names_them(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline], tmp_path: Path
) -> None:
    p: Pipeline = make_pipeline(segment.url, KSEG_DRIFT_REPORT_SECONDS="1")
    dump_logs.append(p)
    await p.start()
    strict = tmp_path / "v3.yaml"
    strict.write_text(candidate("3", "Level Completed") + "unknown_events: quarantine\nknown_keys: [level]\n")
    rc, out, err = await run_cli(p.env, "mapping", "publish", str(strict))
    assert (rc, out.strip()) == (0, "published kochava-default v3"), (out, err)
    await wait_for(lambda: log_has(p, "worker-1", r"kochava-default now v3"), 10, "switch to v3")

    named = {**level("KIDRIFT1", 1), "promo_code": "WINTER24", "contact": "Jane.Doe@example.com"}
    unnamed = {"event_name": "Boss Defeated", "kochava_device_id": "KIDRIFT2", "level": "9"}
    bad_revenue = {"event_name": "Purchase", "kochava_device_id": "KIDRIFT3", "event_value": "12,50"}
    for params in (named, unnamed, bad_revenue):
        status, body, _ = await p.get(params)
        assert status == 200, body
    assert await round_of(segment, ["KIDRIFT1"], 1) == [("KIDRIFT1", "Level Completed", "3")]

    async def drift() -> dict[tuple[str, str], dict[str, Any]]:
        rc, out, err = await run_cli(p.env, "mapping", "drift", "kochava-default", "--json")
        assert rc == 0, err
        return {(e["kind"], e["item"]): e for e in orjson.loads(out)["drift"]}

    wanted = {
        ("unknown_key", "promo_code"),
        ("unknown_key", "contact"),
        ("unknown_event", "Boss Defeated"),
        ("parse_failure", "invalid_revenue:event_value"),
    }
    found = await wait_for(lambda: _has(drift(), wanted), 30, "drift of the three postbacks")
    assert all(found[k]["count"] == 1 and found[k]["version"] == "3" for k in wanted), found
    assert found[("unknown_key", "promo_code")]["example"] == "WINTER24"
    contact = found[("unknown_key", "contact")]["example"]
    assert contact.startswith("sha256:") and "example.com" not in contact.lower(), contact
    assert ("unknown_key", "level") not in found  # declared in known_keys
    text = await p.worker_metrics()
    assert (
        metric(text, "kseg_mapping_drift_total", profile="kochava-default", version="3", kind="unknown_key")
        == 2
    )
    assert (
        metric(text, "kseg_mapping_drift_total", profile="kochava-default", version="3", kind="unknown_event")
        == 1
    )

    # The unnamed event was quarantined, not sent; once v4 names it, replay delivers it under v4.
    rc, out, _ = await run_cli(p.env, "dlq", "list", "--reason", "unknown_event")
    assert rc == 0 and "1 dead letter(s)" in out, out
    assert not [m for m in segment.messages if m.get("event") in ("Boss Defeated", "Boss Beaten")]
    learned = tmp_path / "v4.yaml"
    learned.write_text(
        candidate("4", "Level Completed").replace(
            "event_names:\n", "event_names:\n  Boss Defeated: Boss Beaten\n", 1
        )
        + "unknown_events: quarantine\nknown_keys: [level]\n"
    )
    rc, out, err = await run_cli(p.env, "mapping", "publish", str(learned))
    assert (rc, out.strip()) == (0, "published kochava-default v4"), (out, err)
    await wait_for(lambda: log_has(p, "worker-1", r"kochava-default now v4"), 10, "switch to v4")
    rc, out, _ = await run_cli(p.env, "dlq", "replay", "--reason", "unknown_event")
    assert rc == 0 and "replayed 1 of 1" in out, out
    assert await round_of(segment, ["KIDRIFT2"], 9) == [("KIDRIFT2", "Boss Beaten", "4")]


async def _has(entries: Any, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]] | None:
    found: dict[tuple[str, str], dict[str, Any]] = await entries
    return found if wanted <= set(found) else None


async def test_a_shadow_candidate_reports_its_one_difference_and_sends_nothing_until_promoted(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline], tmp_path: Path
) -> None:
    p: Pipeline = make_pipeline(segment.url, KSEG_DRIFT_REPORT_SECONDS="1")
    dump_logs.append(p)
    await p.start()
    shadow = tmp_path / "v3.yaml"
    shadow.write_text(candidate("3", "Level Finished"))
    rc, out, err = await run_cli(p.env, "mapping", "shadow", str(shadow), "--note", "try the rename")
    assert (rc, out.strip()) == (0, "shadow kochava-default v3 against active v2"), (out, err)
    await wait_for(
        lambda: log_has(p, "worker-1", r"shadow run of kochava-default v3 started"), 10, "shadow start"
    )

    devices = [f"KISHADOW{i}" for i in range(4)]
    await send_levels(p, devices, 1)
    status, body, _ = await p.get({"event_name": "Tutorial Complete", "kochava_device_id": "KISHADOW0"})
    assert status == 200, body
    assert await round_of(segment, devices, 1) == [(d, "Level Completed", "2") for d in devices]

    async def report() -> dict[str, Any] | None:
        rc, out, err = await run_cli(p.env, "mapping", "shadow-report", "kochava-default", "--json")
        assert rc == 0, err
        body = orjson.loads(out)
        runs = body["runs"]
        return body if runs and runs[0]["compared"] == 5 else None

    body = await wait_for(report, 30, "5 compared postbacks in the shadow report")
    [run] = body["runs"]
    assert (run["active_version"], run["shadow_version"]) == ("2", "3")
    assert (run["compared"], run["identical"], run["differing"]) == (5, 1, 4)
    paths = {d["path"]: d for d in run["paths"]}
    assert set(paths) == {"segment.track.event", "warehouse.segment_event"}, paths
    assert paths["segment.track.event"]["count"] == 4
    assert paths["segment.track.event"]["examples"][0] | {"event_id": ""} == {
        "event_id": "",
        "active": "Level Completed",
        "shadow": "Level Finished",
    }
    # Segment received only the active version's calls, never the shadow's.
    assert not [m for m in segment.messages if m["context"]["kseg"]["profile_version"] != "2"]
    assert not [m for m in segment.messages if m.get("event") == "Level Finished"]
    rc, out, _ = await run_cli(p.env, "mapping", "shadow-report", "kochava-default")
    assert "shadow v3 against active v2: 5 compared, 1 identical, 4 differing" in out, out

    rc, out, err = await run_cli(p.env, "mapping", "promote", "kochava-default")
    assert (rc, out.strip()) == (0, "promoted kochava-default v3 (was v2)"), (out, err)
    await wait_for(lambda: log_has(p, "worker-1", r"kochava-default now v3"), 10, "promotion")
    assert log_has(p, "worker-1", r"shadow run of kochava-default stopped")
    await send_levels(p, devices, 2)
    assert await round_of(segment, devices, 2) == [(d, "Level Finished", "3") for d in devices]

    # diff: the YAML difference and, on the raw topic's recent postbacks, the one output difference.
    rc, out, err = await run_cli(p.env, "mapping", "diff", "kochava-default", "2", "3", "--json")
    assert rc == 0, (out, err)
    diff = orjson.loads(out)
    assert '-version: "2"\n+version: "3"\n' in diff["yaml_diff"], diff["yaml_diff"]
    assert "-  Level Complete: Level Completed\n+  Level Complete: Level Finished\n" in diff["yaml_diff"]
    assert (diff["compared"], diff["identical"], diff["differing"]) == (9, 1, 8), diff
    assert {d["path"] for d in diff["paths"]} == {"segment.track.event", "warehouse.segment_event"}
    rc, out, _ = await run_cli(p.env, "mapping", "diff", "kochava-default", "2", "9")
    assert rc == 1
