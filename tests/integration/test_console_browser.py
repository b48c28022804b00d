"""The console in a real browser (Debian's Chromium driven by Selenium through its chromedriver) over a
real deployment: broker, receiver, worker, warehouse loader, PostgreSQL, the Segment emulator and a
`kseg console` process.

An operator logs in, follows a device from its install and purchase postbacks to the `Order Completed`
call Segment accepted and the warehouse row; the overview's Segment counts equal what the emulator
received; a dead letter is replayed from the page (and a viewer cannot); the mapping studio shows the
difference between the loaded profile and an edited version, and between the registry's active version
and the local file once a version is published; reconciliation flags the campaign whose
installs Kochava reported but kseg never received. The browser logs no console error and requests nothing
from any host but the console.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from app.warehouse.db import connect_async
from app.warehouse.embedded import EmbeddedWarehouse
from app.warehouse.store import ensure_schema, write_batch
from tests.emulators.segment_api import SegmentEmulator
from tests.harness import ROOT, Pipeline, read_topic, run_cli, wait_for
from tests.integration.test_warehouse_store import spend
from tests.parallel import free_port
from tests.warehouse_support import LoaderProcess, sql, warehouse_pg

pytestmark = pytest.mark.integration
__all__ = ["warehouse_pg"]

VIEWER, OPERATOR = "viewer-browser-token", "operator-browser-token"
PRIVACY_TOKEN = "privacy-browser-token"
DEVICE = "KIBROWSER1"
#: Written by the test when set (the README's screenshot): `KSEG_CONSOLE_SCREENSHOT=docs/console.png`.
SCREENSHOT = os.environ.get("KSEG_CONSOLE_SCREENSHOT")


def chrome(tmp_path: Path) -> Any:
    """Headless system Chromium through the system chromedriver, logging console and network events."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not browser or not driver_path:
        pytest.fail("Chromium and chromedriver are needed: `apt-get install -y chromium chromium-driver`")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chrome'}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


