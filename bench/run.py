"""kseg's benchmark suite: every figure next to a baseline measured in the same run, on this machine.

    python -m bench.run            # full suite (several minutes); writes bench/results/latest.{json,md}
    python -m bench.run --smoke    # seconds, tiny numbers: proves every figure is produced

Everything runs on 127.0.0.1: the embedded Tansu broker, real `kseg receiver` / `kseg worker`
processes, the Segment emulator (in this process, to time arrivals), and the load generator.
Targets are checked here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from app.broker.embedded import EmbeddedBroker, free_port
from app.loadgen.postbacks import Postback, PostbackGenerator
from app.loadgen.runner import run_load
from app.loadgen.spike import SpikeSpec
from app.receiver.parsing import partition_key
from app.records import postback_event_id, utc_now_iso
from bench.baselines.passthrough import run_passthrough
from bench.deployment import Deployment
from tests.emulators.segment_api import SegmentEmulator

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TOKEN = Deployment.token  # the postback token every bench deployment accepts


@dataclass
class Profile:
    """How big each scenario is."""

    ingest_rate: float
    ingest_seconds: float
    pipeline_events: int
    latency_rate: float
    latency_seconds: float
    spike_base: float
    spike_before: float
    spike_length: float
    spike_after: float
    drain_timeout: float


FULL = Profile(6000, 15, 20000, 1000, 20, 500, 20, 30, 20, 120)
SMOKE = Profile(200, 2, 300, 100, 2, 50, 1, 1, 1, 30)

TARGETS = {
    "receiver_ratio": (">=", 0.70),
    "worker_ratio": (">=", 0.30),
    "e2e_p99_ms": ("<=", 250.0),
    "spike_lost": ("<=", 0),
    "spike_drain_seconds": ("<=", 60.0),
    "events_per_segment_request": (">=", 200.0),
    "worker_peak_rss_mb": ("<=", 300.0),
}


#: What limits a figure when it misses its target, and what was tried (printed under the results table).
LIMITS = {
    "worker_ratio": (
        "The worker is CPU-bound in one Python event loop: profiles put most samples in faust's and "
        "aiokafka's produce path and the fetcher, then kseg's mapping and identity code. Each postback "
        "writes about five records (Segment messages, warehouse row, profile and dedupe changelogs, index "
        "updates) where the passthrough writes one, and on the embedded broker every record is its own "
        "produce batch (Tansu's end-offset bug). Tried: micro-batched processing with one ack wait per "
        "batch (about 1.4x), dropping faust's DEBUG-level spinner logging (about 10 %), and 16 KB batches "
        "(about 25 % more on a 4,000-postback drain, so batching is not the main limit). "
        "Scale is by workers, up to the partition "
        "count; this 2-core machine also runs the broker, the emulator and the load generator."
    ),
    "e2e_p99_ms": (
        "At 1,000 postbacks/s the offered rate is above one worker's throughput on this machine "
        "(worker_events_per_s), so a backlog builds and latency grows with it for the whole run. "
        "e2e_low_* shows the latency at a rate one worker sustains here. More workers (up to "
        "KSEG_TOPIC_PARTITIONS) or more cores are the remedy; the Segment sink's linger "
        "(SEGMENT_BATCH_LINGER) adds up to its value to every delivery."
    ),
    "spike_drain_seconds": (
        "The backlog of a 10x burst drains at one worker's throughput (worker_events_per_s), so the drain "
        "time is the backlog divided by it; nothing was lost (spike_lost). The burst itself was limited "
        "by the load generator's concurrency on 2 cores (spike_client_saturated)."
    ),
    "events_per_segment_request": (
        "Batches fill up to 500 messages or SEGMENT_BATCH_LINGER seconds; at low event rates the linger "
        "closes them first."
    ),
    "receiver_ratio": (
        "The receiver answers only after Kafka's ack (acks=all), and on the embedded broker every record is "
        "its own produce batch (Tansu's end-offset bug), so each partition takes one record per produce "
        "round trip: concurrent postbacks queue behind each other per partition. At an offered 3,000/s both "
        "sides kept up (0.87-0.98 in earlier runs); at 6,000/s this is the ceiling. Not tried yet: letting "
        "the receiver batch (only the raw topic's end offsets, i.e. its lag metric, would be off on Tansu), "
        "more partitions, more receiver processes. Against Apache Kafka the default 16 KB batches apply."
    ),
    "worker_peak_rss_mb": "RocksDB block cache and faust's buffers grow with the number of partitions.",
    "spike_lost": "Postbacks answered 200 but never delivered: see the delivery tests.",
}


class TimedEmulator(SegmentEmulator):
    """The Segment emulator, also noting when each kseg event first arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.arrivals: dict[str, float] = {}
        super().__init__(*args, **kwargs)

    def _accept(self, batch: list[dict[str, Any]]) -> None:
        now = time.perf_counter()
        for msg in batch:
            event_id = ((msg.get("context") or {}).get("kseg") or {}).get("event_id")
            if event_id and event_id not in self.arrivals:
                self.arrivals[event_id] = now
        super()._accept(batch)


