"""A reinstall on a new Kochava id inherits the original install's first touch through the device index."""

from __future__ import annotations

from typing import Any

from tests.emulators.segment_api import SegmentEmulator
from tests.harness import Pipeline, metric, wait_for
from tests.integration.test_identity import install, of_type, purchase, start

IDFV = "A1B2C3D4-0000-4000-8000-00000000BEEF"


async def test_reinstall_purchase_carries_the_original_install_campaign(
    make_pipeline: Any, segment: SegmentEmulator, dump_logs: list[Pipeline]
) -> None:
    p = await start(make_pipeline(segment.url))
    dump_logs.append(p)
    assert (await p.get(install("KI-A", campaign="Spring Launch", idfv=IDFV, install_id="inst-A")))[0] == 200
    await wait_for(lambda: of_type(segment, "track", "Install Attributed"), 30, "the original install")

    reinstall = install(
        "KI-B",
        campaign="Winback",
        idfv=IDFV,
        network_name="Retargeter",
        install_id="inst-B",
        reprocess_for="inst-A",
        timestamp="1735776000",
    )
    # The reinstall and its first purchase back to back: the device parks the purchase until the
    # device index answered, so even the very first purchase carries the original install campaign.
    assert (await p.get(reinstall))[0] == 200
    assert (await p.get(purchase("KI-B", 100)))[0] == 200
    tracks = await wait_for(
        lambda: [
            m
            for m in of_type(segment, "track", "Install Attributed")
            if m["context"]["kseg"]["kochava_device_id"] == "KI-B"
        ],
        30,
        "the reinstall",
    )
    assert tracks[0]["properties"].get("reinstall") is True
    [order] = await wait_for(
        lambda: [
            m for m in of_type(segment, "track", "Order Completed") if m["properties"]["order_id"] == "o-100"
        ],
        30,
        "the reinstall's first purchase",
    )
    assert order["properties"]["install_campaign"] == "Spring Launch", order
    assert order["properties"]["install_network"] == "ExampleNetwork"
    assert metric(await p.worker_metrics(), "kseg_worker_parked_total") == 1
    # The original device keeps its own first touch.
    assert (await p.get(purchase("KI-A", 1)))[0] == 200
    [a_order] = await wait_for(
        lambda: [
            m
            for m in of_type(segment, "track", "Order Completed")
            if m["properties"].get("order_id") == "o-1"
        ],
        30,
        "KI-A's purchase",
    )
    assert a_order["properties"]["install_campaign"] == "Spring Launch"
