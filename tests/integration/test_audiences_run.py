"""`kseg run` with the Kochava emulator: the README's audience workflow end to end, as an operator runs it."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.emulators.kochava_api import KochavaEmulator
from tests.harness import ROOT, wait_for
from tests.parallel import kseg_run_ports

SECRET = "run-secret"
GUID = "koapp-run"
IDFV = "6D92078A-8246-4BA4-AE5B-76104861E7DC"


async def test_kseg_run_engage_audience_and_suppression_reach_kochava(tmp_path: Path) -> None:
    ports = kseg_run_ports()
    port, worker_port = ports["KSEG_HTTP_PORT"], ports["KSEG_WORKER_WEB_PORT"]
    async with KochavaEmulator(GUID) as kochava:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KAFKA_", "KSEG_", "SEGMENT_", "KOCHAVA_"))
        }
        env.update(ports)
        env.update(
            KSEG_DATA_DIR=str(tmp_path),
            KSEG_APP_ID="audrun",
            SEGMENT_WEBHOOK_SECRET=SECRET,
            KOCHAVA_APP_GUID=GUID,
            KOCHAVA_TRACKING_URL=kochava.url,
        )
        log = (tmp_path / "run.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

                async def ready() -> bool:
                    try:
                        async with http.get(f"http://127.0.0.1:{worker_port}/readyz") as r:
                            return r.status == 200
                    except aiohttp.ClientError:
                        return False

                await wait_for(ready, 120, "kseg run's worker to be ready")
                install = {
                    "token": "dev",
                    "event_name": "_install",
                    "kochava_device_id": "KIRUN1",
                    "idfv": IDFV,
                }
                async with http.get(f"{base}/v1/kochava/postbacks", params=install) as r:
                    assert r.status == 200
                link = {"user_id": "runner", "kochava_device_id": "KIRUN1", "idfv": IDFV}
                async with http.post(
                    f"{base}/v1/identity/links", json=link, headers={"Authorization": "Bearer dev-links"}
                ) as r:
                    assert r.status == 200, await r.text()
                await wait_for(lambda: kochava.identity_links, 60, "the IdentityLink")

                call: dict[str, Any] = {
                    "type": "identify",
                    "userId": "runner",
                    "timestamp": "2026-04-01T08:00:00Z",
                    "traits": {"high_ltv_paid_social": True},
                    "context": {
                        "personas": {
                            "computation_class": "audience",
                            "computation_id": "aud_run",
                            "computation_key": "high_ltv_paid_social",
                            "space_id": "spa_run",
                        }
                    },
                }
                raw = orjson.dumps(call)
                signature = hmac.new(SECRET.encode(), raw, hashlib.sha1).hexdigest()
                async with http.post(
                    f"{base}/v1/segment/webhook", data=raw, headers={"X-Signature": signature}
                ) as r:
                    assert r.status == 200 and (await r.json())["audience_changes"] == 1
                [event] = await wait_for(lambda: list(kochava.events), 60, "the Audience Entered event")
                assert event["kochava_device_id"] == "KIRUN1" and event["device_ids"] == {"idfv": IDFV}
                assert event["data"]["event_name"] == "Audience Entered"
                assert kochava.identity_links[0]["data"] == {"app_userid": "runner"}

                # Workflow 2: a conversion postback → the suppression audience, nothing to set up in Segment.
                subscribe = {"token": "dev", "event_name": "Subscribe", "kochava_device_id": "KIRUN1"}
                async with http.get(f"{base}/v1/kochava/postbacks", params=subscribe) as r:
                    assert r.status == 200
                suppressed = await wait_for(
                    lambda: [
                        e for e in kochava.events if e["data"]["event_data"]["audience_source"] == "kseg"
                    ],
                    60,
                    "the suppression audience entry",
                )
                assert suppressed[0]["kochava_device_id"] == "KIRUN1"
                assert suppressed[0]["data"]["event_data"]["audience_key"] == "kseg_ad_suppression"
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
