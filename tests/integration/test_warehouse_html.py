"""`kseg report roas --html` opened in real headless Chromium: no console errors, the chart is drawn."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from app.warehouse.db import connect_async
from app.warehouse.embedded import EmbeddedWarehouse
from app.warehouse.store import ensure_schema, write_batch
from tests.harness import ROOT
from tests.integration.test_warehouse_store import install, purchase, spend
from tests.warehouse_support import warehouse_pg

pytestmark = pytest.mark.integration
__all__ = ["warehouse_pg"]

REVENUE_BLUE = (0x2F, 0x6F, 0xDE)
SPEND_ORANGE = (0xF0, 0xA0, 0x30)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (.ci/run installs it)")
    return found


def browse(page: Path, out: Path) -> tuple[str, list[str], Path]:
    """(rendered DOM, console messages, screenshot) of `page` in headless Chromium."""
    base = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={out / 'profile'}",
        "--window-size=1200,900",
    ]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    shot = out / "page.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True
    )
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    return dom.stdout, console, shot


def png_pixels(path: Path) -> tuple[int, int, set[tuple[int, int, int]]]:
    """(width, height, colours) of an 8-bit RGB/RGBA PNG, decoded here (no imaging library needed)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 3
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour in (2, 6)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride, prev = zlib.decompress(idat), width * channels, bytearray(width * channels)
    colours: set[tuple[int, int, int]] = set()
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        for x in range(0, stride, channels):
            colours.add((line[x], line[x + 1], line[x + 2]))
        prev = line
    return width, height, colours


def test_console_errors_are_detected(tmp_path: Path) -> None:
    """The check below would see a broken page (a negative control for the detector)."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>null.x();</script></body></html>")
    _, console, _ = browse(bad, tmp_path)
    assert any("Uncaught TypeError" in line for line in console)


async def test_html_report_renders_in_chromium(warehouse_pg: EmbeddedWarehouse, tmp_path: Path) -> None:
    conn = await connect_async(warehouse_pg.url)
    known = await ensure_schema(conn, "USD")
    await write_batch(
        conn,
        known,
        [
            install("i1", "a1", "NetA", "Alpha"),
            install("i2", "a2", "NetB", "Beta </script><b>"),
            purchase("p1", "a1", "NetA", "Alpha", 60.0),
            purchase("p2", "a2", "NetB", "Beta </script><b>", 12.5),
        ],
        [spend("2025-01-01", "NetA", "Alpha", 40.0), spend("2025-01-01", "NetB", "Beta </script><b>", 25.0)],
    )
    await conn.close()
    page = tmp_path / "roas.html"
    env = {**os.environ, "KSEG_WAREHOUSE_URL": warehouse_pg.url, "KSEG_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "report", "roas", "--by", "campaign", "--html", str(page)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # nothing to fetch
    assert "https://" not in html

    dom, console, shot = browse(page, tmp_path)
    assert console == []
    chart = re.search(r'<svg id="chart"[^>]*>', dom)
    assert chart is not None and 'data-rendered="2"' in chart.group(0) and "data-error" not in chart.group(0)
    assert len(re.findall(r'class="bar revenue"', dom)) == 2 and len(re.findall(r'class="roas"', dom)) == 2
    table = dom.split('id="report-table"')[1].split("</table>")[0]
    assert "Beta &lt;/script&gt;&lt;b&gt;" in table and "<b>" not in table  # escaped, not markup
    width, height, colours = png_pixels(shot)
    assert (width, height) == (1200, 900)
    assert REVENUE_BLUE in colours and SPEND_ORANGE in colours