def event_id_of(query: str) -> str:
    """The event id the receiver will stamp on this query string (same function, same params)."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    params.pop("token", None)
    params.pop("profile", None)
    return postback_event_id(params)


class Stamped(Iterator[Postback]):
    """A postback generator that remembers when each postback left, by event id."""

    def __init__(self, generator: PostbackGenerator) -> None:
        self.generator = generator
        self.sent_at: dict[str, float] = {}

    def __iter__(self) -> Stamped:
        return self

    def __next__(self) -> Postback:
        postback = next(self.generator)
        self.sent_at.setdefault(event_id_of(postback.query), time.perf_counter())
        return postback


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def say(text: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


async def flood(url: str, prof: Profile) -> Any:
    """The ingest load: the same seeded postbacks at the same offered rate, for kseg and the baseline."""
    return await run_load(
        url,
        TOKEN,
        rate=prof.ingest_rate,
        duration=prof.ingest_seconds,
        concurrency=128,
        generator=PostbackGenerator(seed=1),
    )


async def scenario_ingest(broker: str, segment: TimedEmulator, work: Path, prof: Profile) -> dict[str, Any]:
    """1. Receiver ingest with the Kafka ack, next to a bare aiohttp handler under the same load."""
    dep = await Deployment(broker, segment.url, work / "ingest").start("receiver")
    try:
        report = await flood(dep.url, prof)
    finally:
        dep.stop()
    port = free_port()
    bare = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "baselines" / "bare_receiver.py"),
            "--port",
            str(port),
            "--tokens",
            TOKEN,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _wait_port(port)
        baseline = await flood(f"http://127.0.0.1:{port}/v1/kochava/postbacks", prof)
    finally:
        bare.terminate()
        bare.wait(10)
    kseg_rate, bare_rate = report.accepted_rate, baseline.accepted_rate
    return {
        "receiver_accepted_per_s": round(kseg_rate, 1),
        "bare_aiohttp_accepted_per_s": round(bare_rate, 1),
        "receiver_ratio": round(kseg_rate / bare_rate, 3) if bare_rate else None,
        "receiver_p99_ms": report.latency_ms(99),
        "receiver_503s": report.rejected_503,
        "offered_rate": prof.ingest_rate,
    }


async def _wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def raw_records(n: int) -> list[tuple[bytes, bytes, str]]:
    """n distinct postbacks as the receiver would have written them: (key, value, event id)."""
    out = []
    seen: set[str] = set()
    for postback in PostbackGenerator(seed=2, retry_rate=0.0):
        params = dict(parse_qsl(postback.query, keep_blank_values=True))
        event_id = postback_event_id(params)
        if event_id in seen:
            continue
        seen.add(event_id)
        record = {
            "kind": "postback",
            "event_id": event_id,
            "received_at": utc_now_iso(),
            "source": "get",
            "profile": None,
            "params": params,
            "ip": "127.0.0.1",
            "user_agent": "bench",
        }
        out.append((partition_key(params).encode(), orjson.dumps(record), event_id))
        if len(out) == n:
            return out
    return out


async def produce(broker: str, topic: str, records: list[tuple[bytes, bytes, str]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=broker, acks="all", enable_idempotence=False, max_batch_size=1
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v, _ in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def scenario_pipeline(broker: str, segment: TimedEmulator, work: Path, prof: Profile) -> dict[str, Any]:
    """2, 5, 6. Worker events/s raw → Segment, next to a raw consume→produce passthrough."""
    records = raw_records(prof.pipeline_events)
    dep = Deployment(broker, segment.url, work / "pipeline")
    dep.data_dir.mkdir()
    from app.config import Settings
    from app.topics import ensure_topics

    await ensure_topics(
        Settings(kafka_bootstrap_servers=broker, kseg_app_id=dep.app_id, kseg_topic_partitions=8)
    )
    await produce(broker, dep.topic("postbacks.raw"), records)
    segment.reset()
    requests_before = segment.stats()["requests"]
    dep.spawn("worker")
    await dep.wait_ready("worker")
    started = time.perf_counter()
    wanted = {event_id for _, _, event_id in records}
    deadline = time.monotonic() + max(60.0, prof.pipeline_events / 50)
    while not wanted <= segment.arrivals.keys() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    delivered = len(wanted & segment.arrivals.keys())
    last = max((segment.arrivals[e] for e in wanted if e in segment.arrivals), default=started)
    seconds = max(last - started, 1e-6)
    stats = segment.stats()
    worker_rss = peak_rss_mb(dep.procs["worker"].pid)
    dep.stop()
    passthrough = await run_passthrough(
        broker,
        dep.topic("postbacks.raw"),
        f"{dep.app_id}.passthrough",
        len(records),
        timeout=300,
        max_batch_size=1,
    )
    requests = stats["requests"] - requests_before
    messages = stats["messages"]
    worker_rate = delivered / seconds
    return {
        "worker_events_per_s": round(worker_rate, 1),
        "passthrough_events_per_s": round(passthrough["events_per_s"], 1),
        "worker_ratio": round(worker_rate / passthrough["events_per_s"], 3)
        if passthrough["events_per_s"]
        else None,
        "pipeline_events": len(records),
        "pipeline_delivered": delivered,
        "segment_requests": requests,
        "segment_messages": messages,
        "events_per_segment_request": round(messages / requests, 1) if requests else None,
        "per_event_baseline_requests": messages,
        "segment_request_ratio": round(messages / requests, 1) if requests else None,
        "worker_peak_rss_mb": round(worker_rss, 1) if worker_rss else None,
    }


async def scenario_latency(broker: str, segment: TimedEmulator, work: Path, prof: Profile) -> dict[str, Any]:
    """3. End-to-end latency at the target rate (1,000/s)."""
    return await measure_latency(broker, segment, work / "latency", prof, prof.latency_rate, "e2e")


async def scenario_latency_sustained(
    broker: str, segment: TimedEmulator, work: Path, prof: Profile
) -> dict[str, Any]:
    """3b. The same at a fifth of that rate, below one worker's throughput here: latency without a backlog."""
    return await measure_latency(
        broker, segment, work / "latency-low", prof, prof.latency_rate / 5, "e2e_low"
    )


