"""Open-loop HTTP load runner for the postback receiver.

Why open loop: Kochava does not slow down when we do. A closed-loop client (send the next request
when a response came back) hides a slow receiver by lowering its own rate — coordinated omission.
Here requests are scheduled by the clock; when every concurrency slot is busy a due request is
counted as `client_saturated` instead of being queued without bound, so the report shows that the
client (or the server) could not keep up. Every run is bounded by `duration` and `max_requests`.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO
from urllib.parse import quote

import aiohttp
from yarl import URL

from app.loadgen.postbacks import Postback
from app.loadgen.report import LoadReport
from app.loadgen.spike import Schedule, SpikeSpec, SpikeSpecError

OnAccepted = Callable[[Postback], object]


def build_url_prefix(url: str, token: str | None) -> str:
    """`url?token=...&` (or `url?` / `url&`), to which each postback's query string is appended."""
    base = url + ("&" if "?" in url else "?")
    if token:
        base += f"token={quote(token, safe='')}&"
    return base


async def run_load(
    url: str,
    token: str | None,
    *,
    rate: float,
    duration: float,
    concurrency: int,
    spike: SpikeSpec | None = None,
    max_requests: int | None = None,
    generator: Iterator[Postback],
    on_accepted: OnAccepted | None = None,
    request_timeout: float = 10.0,
    connect_timeout: float = 2.0,
    progress: bool = False,
    progress_stream: TextIO | None = None,
) -> LoadReport:
    """Send `generator`'s postbacks as GETs to `url` at `rate` req/s for `duration` seconds.

    `on_accepted` is called with each postback answered 200 (tests use it to know what the receiver
    acknowledged). Stops at `duration` or after `max_requests` sent, then waits for in-flight
    requests (at most `request_timeout` + 1 s) and counts the ones still pending as errors.
    """
    if not (duration > 0 and math.isfinite(duration)):
        raise ValueError(f"duration must be a finite number of seconds > 0, got {duration}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if max_requests is not None and max_requests < 1:
        raise ValueError(f"max_requests must be >= 1, got {max_requests}")
    if spike is not None and spike.start >= duration:
        raise SpikeSpecError(f"spike {spike} starts at {spike.start:g} s, after the {duration:g} s run ends")
    schedule = Schedule(rate, spike)  # validates rate
    report = LoadReport(
        url=url,
        target_rate=rate,
        duration=duration,
        concurrency=concurrency,
        spike=None if spike is None else str(spike),
    )
    prefix = build_url_prefix(url, token)
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    callback_errors: list[BaseException] = []

    async def one(session: aiohttp.ClientSession, postback: Postback) -> None:
        started = time.perf_counter()
        try:
            # encoded=True: send the query bytes exactly as generated, so retries are identical.
            async with session.get(URL(prefix + postback.query, encoded=True)) as resp:
                await resp.read()  # drain the body so the keep-alive connection is reused
                status = resp.status
        except TimeoutError:
            report.record_error("timeout")
        except aiohttp.ClientConnectionError:
            report.record_error("connection")
        except aiohttp.ClientError as exc:
            report.record_error(type(exc).__name__)
        else:
            report.record_response(status, time.perf_counter() - started)
            if status == 200 and on_accepted is not None:
                try:
                    on_accepted(postback)
                except Exception as exc:  # surfaced after the run, never lost in a task
                    callback_errors.append(exc)
        finally:
            slots.release()

    loop = asyncio.get_running_loop()
    stream = progress_stream if progress_stream is not None else sys.stderr
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=request_timeout, connect=connect_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = loop.time()
        progress_task = asyncio.create_task(_progress(report, start, tasks, stream)) if progress else None
        slot = 0  # schedule slots passed so far (sent + saturated)
        exhausted = False
        try:
            while True:
                now = loop.time() - start
                # Issue every slot due by now; slots due before the end are sent even if the wake-up
                # came late, so a run of rate r and duration d tries exactly ceil(r * d) slots.
                while (due := schedule.time_of(slot)) <= now and due < duration:
                    if max_requests is not None and report.sent >= max_requests:
                        break
                    slot += 1
                    if slots.locked():
                        report.client_saturated += 1
                        continue
                    try:
                        postback = next(generator)
                    except StopIteration:
                        exhausted = True
                        break
                    await slots.acquire()  # free slot: returns without suspending
                    report.sent += 1
                    task = asyncio.create_task(one(session, postback))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                done = max_requests is not None and report.sent >= max_requests
                if exhausted or done or now >= duration:
                    break
                wake = min(schedule.time_of(slot), duration)
                await asyncio.sleep(max(0.0, wake - (loop.time() - start)))
            report.send_seconds = min(loop.time() - start, duration)
            if tasks:
                _, pending = await asyncio.wait(set(tasks), timeout=request_timeout + 1.0)
                for task in pending:
                    task.cancel()
                    report.record_error("unfinished")
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
        finally:
            if progress_task is not None:
                progress_task.cancel()
                await asyncio.gather(progress_task, return_exceptions=True)
            for task in list(tasks):  # only on an exception above (e.g. cancellation)
                task.cancel()
        report.elapsed_seconds = loop.time() - start
    if progress:
        print(report.progress_line(report.elapsed_seconds, 0, since=0), file=stream, flush=True)
    if callback_errors:
        raise RuntimeError(f"on_accepted raised {len(callback_errors)} time(s)") from callback_errors[0]
    return report


async def _progress(report: LoadReport, start: float, tasks: set[asyncio.Task[None]], stream: TextIO) -> None:
    """Print one status line per second until cancelled."""
    loop = asyncio.get_running_loop()
    since = 0
    while True:
        await asyncio.sleep(1.0)
        mark = len(report.latencies_s)
        print(report.progress_line(loop.time() - start, len(tasks), since=since), file=stream, flush=True)
        since = mark
