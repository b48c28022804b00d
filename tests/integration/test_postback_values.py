"""Every postback key and value arrives exactly as Kochava meant it, or the postback is a precise 4xx.

Hypothesis builds install postbacks whose campaign, network, creative, site and extra keys hold arbitrary
text, percent-encodes each byte or not (upper- or lower-case hex, `+` or `%20` for a space), and sends
them as a GET query string or a form body through one real receiver, worker and warehouse loader. Then:
each value decoded once is what Segment (the strict emulator) and the warehouse row hold; a value whose
bytes are not UTF-8 is `400 invalid_encoding` naming its key; nothing is ever a 5xx.

Bounded (KSEG_VALUES_EXAMPLES, default 60; KSEG_VALUES_SECONDS, default 60); `make fuzz` runs longer.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from app.warehouse.embedded import EmbeddedWarehouse
from tests.emulators.segment_api import SegmentEmulator
from tests.harness import TOKEN, Pipeline, wait_for
from tests.integration.hostile import MAPPED, meant_postback
from tests.warehouse_support import LoaderProcess, sql, warehouse_pg

__all__ = ["warehouse_pg"]

EXAMPLES = int(os.environ.get("KSEG_VALUES_EXAMPLES", os.environ.get("KSEG_FUZZ_EXAMPLES", "60")))
MAX_SECONDS = float(os.environ.get("KSEG_VALUES_SECONDS", os.environ.get("KSEG_FUZZ_SECONDS", "60")))
PATH = "/v1/kochava/postbacks"


@dataclass
class Sent:
    device: str
    fields: dict[str, str]
    status: int
    body: dict[str, Any]
    bad_key: str | None = None
    notes: list[str] = field(default_factory=list)


def send(port: int, query: bytes, form: bool) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}", "Connection": "close"}
        if form:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request("POST", PATH, body=query, headers=headers)
        else:
            conn.request("GET", f"{PATH}?{query.decode('ascii')}", headers=headers)
        response = conn.getresponse()
        return response.status, orjson.loads(response.read() or b"{}")
    finally:
        conn.close()


def run_examples(port: int, log: list[Sent]) -> None:
    deadline = time.monotonic() + MAX_SECONDS

    def one(data: st.DataObject) -> None:
        if time.monotonic() > deadline:
            return
        fields, query, bad, form = data.draw(meant_postback(len(log)))
        status, body = send(port, query, form)
        sent = Sent(
            fields["kochava_device_id"], fields, status, body, bad[0] if bad else None, [f"form={form}"]
        )
        log.append(sent)
        where = f"{query[:300]!r} (form={form})"
        assert status < 500, f"{status} {body} for {where}"
        if bad is None:
            assert status == 200, f"{status} {body} for {where}"
        else:
            assert (status, body.get("error")) == (400, "invalid_encoding"), f"{status} {body} for {where}"
            assert bad[1] or body.get("field") == bad[0], f"{status} {body} for {where}"

    # No shrinking: each example is a real request, and a failure is reported at once, as found (a
    # replay after the time budget would draw nothing and hide it behind a flaky-strategy error).
    settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )(given(st.data())(one))()


async def test_every_value_arrives_exactly_as_sent_or_is_a_precise_400(
    make_pipeline: Any, warehouse_pg: EmbeddedWarehouse
) -> None:
    async with SegmentEmulator(write_key="test-write-key") as segment:
        p: Pipeline = make_pipeline(segment.url)
        await p.start()
        loader = LoaderProcess(p, warehouse_pg.url).start()
        await loader.wait_ready()

        log: list[Sent] = []
        await asyncio.to_thread(run_examples, p.http_port, log)
        accepted = [s for s in log if s.status == 200]
        assert len(log) >= min(EXAMPLES, 20) and accepted, (len(log), len(accepted))

        def identifies() -> dict[str, dict[str, Any]]:
            return {
                m["context"]["kseg"]["kochava_device_id"]: m
                for m in segment.messages
                if m["type"] == "identify" and "kseg" in m.get("context", {})
            }

        def tracks() -> dict[str, dict[str, Any]]:
            return {
                m["context"]["kseg"]["kochava_device_id"]: m
                for m in segment.messages
                if m["type"] == "track"
                and m["event"] == "Install Attributed"
                and "kseg" in m.get("context", {})
            }

        def rows() -> dict[str, tuple[Any, ...]]:
            columns = ", ".join(column for _, column in MAPPED.values())
            found = sql(warehouse_pg.url, f"SELECT kochava_device_id, {columns}, properties FROM kseg_events")
            return {r[0]: r[1:] for r in found}

        devices = {s.device for s in accepted}
        await wait_for(
            lambda: devices <= set(tracks()) and devices <= set(identifies()) and devices <= set(rows()),
            120,
            f"{len(devices)} accepted installs at Segment and in the warehouse",
            interval=1,
        )
        at_segment, traits_of, in_warehouse = tracks(), identifies(), rows()
        refused = {s.device for s in log if s.status != 200}
        assert not refused & (set(at_segment) | set(in_warehouse)), "a refused postback went through"
        for sent in accepted:
            traits = traits_of[sent.device]["traits"]
            properties = at_segment[sent.device]["properties"]
            row = in_warehouse[sent.device]
            stored_properties = orjson.loads(row[-1]) if row[-1] else {}
            for i, (key, (trait, _)) in enumerate(MAPPED.items()):
                assert traits[trait] == sent.fields[key], (key, sent)
                assert row[i] == sent.fields[key], (key, sent)
            for key, value in sent.fields.items():
                if key.startswith("x_"):
                    assert properties[key] == value, (key, sent)
                    assert stored_properties[key] == value, (key, sent)
        print(
            f"\npostback values: {len(log)} postbacks, {len(accepted)} accepted and found unaltered at "
            f"Segment and in the warehouse, {len(log) - len(accepted)} refused with invalid_encoding"
        )