async def measure_latency(
    broker: str, segment: TimedEmulator, work: Path, prof: Profile, rate: float, name: str
) -> dict[str, Any]:
    """End-to-end latency: postback request → first arrival of its event at the Segment emulator."""
    dep = await Deployment(broker, segment.url, work).start("receiver", "worker")
    stamped = Stamped(PostbackGenerator(seed=3, retry_rate=0.0))
    accepted: set[str] = set()
    try:
        report = await run_load(
            dep.url,
            TOKEN,
            rate=rate,
            duration=prof.latency_seconds,
            concurrency=128,
            generator=stamped,
            on_accepted=lambda pb: accepted.add(event_id_of(pb.query)),
        )
        deadline = time.monotonic() + 30
        while not accepted <= segment.arrivals.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        receiver_rss = peak_rss_mb(dep.procs["receiver"].pid)
    finally:
        dep.stop()
    latencies = [(segment.arrivals[e] - stamped.sent_at[e]) * 1000 for e in accepted if e in segment.arrivals]
    return {
        f"{name}_rate": rate,
        f"{name}_accepted": len(accepted),
        f"{name}_delivered": len(latencies),
        f"{name}_p50_ms": _r(percentile(latencies, 50)),
        f"{name}_p95_ms": _r(percentile(latencies, 95)),
        f"{name}_p99_ms": _r(percentile(latencies, 99)),
        f"{name}_achieved_rate": round(report.accepted_rate, 1),
        ("receiver_peak_rss_mb" if name == "e2e" else f"{name}_receiver_peak_rss_mb"): (
            round(receiver_rss, 1) if receiver_rss else None
        ),
    }