class ConsoleProcess:
    """A real `kseg console` for a pipeline, against the test's PostgreSQL."""

    def __init__(self, pipeline: Pipeline, url: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        pipeline._spawn(
            "console",
            "console",
            {
                "KSEG_WAREHOUSE_URL": url,
                "KSEG_CONSOLE_PORT": str(self.port),
                "KSEG_CONSOLE_TOKENS": f"viewer={VIEWER},operator={OPERATOR}",
            },
        )
        self.pipeline = pipeline

    async def ready(self) -> None:
        async def up() -> bool:
            proc = self.pipeline.procs["console"]
            if proc.poll() is not None:
                raise AssertionError(f"console exited:\n{self.pipeline.tail('console')}")
            try:
                async with aiohttp.ClientSession() as s, s.get(f"{self.base}/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(up, 60, "console /readyz")

    async def api(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.request(
                method, f"{self.base}{path}", json=body, headers={"Authorization": f"Bearer {token}"}
            ) as r,
        ):
            return r.status, orjson.loads(await r.read())


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = chrome(tmp_path)
    try:
        yield driver
    finally:
        driver.quit()


def login(driver: Any, base: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{base}/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login-button").click()
    wait_until(driver, lambda d: d.find_elements(By.ID, "role"), "logged in")


def wait_until(driver: Any, predicate: Any, what: str, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(predicate, message=what)


def postback(device: str, event: str, campaign: str, at: int, **extra: str) -> dict[str, str]:
    return {
        "event_name": event,
        "kochava_device_id": device,
        "network_name": "NetA",
        "campaign_name": campaign,
        "country": "US",
        "timestamp": str(at),
        **extra,
    }


async def deploy(
    make_pipeline: Any, segment: SegmentEmulator, warehouse_pg: EmbeddedWarehouse, dump_logs: list[Pipeline]
) -> tuple[Pipeline, ConsoleProcess]:
    """The deployment with its traffic: installs on Alpha and Beta, a purchase whose first Segment request
    meets a 503, a purchase with a bad value (a dead letter), and Kochava's report of 4 installs on Alpha
    (kseg got 2) and 1 on Beta."""
    p: Pipeline = make_pipeline(
        segment.url, KSEG_WAREHOUSE_URL=warehouse_pg.url, KSEG_PRIVACY_TOKENS=PRIVACY_TOKEN
    )
    dump_logs.append(p)
    await p.start()
    loader = LoaderProcess(p, warehouse_pg.url).start()
    await loader.wait_ready()
    console = ConsoleProcess(p, warehouse_pg.url)
    await console.ready()

    now = int(time.time())
    installs = [
        postback(DEVICE, "_install", "Alpha", now - 60),
        postback("KIBROWSER2", "_install", "Alpha", now - 50),
        postback("KIBROWSER3", "_install", "Beta", now - 40),
    ]
    for params in installs:
        status, body, _ = await p.get(params)
        assert status == 200, body
    await wait_for(
        lambda: sum(m.get("event") == "Install Attributed" for m in segment.messages) == 3, 60, "3 installs"
    )
    # A Segment outage: the purchase's first request gets a 503, its retry is accepted.
    segment.fail_next(1, status=503)
    purchases = [
        postback(DEVICE, "Purchase", "Alpha", now - 30, event_value="19.99", currency="USD"),
        postback("KIBROWSER2", "Purchase", "Alpha", now - 20, event_value="abc", currency="USD"),
    ]
    for params in purchases:
        status, body, _ = await p.get(params)
        assert status == 200, body
    await wait_for(
        lambda: sql(warehouse_pg.url, "SELECT count(*) FROM kseg_events")[0][0] == 4, 60, "4 warehouse rows"
    )
    # Kochava's report (the digest's spend rows): 4 installs for Alpha (kseg has 2), 1 for Beta (kseg has 1).
    today = datetime.now(UTC).date().isoformat()
    conn = await connect_async(warehouse_pg.url)
    known = await ensure_schema(conn, "USD")
    alpha = spend(today, "NetA", "Alpha", 40.0) | {"installs": 4}
    beta = spend(today, "NetA", "Beta", 10.0) | {"installs": 1}
    await write_batch(conn, known, [], [alpha, beta])
    await conn.close()

    await wait_for(
        lambda: {m.get("event") for m in segment.messages} >= {"Order Completed", "Install Attributed"},
        60,
        "Segment calls",
    )
    return p, console


def check_browser_logs(driver: Any, base: str) -> None:
    """No console error or warning (CSP violations are errors), and no request to any other host."""
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == [], errors
    urls = []
    for entry in driver.get_log("performance"):
        message = orjson.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    # chrome:// and data: URLs never leave the browser (its own new-tab page loads them); every request
    # that does goes to the console.
    outside = sorted(
        {u for u in urls if not u.startswith(("chrome://", "data:"))}
        - {u for u in urls if u.startswith(base + "/")}
    )
    assert any(u.startswith(base + "/") for u in urls) and outside == [], outside


@pytest.mark.long
async def test_console_follows_a_device_to_segment_and_the_warehouse(
    make_pipeline: Any,
    segment: SegmentEmulator,
    warehouse_pg: EmbeddedWarehouse,
    browser: Any,
    dump_logs: list[Pipeline],
) -> None:
    from selenium.webdriver.common.by import By

    _, console = await deploy(make_pipeline, segment, warehouse_pg, dump_logs)
    # Segment accepted every call; the receipts of all of them reach the warehouse.
    received = Counter(m["type"] for m in segment.messages)

    async def delivered_in_overview() -> dict[str, int] | None:
        status, data = await console.api("GET", "/api/overview", OPERATOR)
        assert status == 200, data
        rows = data["windows"]["hour"]["segment"] or []
        got = {r["call_type"]: r["n"] for r in rows if r["outcome"] == "delivered"}
        return got if got == dict(received) else None

    await wait_for(delivered_in_overview, 60, f"overview = emulator {dict(received)}")

    base = console.base
    driver = browser
    login(driver, base, OPERATOR)

    # Trace: the device's install and purchase, the Order Completed call delivered with Segment's status,
    # and the warehouse row.
    driver.get(f"{base}/trace")
    driver.find_element(By.ID, "q").send_keys(DEVICE)
    driver.find_element(By.ID, "search").click()
    events = wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "details.event"), "events")
    assert len(events) == 2, [e.text for e in events]
    purchase = next(e for e in events if "Purchase" in e.find_element(By.TAG_NAME, "summary").text)
    calls = purchase.find_elements(By.CSS_SELECTOR, ".calls tbody tr")
    order = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in calls]
    # The outage shows: the call was retried after Segment's 503, then delivered with its 200.
    assert any(r[1] == "Order Completed" and r[2] == "delivered" and r[3] == "200" for r in order), order
    assert any(r[1] == "Order Completed" and (r[2] == "retried" or int(r[4] or 0) >= 2) for r in order), order
    row = purchase.find_element(By.CSS_SELECTOR, "pre.row").text
    assert '"segment_event": "Order Completed"' in row and DEVICE in row
    if SCREENSHOT:
        driver.save_screenshot(str(ROOT / SCREENSHOT))

    # Overview: the page shows the same delivered counts.
    driver.get(f"{base}/")
    table = driver.find_element(By.ID, "segment-hour").text
    for call_type, n in received.items():
        assert f"{call_type} delivered {n}" in table, table

    check_browser_logs(driver, base)


@pytest.mark.long
async def test_console_pages_for_operators_and_viewers(
    make_pipeline: Any,
    segment: SegmentEmulator,
    warehouse_pg: EmbeddedWarehouse,
    browser: Any,
    dump_logs: list[Pipeline],
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    p, console = await deploy(make_pipeline, segment, warehouse_pg, dump_logs)
    base = console.base
    driver = browser
    driver.get(f"{base}/dead-letters")
    assert driver.find_elements(By.ID, "login"), "an anonymous visitor gets the login page"
    assert "status of 401" in str(driver.get_log("browser"))  # that page came with its 401 (drained here)
    login(driver, base, OPERATOR)

    # Dead letters: the operator replays the bad purchase; it goes back into postbacks.raw.
    driver.get(f"{base}/dead-letters?reason=invalid_revenue")
    picks = driver.find_elements(By.CSS_SELECTOR, "#letters input.pick")
    assert len(picks) == 1
    picks[0].click()
    driver.find_element(By.ID, "replay").click()
    outcome = wait_until(driver, lambda d: d.find_elements(By.ID, "replay-outcome"), "replay outcome")
    assert outcome[0].text.startswith("replayed 1 of 1")

    async def replayed() -> bool:
        records = await read_topic(p.bootstrap, p.topic("postbacks.raw"))
        return any(
            v.get("source") == "replay" and v["params"].get("event_value") == "abc" for _, v in records
        )

    await wait_for(replayed, 30, "the replayed postback in postbacks.raw")

    # The mapping studio: the loaded profile against an edited version of it.
    driver.get(f"{base}/studio")
    driver.find_element(By.ID, "input").send_keys(
        "event_name=Purchase&kochava_device_id=KISTUDIO&event_value=5&currency=USD"
    )
    area = driver.find_element(By.ID, "candidate")
    edited = area.get_attribute("value").replace('version: "2"', 'version: "3"')
    edited = edited.replace("Purchase: Order Completed", "Purchase: Purchase Made")
    area.clear()
    area.send_keys(edited)
    driver.find_element(By.ID, "try").click()
    diff = wait_until(driver, lambda d: d.find_elements(By.ID, "difference"), "the difference").pop().text
    assert "Order Completed" in diff and "Purchase Made" in diff, diff
    assert driver.find_elements(By.ID, "problems-none")

    # Reconciliation: Alpha (Kochava 4, kseg 2) is flagged, Beta (1 and 1) is not.
    driver.get(f"{base}/reconciliation")
    flagged = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#reconciliation tr.flag")]
    assert len(flagged) == 1 and "Alpha" in flagged[0], flagged
    beta_row = [
        r.text for r in driver.find_elements(By.CSS_SELECTOR, "#reconciliation tbody tr") if "Beta" in r.text
    ]
    assert beta_row and "0.0" in beta_row[0]

    # The ROAS report is linked in and draws its chart under the console's CSP.
    driver.get(f"{base}/roas")
    chart = driver.find_element(By.ID, "chart")
    assert chart.get_attribute("data-rendered") and not chart.get_attribute("data-error")

    # A viewer sees dead letters but cannot replay them, from the page or the API.
    login(driver, base, VIEWER)
    driver.get(f"{base}/dead-letters")
    assert not driver.find_elements(By.ID, "replay") and "operator role" in driver.page_source
    status, body = await console.api("POST", "/api/dead-letters/replay", VIEWER, {"ids": ["0-0"]})
    assert status == 403 and body["error"] == "forbidden"

    # A device deletion's record: the warehouse deleted its rows; Kochava's API is not configured here.
    status, answer, _ = await p.post(
        "/v1/privacy/requests",
        {"type": "delete", "devices": {"kochava_device_id": "KIBROWSER3"}, "reference": "T-42"},
        token=PRIVACY_TOKEN,
    )
    assert status == 202, answer

    async def recorded() -> bool:
        code, data = await console.api("GET", "/api/privacy", VIEWER)
        assert code == 200, data
        return any(r["request_id"] == answer["request_id"] and r["completed_at"] for r in data["requests"])

    await wait_for(recorded, 60, "the privacy request's record in the console")
    driver.get(f"{base}/privacy")
    row = driver.find_element(By.CSS_SELECTOR, "#privacy tbody tr").text
    assert answer["request_id"] in row and "T-42" in row and "warehouse: done" in row, row
    assert "kochava: not_configured" in row and "segment: not_applicable" in row, row  # no user id

    # The studio offers what the mapping registry holds: once v3 is published it is the active version,
    # listed first, and the local file v2 can be compared against it.
    text = (ROOT / "app" / "mapping" / "profiles" / "kochava-default.yaml").read_text()
    v3 = tmp_path / "kochava-default-v3.yaml"
    v3.write_text(
        text.replace('version: "2"', 'version: "3"').replace(
            "Purchase: Order Completed", "Purchase: Purchase Made"
        )
    )
    rc, out, err = await run_cli(p.env, "mapping", "publish", str(v3), "--note", "rename purchases")
    assert rc == 0, (out, err)
    driver.get(f"{base}/studio")
    options = [o.text for o in driver.find_elements(By.CSS_SELECTOR, "#left option")]
    assert options[:2] == ["kochava-default@3 · active", "kochava-default@2 · local file (seeded)"], options
    driver.find_element(By.ID, "input").send_keys("event_name=Purchase&kochava_device_id=KIREG&event_value=5")
    driver.find_element(By.CSS_SELECTOR, '#right option[value="kochava-default@2"]').click()
    driver.find_element(By.ID, "try").click()
    diff = wait_until(driver, lambda d: d.find_elements(By.ID, "difference"), "the difference").pop().text
    assert "Purchase Made" in diff and "Order Completed" in diff, diff

    check_browser_logs(driver, base)