def _r(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


async def scenario_spike(broker: str, segment: TimedEmulator, work: Path, prof: Profile) -> dict[str, Any]:
    """4. Steady rate with a 10x burst: lost count, peak consumer lag, drain time after the burst."""
    dep = await Deployment(broker, segment.url, work / "spike").start("receiver", "worker")
    accepted: set[str] = set()
    peak_lag = 0.0
    duration = prof.spike_before + prof.spike_length + prof.spike_after
    spike = SpikeSpec(multiplier=10, start=prof.spike_before, length=prof.spike_length)
    began = time.perf_counter()

    async def watch_lag() -> None:
        nonlocal peak_lag
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                peak_lag = max(peak_lag, await dep.raw_lag())
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch_lag())
    try:
        report = await run_load(
            dep.url,
            TOKEN,
            rate=prof.spike_base,
            duration=duration,
            concurrency=256,
            spike=spike,
            generator=PostbackGenerator(seed=4),
            on_accepted=lambda pb: accepted.add(event_id_of(pb.query)),
        )
        burst_end = began + prof.spike_before + prof.spike_length
        deadline = time.monotonic() + prof.drain_timeout
        while not accepted <= segment.arrivals.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        drained_at = time.perf_counter()
    finally:
        watcher.cancel()
        dep.stop()
    lost = len(accepted - segment.arrivals.keys())
    return {
        "spike_offered": report.sent,
        "spike_accepted": len(accepted),
        "spike_503s": report.rejected_503,
        "spike_client_saturated": report.client_saturated,
        "spike_lost": lost,
        "spike_peak_lag": peak_lag,
        "spike_drain_seconds": round(max(0.0, drained_at - burst_end), 1) if lost == 0 else None,
    }


def check(results: dict[str, Any]) -> dict[str, str]:
    verdicts = {}
    for key, (op, bound) in TARGETS.items():
        value = results.get(key)
        if value is None:
            verdicts[key] = "missing"
        else:
            ok = value >= bound if op == ">=" else value <= bound
            verdicts[key] = "met" if ok else "missed"
    return verdicts


def markdown(results: dict[str, Any], verdicts: dict[str, str], meta: dict[str, Any]) -> str:
    lines = [
        "# kseg benchmark results",
        "",
        f"Run {meta['when']} on {meta['machine']} ({meta['cpus']} CPUs), mode `{meta['mode']}`, "
        f"{meta['seconds']} s in all. Embedded Tansu broker, Segment emulator, loopback only.",
        "",
        "| figure | value | target | verdict |",
        "|---|---|---|---|",
    ]
    for key, value in results.items():
        target = TARGETS.get(key)
        target_text = f"{target[0]} {target[1]}" if target else ""
        lines.append(f"| {key} | {value} | {target_text} | {verdicts.get(key, '')} |")
    missed = [key for key, verdict in verdicts.items() if verdict != "met"]
    if missed:
        lines += ["", "## Targets missed: what limits them, what was tried", ""]
        lines += [f"- **{key}**: {LIMITS.get(key, 'see bench/README.md')}" for key in missed]
    return "\n".join(lines) + "\n"


def render_only(out_dir: Path) -> int:
    """Rewrite latest.md from latest.json (after editing the explanations, without re-running)."""
    report = orjson.loads((out_dir / "latest.json").read_bytes())
    text = markdown(report["results"], check(report["results"]), report["meta"])
    (out_dir / "latest.md").write_text(text)
    print(text)
    return 0


async def main_async(args: argparse.Namespace) -> int:
    if args.render_only:
        return render_only(Path(args.out))
    prof = SMOKE if args.smoke else FULL
    began = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kseg-bench-") as tmp:
        work = Path(tmp)
        with EmbeddedBroker(log_path=work / "tansu.log") as broker:
            async with TimedEmulator(write_key="bench-key", store_messages=False) as segment:
                for name, scenario in (
                    ("receiver ingest", scenario_ingest),
                    ("worker pipeline", scenario_pipeline),
                    ("end-to-end latency", scenario_latency),
                    ("end-to-end latency, sustained rate", scenario_latency_sustained),
                    ("spike", scenario_spike),
                ):
                    if args.only and args.only not in name:
                        continue
                    say(f"{name} ...")
                    segment.reset()
                    segment.arrivals.clear()
                    figures = await scenario(broker.bootstrap_servers, segment, work, prof)
                    say(f"{name}: {figures}")
                    results.update(figures)
    verdicts = check(results)
    meta = {
        "when": utc_now_iso(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "mode": "smoke" if args.smoke else "full",
        "seconds": round(time.perf_counter() - began, 1),
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_bytes(
        orjson.dumps({"meta": meta, "results": results, "targets": verdicts}, option=orjson.OPT_INDENT_2)
    )
    text = markdown(results, verdicts, meta)
    (out_dir / "latest.md").write_text(text)
    print(text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny, fast run that checks every figure exists")
    parser.add_argument("--only", help="run only scenarios whose name contains this text")
    parser.add_argument("--out", default=str(RESULTS), help="where latest.json and latest.md go")
    parser.add_argument("--render-only", action="store_true", help="rewrite latest.md from latest.json")
    args = parser.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
